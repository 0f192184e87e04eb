"""Network Dissection (Bau, Zhou et al., CVPR 2017): exact, streaming, mergeable over shards of a probe set.

`dissect` below is the whole pipeline; each step is usable on its own so that workers can map-reduce shards:

1. `scan.scan(source, probe, indices)`: ONE forward pass over any subset of image indices. Per layer a
   `ScanState`: the exact threshold candidates (each unit's top `candidates_needed(n)` raw activations,
   n = all positions of the whole probe set) and each unit's top-k images by max activation. With
   `cache_dir` it also writes the layer's float32 activations there (an .npy per layer) so the tally needs
   no second forward.
2. `ScanState.merge` (exact, associative) over shards, then `ScanState.thresholds(semantics)`.
3. `tally.tally(source, probe, thresholds, indices)`: per layer a `TallyState` of integer sums I[k,c], G[c],
   A[k,cat]; `TallyState.merge` adds them exactly.
4. `results.finalize(probe, scan_state, tally_state)` → `LayerResult`; `results.write_layer(result, probe,
   OUT/<layer>, maps)` writes the folder, `maps` giving activation maps for tiles (`ArrayActivations.maps`,
   `cached_activations`, or `model_maps` when no cache is at hand).
States save to / load from .npz (no pickles). Map-reduce over workers, e.g.:

    source = ModelActivations(model, [layer]); probe = load_probe_set(root)
    scans = [scan(source, probe, shard)[layer] for shard in shards]             # anywhere; .save() / .load()
    thresholds = functools.reduce(ScanState.merge, scans).thresholds("paper")
    tallies = [tally(source, probe, {layer: thresholds}, shard)[layer] for shard in shards]
    scan_state = functools.reduce(ScanState.merge, scans)
    result = finalize(probe, scan_state, functools.reduce(TallyState.merge, tallies))
    write_layer(result, probe, out / layer, model_maps(source, probe, layer))

Semantics (`paper`, default): T_k = 0.995 quantile (NumPy linear) of unit k's activations over every position
of every image; M_k = bilinear upsampling (align_corners=False) of the map to sh x sw, > T_k;
I[k,c] = Σ|M_k ∩ L_c|, G[c] = Σ|L_c|, A[k,cat] = Σ|M_k| over images where a label of primary category cat
appears; IoU = I / (A[k,cat(c)] + G[c] - I). `netdissect-lite`: T_k = quantile 994/999 (hazen), and A adds
|M_k| only for images where a label of category cat has a pixel under M_k (or is image-level).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from dissection.broden import ProbeSet, load_probe_set
from dissection.data import LabelSource
from dissection.errors import DissectionError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.quantile import check_semantics
from dissection.results import finalize, write_layer
from dissection.scan import scan
from dissection.sources import (
    ActivationSource,
    ArrayActivations,
    ModelActivations,
    Progress,
    cached_activations,
)
from dissection.tally import tally

PhaseProgress = Callable[[str, int, int], None]
"""`progress(phase, done, total)`: a phase's total is fixed when the phase starts."""


def dissect(
    probe_set: str | Path | ProbeSet,
    out: str | Path,
    *,
    layers: Sequence[str],
    model: nn.Module | None = None,
    activations: str | Path | None = None,
    semantics: str = "paper",
    topk: int = 20,
    batch_size: int = 32,
    device: str = "auto",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    iou_threshold: float = 0.04,
    workers: int | None = None,
    progress: PhaseProgress | None = None,
    tokens: str = "auto",
    labels: LabelSource | None = None,
) -> dict[str, Path]:
    """Dissect `layers` of `model` (or the precomputed `activations` .npy, one layer name = its folder) on
    `probe_set`; writes OUT/<layer>/ per layer and returns those folders.

    One forward pass: activations are cached (float32) in a temporary folder under `out` while thresholds are
    collected, then tallied from the cache. `progress(phase, done, total)` reports each phase with a total
    fixed when it starts: "scan" (images), then per layer "tally <layer>" (images) and "report <layer>"
    (per mille: the maps of the top images, then the strips). `tokens` reads transformer layers as maps
    (`dissection.tokens`); a layer read other than as N x C x H x W gets OUT/<layer>/tokens.json saying how.
    `probe_set` is a folder or a loaded `ProbeSet`; with `labels` (a segmenter, say, over
    `dissection.convert.segment.image_folder`) the labels come from it in memory, not from label PNGs.
    """
    check_semantics(semantics)
    if (model is None) == (activations is None):
        raise DissectionError("give either a model or precomputed activations")
    probe = probe_set if isinstance(probe_set, ProbeSet) else load_probe_set(probe_set)
    if labels is not None:
        probe = labels.relabel(probe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = _source(probe, layers, model, activations, device, mean, std, workers, tokens)
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=out))
    try:
        cache = work / "cache"  # a model's activations: the tally and the strips need no second forward
        scans = scan(
            source,
            probe,
            topk=topk,
            batch_size=batch_size,
            cache_dir=cache if isinstance(source, ModelActivations) else None,
            progress=_phase(progress, "scan"),
        )
        written = {}
        for layer in source.layers:
            thresholds = scans[layer].thresholds(semantics)
            arrays = (
                source
                if isinstance(source, ArrayActivations)
                else cached_activations(cache, layer, probe, device=device)
            )
            counts = tally(
                arrays,
                probe,
                {layer: thresholds},
                semantics=semantics,
                batch_size=batch_size,
                workers=workers,
                progress=_phase(progress, f"tally {layer}"),
                label_source=labels,
            )[layer]
            result = finalize(probe, scans[layer], counts, iou_threshold=iou_threshold)
            written[layer] = write_layer(
                result, probe, out / layer, arrays.maps, progress=_phase(progress, f"report {layer}")
            )
            if isinstance(source, ModelActivations):
                _record_layout(source, layer, written[layer])
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _source(
    probe: ProbeSet,
    layers: Sequence[str],
    model: nn.Module | None,
    activations: str | Path | None,
    device: str,
    mean: Sequence[float],
    std: Sequence[float],
    workers: int | None,
    tokens: str,
) -> ActivationSource:
    if model is not None:
        return ModelActivations(
            model, layers, device=device, mean=mean, std=std, workers=workers, tokens=tokens
        )
    if len(layers) != 1:
        raise DissectionError("with precomputed activations, name exactly one --layer (the output folder)")
    assert activations is not None
    return ArrayActivations(activations, layers[0], probe, device=device)


def _record_layout(source: ModelActivations, layer: str, folder: Path) -> None:
    """tokens.json beside result.json when the layer's output was reshaped (written whole, then renamed)."""
    layout = source.layouts.get(layer)
    if layout is None or layout.kind == "nchw":
        return
    partial = folder / ".tokens.json.partial"
    partial.write_text(json.dumps(layout.as_dict(), indent=1))
    os.replace(partial, folder / "tokens.json")


def _phase(progress: PhaseProgress | None, name: str) -> Progress | None:
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(name, done, total)
