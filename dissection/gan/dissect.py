"""Generator dissection (Bau et al., GAN Dissection, ICLR 2019) on the classifier dissection's engine.

The samples are the probe set and the segmenter labels them (`dissection.gan.samples`); the scan, the
exact thresholds, the tally, the labels and the folder (tally.csv, result.json, tiles, strips, report.html)
are `dissection.scan`, `tally`, `results` and `render`, unchanged. Beside result.json, gan.json records how
to make the samples again and each concept's IoU with every unit, which `gan-effect` ranks units by:

OUT/<layer>/gan.json (schema 1):
    {"schema": 1, "layer": str, "seed": int, "samples": int, "image_size": [h, w], "mask_size": [h, w],
     "generator": {"path": str, "latent_shape": [int, ...], "output_range": [low, high]},
     "segmenter": {"path": str, "classes": str | null, "thresholds": [float, ...],
                   "mean": [float x3], "std": [float x3]},
     "concepts": [{"label": str, "category": str, "number": int, "iou": [float per unit, channel order]}]}
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dissection.convert.segment import Segmenter
from dissection.errors import DissectionError, LayerError
from dissection.gan.models import Generator
from dissection.gan.samples import GeneratedSamples, generate_samples, generated_samples
from dissection.pipeline import PhaseProgress
from dissection.quantile import check_semantics
from dissection.results import finalize, iou_matrix, write_layer
from dissection.scan import scan
from dissection.sources import Progress, cached_activations
from dissection.states import TallyState
from dissection.tally import tally

GAN_SCHEMA = 1


def probe_generator(generator: Generator, layers: Sequence[str], seed: int) -> tuple[int, int]:
    """Run sample 0 once: refuse a missing layer or a bad output before anything is written; returns the
    image size (h, w)."""
    generator.check_layers(layers)
    pixels, recorded = generator.run(generator.latents(seed, [0]), record=layers)
    for layer in layers:
        if recorded[layer].dim() != 4:
            raise LayerError(
                f"generator {generator.where}: layer {layer!r} outputs {tuple(recorded[layer].shape)}; "
                "dissection needs N x C x H x W"
            )
    return int(pixels.shape[2]), int(pixels.shape[3])


def dissect_generator(
    generator: Generator,
    segmenter: Segmenter,
    out: str | Path,
    *,
    layers: Sequence[str],
    samples: int,
    seed: int = 0,
    semantics: str = "paper",
    topk: int = 20,
    batch_size: int = 32,
    iou_threshold: float = 0.04,
    sources: dict[str, Any] | None = None,
    progress: PhaseProgress | None = None,
) -> dict[str, Path]:
    """Dissect `layers` of the generator on `samples` samples labelled by the segmenter; writes OUT/<layer>/
    per layer (with gan.json; `sources` adds the generator's and segmenter's files to it) and returns those
    folders. `progress(phase, done, total)` reports "generate" (samples), then per layer "scan <layer>" and
    "tally <layer>" (samples) and "report <layer>" (as `write_layer` counts)."""
    check_semantics(semantics)
    image_size = probe_generator(generator, layers, seed)
    segmenter.layers(generator.run(generator.latents(seed, [0]))[0])  # refuses a bad segmenter now
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    probe = generated_samples(out.resolve(), samples, segmenter, image_size)
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=out))
    try:
        cache = work / "cache"
        generate_samples(
            generator,
            segmenter,
            probe,
            seed=seed,
            layers=layers,
            cache_dir=cache,
            batch_size=batch_size,
            progress=_phase(progress, "generate"),
        )
        written = {}
        for layer in layers:
            arrays = cached_activations(cache, layer, probe, device=generator.device.type)
            scan_state = scan(
                arrays, probe, topk=topk, batch_size=batch_size, progress=_phase(progress, f"scan {layer}")
            )[layer]
            counts = tally(
                arrays,
                probe,
                {layer: scan_state.thresholds(semantics)},
                semantics=semantics,
                batch_size=batch_size,
                workers=0,  # the labels are in this process's memory
                progress=_phase(progress, f"tally {layer}"),
            )[layer]
            result = finalize(probe, scan_state, counts, iou_threshold=iou_threshold)
            folder = write_layer(
                result, probe, out / layer, arrays.maps, progress=_phase(progress, f"report {layer}")
            )
            _write_json(folder / "gan.json", gan_document(probe, counts, generator, segmenter, seed, sources))
            written[layer] = folder
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)


def gan_document(
    probe: GeneratedSamples,
    counts: TallyState,
    generator: Generator,
    segmenter: Segmenter,
    seed: int,
    sources: dict[str, Any] | None,
) -> dict[str, Any]:
    """gan.json (schema in the module docstring)."""
    sources = sources or {}
    iou = iou_matrix(probe, counts)
    concepts = [
        {
            "label": probe.label_names[number],
            "category": probe.categories[probe.label_category[number]],
            "number": number,
            "iou": [round(float(v), 6) for v in iou[:, number]],
        }
        for number in range(1, probe.num_labels)
        if probe.label_category[number] >= 0
    ]
    return {
        "schema": GAN_SCHEMA,
        "layer": counts.layer,
        "seed": seed,
        "samples": len(probe),
        "image_size": list(probe.image_size),
        "mask_size": list(probe.mask_size),
        "generator": {
            "path": sources.get("generator"),
            "latent_shape": list(generator.latent_shape),
            "output_range": list(generator.output_range),
        },
        "segmenter": {
            "path": sources.get("segmenter"),
            "classes": sources.get("classes"),
            "thresholds": list(segmenter.thresholds),
            "mean": segmenter.mean.flatten().tolist(),
            "std": segmenter.std.flatten().tolist(),
        },
        "concepts": concepts,
    }


def read_gan_document(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "gan.json"
    if not path.is_file():
        raise DissectionError(f"{path} is missing; is {folder} a layer folder written by gan-run?")
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except ValueError as error:
        raise DissectionError(f"{path}: not JSON ({error})") from None
    if document.get("schema") != GAN_SCHEMA:
        raise DissectionError(f"{path}: schema {document.get('schema')!r}, expected {GAN_SCHEMA}")
    return document


def concept_ranking(document: dict[str, Any], concept: str) -> tuple[dict[str, Any], np.ndarray]:
    """The concept's gan.json entry and the layer's channels by IoU with it, best first (ties: lower
    channel)."""
    for entry in document["concepts"]:
        if entry["label"] == concept:
            iou = np.asarray(entry["iou"], np.float64)
            return entry, np.lexsort((np.arange(iou.size), -iou))
    names = ", ".join(entry["label"] for entry in document["concepts"])
    raise DissectionError(f"concept {concept!r} is not one of the segmenter's: {names}")


def _write_json(path: Path, document: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=1))
    os.replace(partial, path)


def _phase(progress: PhaseProgress | None, name: str) -> Progress | None:
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(name, done, total)
