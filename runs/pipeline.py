"""What a worker computes for each shard row of a run; `runs.services` records the outcome.

scan shard    → runs/<id>/<layer>/scan/shard-<i>.npz (ScanState per layer)
merge_scan    → runs/<id>/<layer>/scan/merged.npz and scan/thresholds.npy (what every tally shard needs)
tally shard   → runs/<id>/<layer>/tally/shard-<i>.npz (TallyState per layer)
merge_tally   → runs/<id>/<layer>/tally/merged.npz
render shard  → runs/<id>/<layer>/report/ (result.json, tally.csv, maps.npy, strips, report.html)
publish       → the run's units (with their strips) and unit images, in one transaction
A unit's full-size tiles are not made here: `runs.services.unit_tiles_ensure` makes them from maps.npy when a
batch or a page first needs them.
A generator run's probe set is its samples, labelled by its segmenter in memory (`dissection.gan.samples`):
each shard draws its own slice of samples again from (seed, index), the render step the top samples of its
layer, and the render also writes gan.json beside result.json (what the causal effects rank units by).
Keys are deterministic, so a repeated shard rewrites the same files; each step reads and writes storage
before it records its result, never under the run's lock.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError
from torch import nn

from dissection.broden import ProbeSet, load_probe_set
from dissection.convert.segment import Segmenter
from dissection.errors import DissectionError
from dissection.gan.dissect import gan_document, probe_generator
from dissection.gan.models import Generator
from dissection.gan.samples import GeneratedSamples, generate_samples, generated_samples
from dissection.results import finalize, write_layer
from dissection.scan import scan
from dissection.sources import ArrayActivations, ModelActivations, cached_activations
from dissection.states import ScanState, TallyState
from dissection.tally import tally
from runs import services
from runs.errors import RunStopped
from runs.models import DissectionRun, Shard
from runs.networks import network_generator, network_model, network_segmenter
from runs.selectors import report_unit_href
from runs.storage import (
    fetch,
    merged_key,
    probe_set_root,
    report_prefix,
    shard_key,
    store_bytes,
    store_file,
    store_tree,
    thresholds_key,
)

logger = logging.getLogger(__name__)

BATCH_SIZE = 32
Phase = Shard.Phase
Progress = Callable[[int, int], None]
State = TypeVar("State", ScanState, TallyState)


def _load_thresholds(key: str) -> np.ndarray:
    with default_storage.open(key, "rb") as handle:
        return np.load(io.BytesIO(handle.read()), allow_pickle=False)


def _run_probe(run_id: int) -> tuple[DissectionRun, nn.Module, ProbeSet]:
    """The run, its network's model and its probe set (a launched run always has both)."""
    run = DissectionRun.objects.select_related("network", "probe_set").get(pk=run_id)
    assert run.network is not None and run.probe_set is not None, f"run {run_id} was launched without them"
    return run, network_model(run.network), load_probe_set(probe_set_root(run.probe_set))


def save_state(state: ScanState | TallyState, key: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.npz"
        state.save(path)
        return store_file(key, path)


def load_state(kind: type[State], key: str) -> State:
    with tempfile.TemporaryDirectory() as tmp:
        return kind.load(fetch(key, Path(tmp) / "state.npz"))


@dataclass(frozen=True)
class GanProbe:
    """A generator run's models and its probe set of samples (none generated yet)."""

    generator: Generator
    segmenter: Segmenter
    probe: GeneratedSamples
    seed: int

    def generate(
        self, indices: np.ndarray, cache: Path, layers: list[str], progress: Progress | None
    ) -> None:
        """Draw and segment these samples and cache the layers' activations (for `cached_activations`)."""
        generate_samples(
            self.generator,
            self.segmenter,
            self.probe,
            seed=self.seed,
            layers=layers,
            cache_dir=cache,
            indices=indices,
            batch_size=BATCH_SIZE,
            progress=progress,
        )

    def maps(self, layer: str) -> Callable[[np.ndarray], np.ndarray]:
        """`maps(indices)` for the render: draws those samples (kept for their strips) and returns the layer's
        activations."""

        def maps(indices: np.ndarray) -> np.ndarray:
            parts = []
            for start in range(0, len(indices), BATCH_SIZE):
                rows = np.asarray(indices[start : start + BATCH_SIZE], np.int64)
                generator = self.generator
                pixels, recorded = generator.run(generator.latents(self.seed, rows), record=[layer])
                self.probe.store.put(rows, pixels, self.segmenter.layers(pixels))
                parts.append(recorded[layer].float().cpu().numpy())
            return np.concatenate(parts)

        return maps


def gan_probe(run: DissectionRun) -> GanProbe:
    """The generator run's generator (on the worker's GPU, if it has one), segmenter (masks at the image
    size) and empty sample probe set; a missing layer or an output that is not N x 3 x H x W fails here,
    naming the generator and the layer."""
    assert run.network is not None and run.segmenter is not None, f"run {run.pk} is not a generator run"
    generator = network_generator(run.network, device="auto")
    image_size = probe_generator(generator, run.layers, run.seed)
    segmenter = network_segmenter(run.segmenter, mask_size=image_size, device=generator.device.type)
    probe = generated_samples(Path(tempfile.gettempdir()), run.samples, segmenter, image_size)
    return GanProbe(generator, segmenter, probe, run.seed)


def _gan_run(run_id: int) -> tuple[DissectionRun, GanProbe] | None:
    run = DissectionRun.objects.select_related("network", "segmenter").get(pk=run_id)
    return (run, gan_probe(run)) if run.segmenter_id is not None else None


def _part(progress: Progress, part: int, parts: int) -> Progress:
    """Reports of one of `parts` equal steps as a share of the whole."""
    return lambda done, total: progress(part * total + done, parts * max(total, 1))


def _gan_states(
    work: services.ShardWork,
    progress: Progress,
    compute: Callable[[ArrayActivations, ProbeSet, np.ndarray, str, Progress], State],
) -> dict[str, State]:
    """Per layer, `compute(activations, probe, indices, layer, progress)` on the shard's samples."""
    found = _gan_run(work.run_id)
    assert found is not None
    run, gan = found
    indices = np.arange(work.start, work.stop)
    parts = 1 + len(run.layers)
    with tempfile.TemporaryDirectory() as tmp:
        gan.generate(indices, Path(tmp), run.layers, _part(progress, 0, parts))
        return {
            layer: compute(
                cached_activations(Path(tmp), layer, gan.probe, device=gan.generator.device.type),
                gan.probe,
                indices,
                layer,
                _part(progress, i + 1, parts),
            )
            for i, layer in enumerate(run.layers)
        }


def _scan(work: services.ShardWork, progress: Progress) -> dict[str, str]:
    run = DissectionRun.objects.get(pk=work.run_id)
    if run.segmenter_id is not None:
        scans = _gan_states(
            work,
            progress,
            lambda arrays, probe, indices, layer, report: scan(
                arrays, probe, indices, topk=run.topk, batch_size=BATCH_SIZE, progress=report
            )[layer],
        )
        return {
            layer: save_state(state, shard_key(run.pk, layer, Phase.SCAN, work.index))
            for layer, state in scans.items()
        }
    run, model, probe = _run_probe(work.run_id)
    source = ModelActivations(model, run.layers, workers=0, tokens=run.tokens)
    states = scan(
        source,
        probe,
        np.arange(work.start, work.stop),
        topk=run.topk,
        batch_size=BATCH_SIZE,
        progress=progress,
    )
    return {
        layer: save_state(state, shard_key(run.pk, layer, Phase.SCAN, work.index))
        for layer, state in states.items()
    }


def _tally(work: services.ShardWork, progress: Progress) -> dict[str, str]:
    run = DissectionRun.objects.get(pk=work.run_id)
    thresholds = {layer: _load_thresholds(thresholds_key(run.pk, layer)) for layer in run.layers}
    if run.segmenter_id is not None:
        counts = _gan_states(
            work,
            progress,
            lambda arrays, probe, indices, layer, report: tally(
                arrays,
                probe,
                {layer: thresholds[layer]},
                indices,
                semantics=run.semantics,
                batch_size=BATCH_SIZE,
                workers=0,  # the labels are in this process's memory
                progress=report,
            )[layer],
        )
        return {
            layer: save_state(state, shard_key(run.pk, layer, Phase.TALLY, work.index))
            for layer, state in counts.items()
        }
    run, model, probe = _run_probe(work.run_id)
    source = ModelActivations(model, run.layers, workers=0, tokens=run.tokens)
    states = tally(
        source,
        probe,
        thresholds,
        np.arange(work.start, work.stop),
        semantics=run.semantics,
        batch_size=BATCH_SIZE,
        workers=0,
        progress=progress,
    )
    return {
        layer: save_state(state, shard_key(run.pk, layer, Phase.TALLY, work.index))
        for layer, state in states.items()
    }


def _merged(kind: type[State], keys: list[str]) -> State:
    """The exact merge of the shard states at `keys`, in shard order."""
    merged = load_state(kind, keys[0])
    for key in keys[1:]:
        merged = merged.merge(load_state(kind, key))
    return merged


def _merge(work: services.ShardWork, progress: Progress) -> dict[str, str]:
    """Merge every shard state of the phase before, per layer; the scans also give the tally's thresholds."""
    merged_phase = Phase.SCAN if work.phase == Phase.MERGE_SCAN else Phase.TALLY
    run = DissectionRun.objects.get(pk=work.run_id)
    results = list(
        Shard.objects.filter(run_id=run.pk, phase=merged_phase)
        .order_by("index")
        .values_list("result_keys", flat=True)
    )
    keys = {}
    for done, layer in enumerate(run.layers):
        shard_keys = [result[layer] for result in results]
        if merged_phase == Phase.SCAN:
            scans = _merged(ScanState, shard_keys)
            keys[layer] = save_state(scans, merged_key(run.pk, layer, merged_phase))
            buffer = io.BytesIO()
            np.save(buffer, scans.thresholds(run.semantics))
            store_bytes(thresholds_key(run.pk, layer), buffer.getvalue())
        else:
            keys[layer] = save_state(_merged(TallyState, shard_keys), merged_key(run.pk, layer, merged_phase))
        progress(done + 1, len(run.layers))
    return keys


def layer_maps(
    model: nn.Module, probe: ProbeSet, layer: str, tokens: str = "auto"
) -> Callable[[np.ndarray], np.ndarray]:
    """`maps(indices)` for tiles: the layer's activations of those images (read by the `tokens` rule), one
    forward per batch."""
    source = ModelActivations(model, [layer], workers=0, tokens=tokens)

    def maps(indices: np.ndarray) -> np.ndarray:
        parts = [
            outputs[layer].cpu().numpy()
            for _, outputs in source.batches(probe, np.asarray(indices, np.int64), batch_size=BATCH_SIZE)
        ]
        return np.concatenate(parts)

    return maps


def _render(work: services.ShardWork, progress: Progress) -> dict[str, str]:
    gan_run = _gan_run(work.run_id)
    if gan_run is None:
        run, model, probe = _run_probe(work.run_id)
        maps = layer_maps(model, probe, work.layer, run.tokens)
    else:
        run, gan = gan_run
        probe, maps = gan.probe, gan.maps(work.layer)
    scan_state = load_state(ScanState, merged_key(run.pk, work.layer, Phase.SCAN))
    tally_state = load_state(TallyState, merged_key(run.pk, work.layer, Phase.TALLY))
    result = finalize(probe, scan_state, tally_state)
    prefix = report_prefix(run.pk, work.layer)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_layer(
            result,
            probe,
            Path(tmp) / work.layer,
            maps,
            progress=progress,
            unit_href=report_unit_href(run_id=run.pk, layer=work.layer),
        )
        if gan_run is not None:
            assert isinstance(probe, GeneratedSamples) and run.network and run.segmenter
            sources = {"generator": run.network.name, "segmenter": run.segmenter.name}
            document = gan_document(probe, tally_state, gan.generator, gan.segmenter, run.seed, sources)
            (folder / "gan.json").write_text(json.dumps(document, indent=1))
        store_tree(prefix, folder)
    return {work.layer: prefix}


def _rendered_layers(run_id: int) -> list[services.PublishedLayer]:
    layers = []
    for keys in (
        Shard.objects.filter(run_id=run_id, phase=Phase.RENDER)
        .order_by("layer")
        .values_list("result_keys", flat=True)
    ):
        for layer, prefix in keys.items():
            with default_storage.open(f"{prefix}/result.json", "rb") as handle:
                layers.append(services.PublishedLayer(layer, json.load(handle), prefix))
    return layers


COMPUTE: dict[str, Callable[[services.ShardWork, Progress], dict[str, str]]] = {
    Phase.SCAN: _scan,
    Phase.MERGE_SCAN: _merge,
    Phase.TALLY: _tally,
    Phase.MERGE_TALLY: _merge,
    Phase.RENDER: _render,
}


def shard_run(shard_id: int, *, count_delivery: bool = True) -> None:
    """Compute one shard once and record it; recording the last shard of a phase starts the next phase.

    A delivery of a shard already done does nothing: completing and advancing are one transaction. A database
    error propagates (the task retries it) instead of failing the run: the run did nothing wrong."""
    work = services.shard_start(shard_id=shard_id, count_delivery=count_delivery)
    if work is None or work.done:
        return
    try:
        if work.phase == Phase.PUBLISH:
            services.run_publish(work=work, layers=_rendered_layers(work.run_id))
            return
        keys = COMPUTE[work.phase](work, services.shard_progress_reporter(work=work))
    except (OperationalError, InterfaceError):
        raise
    except RunStopped:
        logger.info("shard %s dropped: its run stopped", shard_id)
        services.shard_release(work=work)
        return
    except DissectionError as exc:
        services.run_fail(run_id=work.run_id, error=f"{services.shard_title(work)}: {exc}")
        services.shard_release(work=work)
        return
    except Exception as exc:
        logger.exception("shard %s failed", shard_id)
        services.run_fail(
            run_id=work.run_id, error=f"{services.shard_title(work)}: {type(exc).__name__}: {exc}"
        )
        services.shard_release(work=work)
        return
    services.shard_complete(work=work, result_keys=keys)


def torch_threads(count: int | None) -> None:
    """Limit torch's intra-op threads (one per worker process makes a fair scale benchmark)."""
    if count:
        torch.set_num_threads(count)
