"""Every source format behind one call, for the `convert` command and the service's probe-set registration:
`read_source` lists a dataset's labels and images (reading every annotation, so a malformed one is named
before anything is written), `convert_dataset` writes it as a Broden-format probe set."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the converters import NumPy and Pillow when they run, so that `--help` stays fast
    from dissection.convert.writer import Label, SourceImage

FORMATS = ("coco", "ade20k", "pascal-context", "pascal-part", "folder")


@dataclass(frozen=True)
class Source:
    """A dataset ready to write: its label table, categories, images, and the options that made it (kept in
    convert.json, so a rerun with other options is refused)."""

    labels: list[Label]
    categories: list[str]
    images: list[SourceImage]
    options: dict[str, Any] = field(default_factory=dict)


def read_source(
    fmt: str,
    src: str | Path,
    *,
    images: str | Path | None = None,
    extra: Sequence[str | Path] = (),
    panoptic_masks: str | Path | None = None,
    stuff_categories: Mapping[str, str] | None = None,
    split: str | None = None,
    classes: str | None = None,
    void: int | None = None,
) -> Source:
    """The dataset `src` in format `fmt` (one of FORMATS); the keyword options belong to the formats their
    converters name (coco: images, extra, panoptic_masks, stuff_categories, split; pascal-*: images;
    pascal-context: classes; folder: void)."""
    src = Path(src)
    options: dict[str, Any] = {"format": fmt, "src": str(src.resolve())}
    if fmt == "coco":
        from dissection.convert.coco import coco_images

        stuff = dict(stuff_categories or {})
        found = coco_images(
            src,
            images=images,
            extra=[Path(p) for p in extra],
            panoptic_masks=panoptic_masks,
            stuff_categories=stuff,
            split=split,
        )
        options.update(
            extra=[str(Path(p).resolve()) for p in extra], stuff=sorted(f"{k}={v}" for k, v in stuff.items())
        )
    elif fmt == "ade20k":
        from dissection.convert.ade20k import ade20k_images

        found = ade20k_images(src)
    elif fmt == "pascal-context":
        from dissection.convert.pascal import pascal_context_images

        classes = classes or "459"
        found = pascal_context_images(src, images=images, classes=classes)
        options.update(classes=classes)
    elif fmt == "pascal-part":
        from dissection.convert.pascal import pascal_part_images

        found = pascal_part_images(src, images=images)
    elif fmt == "folder":
        from dissection.convert.folder import folder_images

        found = folder_images(src, void=void)
        options.update(void=void)
    else:
        from dissection.convert.writer import ConvertError

        raise ConvertError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    labels, categories, listed = found
    return Source(labels, categories, listed, options)


def convert_dataset(
    source: Source,
    out: str | Path,
    *,
    fmt: str,
    image_size: tuple[int, int],
    mask_size: tuple[int, int],
    image_format: str = "jpg",
    progress: bool = True,
    report: Callable[[int, int], None] | None = None,
) -> Path:
    """Write `source` to OUT (resumable, nothing half written: `write_probe_set`)."""
    from dissection.convert.writer import write_probe_set

    return write_probe_set(
        out,
        source.images,
        source=fmt,
        labels=source.labels,
        categories=source.categories,
        image_size=image_size,
        mask_size=mask_size,
        image_format=image_format,
        options=source.options,
        progress=progress,
        report=report,
    )
