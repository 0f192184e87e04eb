"""What a worker computes for one shard of a run, between `annotate.services.runs` transitions.

scan shard   → runs/<id>/<layer>/scan/shard-<i>.npz (ScanState per layer); merged into scan/merged.npz and
               scan/thresholds.npy once all are done
tally shard  → runs/<id>/<layer>/tally/shard-<i>.npz (TallyState per layer); merged into tally/merged.npz
render shard → runs/<id>/<layer>/report/ (result.json, tally.csv, tiles, strips, report.html)
Keys are deterministic, so a repeated shard rewrites the same files; merges run once under the run's lock.
"""
from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from django.core.files.storage import default_storage
from torch import nn

from annotate.models import DissectionRun, Network, Shard
from annotate.services import runs
from dissection.broden import ProbeSet, load_probe_set
from dissection.engine import (ModelActivations, ScanState, TallyState, finalize, scan, tally, write_layer)
from dissection.errors import DissectionError
from workers.files import fetch, local_copy, probe_set_root, store_bytes, store_file, store_tree

logger = logging.getLogger(__name__)

BATCH_SIZE = 32
Phase = Shard.Phase
_models: dict[tuple[int, str], nn.Module] = {}


def shard_key(run_id: int, layer: str, phase: str, index: int) -> str:
    return f"runs/{run_id}/{layer}/{phase}/shard-{index}.npz"


def merged_key(run_id: int, layer: str, phase: str) -> str:
    return f"runs/{run_id}/{layer}/{phase}/merged.npz"


def thresholds_key(run_id: int, layer: str) -> str:
    return f"runs/{run_id}/{layer}/scan/thresholds.npy"


def _load_thresholds(key: str) -> np.ndarray:
    with default_storage.open(key, "rb") as handle:
        return np.load(io.BytesIO(handle.read()), allow_pickle=False)


def report_prefix(run_id: int, layer: str) -> str:
    return f"runs/{run_id}/{layer}/report"


def network_model(network: Network) -> nn.Module:
    """The network in eval mode, loaded once per worker process."""
    from dissection.models import load_model

    key = (network.pk, network.torchscript.name or network.weights.name)
    if key not in _models:
        if network.torchscript:
            _models[key] = load_model(torchscript=local_copy(network.torchscript))
        else:
            _models[key] = load_model(network.architecture,
                                      weights=local_copy(network.weights) if network.weights else None)
    return _models[key]


def _run_probe(run_id: int) -> tuple[DissectionRun, ProbeSet]:
    run = DissectionRun.objects.select_related("network", "probe_set").get(pk=run_id)
    return run, load_probe_set(probe_set_root(run.probe_set))


def save_state(state: ScanState | TallyState, key: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.npz"
        state.save(path)
        return store_file(key, path)


def load_state(kind: type[ScanState] | type[TallyState], key: str) -> ScanState | TallyState:
    with tempfile.TemporaryDirectory() as tmp:
        return kind.load(fetch(key, Path(tmp) / "state.npz"))


def _scan(work: runs.ShardWork, progress: Callable[[int, int], None]) -> dict[str, str]:
    run, probe = _run_probe(work.run_id)
    source = ModelActivations(network_model(run.network), run.layers, workers=0)
    states = scan(source, probe, np.arange(work.start, work.stop), topk=run.topk, batch_size=BATCH_SIZE,
                  progress=progress)
    return {layer: save_state(state, shard_key(run.pk, layer, Phase.SCAN, work.index))
            for layer, state in states.items()}


def _tally(work: runs.ShardWork, progress: Callable[[int, int], None]) -> dict[str, str]:
    run, probe = _run_probe(work.run_id)
    thresholds = {layer: _load_thresholds(thresholds_key(run.pk, layer)) for layer in run.layers}
    source = ModelActivations(network_model(run.network), run.layers, workers=0)
    states = tally(source, probe, thresholds, np.arange(work.start, work.stop), semantics=run.semantics,
                   batch_size=BATCH_SIZE, workers=0, progress=progress)
    return {layer: save_state(state, shard_key(run.pk, layer, Phase.TALLY, work.index))
            for layer, state in states.items()}


def layer_maps(model: nn.Module, probe: ProbeSet, layer: str) -> Callable[[np.ndarray], np.ndarray]:
    """`maps(indices)` for tiles: the layer's activations of those images, one forward per batch."""
    source = ModelActivations(model, [layer], workers=0)

    def maps(indices: np.ndarray) -> np.ndarray:
        parts = [outputs[layer].cpu().numpy()
                 for _, outputs in source.batches(probe, np.asarray(indices, np.int64), batch_size=BATCH_SIZE)]
        return np.concatenate(parts)

    return maps


def _render(work: runs.ShardWork, progress: Callable[[int, int], None]) -> dict[str, str]:
    run, probe = _run_probe(work.run_id)
    scan_state = load_state(ScanState, merged_key(run.pk, work.layer, Phase.SCAN))
    tally_state = load_state(TallyState, merged_key(run.pk, work.layer, Phase.TALLY))
    result = finalize(probe, scan_state, tally_state)
    prefix = report_prefix(run.pk, work.layer)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_layer(result, probe, Path(tmp) / work.layer,
                             layer_maps(network_model(run.network), probe, work.layer), progress=progress)
        store_tree(prefix, folder)
    return {work.layer: prefix}


COMPUTE = {Phase.SCAN: _scan, Phase.TALLY: _tally, Phase.RENDER: _render}


def _merge(run_id: int, phase: str) -> Callable[[], None]:
    """Merge every shard state of `phase` per layer into its merged key (exact, in shard order)."""
    kind = ScanState if phase == Phase.SCAN else TallyState

    def prepare() -> None:
        results = runs.phase_results(run_id=run_id, phase=phase)
        run = DissectionRun.objects.get(pk=run_id)
        for layer in run.layers:
            merged = None
            for keys in results:
                state = load_state(kind, keys[layer])
                merged = state if merged is None else merged.merge(state)
            save_state(merged, merged_key(run_id, layer, phase))
            if phase == Phase.SCAN:  # what every tally shard needs, without the candidates behind it
                buffer = io.BytesIO()
                np.save(buffer, merged.thresholds(run.semantics))
                store_bytes(thresholds_key(run_id, layer), buffer.getvalue())

    return prepare


def _publish(run_id: int) -> None:
    layers = []
    for keys in runs.phase_results(run_id=run_id, phase=Phase.RENDER):
        for layer, prefix in keys.items():
            with default_storage.open(f"{prefix}/result.json", "rb") as handle:
                layers.append(runs.PublishedLayer(layer, json.load(handle), prefix))
    runs.run_publish(run_id=run_id, layers=layers)


def shard_run(shard_id: int) -> None:
    """Compute one shard once, record it, and advance the run when it was the last of its phase.

    A delivery of a shard already done skips the work but still tries to advance, so a worker that died
    between recording and advancing cannot stall the run."""
    work = runs.shard_start(shard_id=shard_id)
    if work is None:
        return
    if not work.done:
        try:
            keys = COMPUTE[Phase(work.phase)](work, runs.shard_progress_reporter(work=work))
        except runs.RunStopped:
            logger.info("shard %s dropped: its run stopped", shard_id)
            runs.shard_release(work=work)
            return
        except DissectionError as exc:
            runs.run_fail(run_id=work.run_id, error=f"{runs.shard_title(work)}: {exc}")
            runs.shard_release(work=work)
            return
        except Exception as exc:
            logger.exception("shard %s failed", shard_id)
            runs.run_fail(run_id=work.run_id, error=f"{runs.shard_title(work)}: {type(exc).__name__}: {exc}")
            runs.shard_release(work=work)
            return
        runs.shard_complete(work=work, result_keys=keys)
    if not runs.phase_complete(run_id=work.run_id, phase=work.phase):
        return
    try:
        if work.phase == Phase.RENDER:
            _publish(work.run_id)
        else:
            runs.run_advance(run_id=work.run_id, phase=work.phase, prepare=_merge(work.run_id, work.phase))
    except DissectionError as exc:
        runs.run_fail(run_id=work.run_id, error=f"merging the {work.phase} shards: {exc}")


def torch_threads(count: int | None) -> None:
    """Limit torch's intra-op threads (one per worker process makes a fair scale benchmark)."""
    if count:
        torch.set_num_threads(count)
