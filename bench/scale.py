"""Scale-out: the same dissection through Redis with one and then two `celery -A workers worker` processes.

Each worker is limited to one torch thread (TORCH_NUM_THREADS=1, solo pool), so on a two-core machine the
comparison is fair. The clock runs from launch to the run's `done` (workers are up and answering pings before
it starts). Both runs' merged tallies are compared value by value. Last line: `speedup=<x> identical=<bool>`.

    .venv/bin/python bench/scale.py [--images 1200] [--shard-size 60]

Needs Redis at 127.0.0.1:6379 (db 12 is flushed); uses a throwaway SQLite database unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("SCALE_REDIS_URL", "redis://127.0.0.1:6379/12")
LAYERS = ["conv3", "conv4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=60)
    parser.add_argument("--topk", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unitscope-scale-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CELERY_BROKER_URL": REDIS_URL,
        "MEDIA_ROOT": str(work / "media"),
        "WORK_DIR": str(work / "work"),
        "TORCH_NUM_THREADS": "1",
        "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{work / 'db.sqlite3'}",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    import redis
    import torch
    from django.core.files import File
    from django.core.management import call_command

    from dissection.networks import ToyNet, toy_checkpoint
    from dissection.synth import OBJECTS, make_probe_set
    from runs import services as runs
    from runs.follow import follow_run
    from runs.models import DissectionRun
    from workers.app import app

    torch.set_num_threads(1)
    call_command("migrate", verbosity=0)
    redis.Redis.from_url(REDIS_URL).flushdb()
    probe = make_probe_set(work / "probe", images=args.images, size=args.size, seed=0)
    torch.manual_seed(0)
    weights = work / "toy.pt"
    torch.save(toy_checkpoint(ToyNet(num_classes=len(OBJECTS)), list(OBJECTS)), weights)
    project = runs.project_get_or_create(name="Benchmarks")
    with weights.open("rb") as handle:
        network = runs.network_register(
            project=project,
            name="toy (scale)",
            architecture="toy",
            weights=File(handle, name="toy.pt"),
            inspect_now=True,
        )
    probe_set = runs.probe_set_register(
        project=project, name="synthetic (scale)", path=str(probe), inspect_now=True
    )

    def timed_run(workers: int) -> tuple[float, DissectionRun]:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "workers",
                    "worker",
                    "-Q",
                    "gpu,celery",
                    "-c",
                    "1",
                    "-P",
                    "solo",
                    "-n",
                    f"scale{i}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(work / f"worker{workers}-{i}.log").open("wb"),
            )
            for i in range(workers)
        ]
        try:
            deadline = time.monotonic() + 120
            while len(app.control.ping(timeout=0.5) or []) < workers:
                if time.monotonic() > deadline:
                    raise SystemExit(f"workers did not answer; see {work}/worker*.log")
            start = time.perf_counter()
            run = runs.run_launch(
                project=project,
                name=f"scale x{workers}",
                network=network,
                probe_set=probe_set,
                layers=LAYERS,
                shard_size=args.shard_size,
                topk=args.topk,
            )
            run = follow_run(run, stream=sys.stderr)
            elapsed = time.perf_counter() - start
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=60)
        if run.status != DissectionRun.Status.DONE:
            raise SystemExit(f"run with {workers} worker(s) {run.status}: {run.error}")
        return elapsed, run

    one, run_one = timed_run(1)
    two, run_two = timed_run(2)
    identical = _same_tallies(run_one, run_two)
    shards = run_one.shards_total
    print(
        f"images={args.images} size={args.size} layers={','.join(LAYERS)} shards={shards} "
        f"torch_threads_per_worker=1"
    )
    print(f"one_worker_s={one:.2f} two_workers_s={two:.2f}")
    print(f"speedup={one / two:.2f} identical={'true' if identical else 'false'}")


def _same_tallies(a: object, b: object) -> bool:
    """Both runs' merged tallies (I, G, A, thresholds) and unit labels, value by value."""
    import numpy as np

    from dissection.states import TallyState
    from runs.pipeline import load_state, merged_key

    for layer in LAYERS:
        x = load_state(TallyState, merged_key(a.pk, layer, "tally"))
        y = load_state(TallyState, merged_key(b.pk, layer, "tally"))
        for field in ("thresholds", "images", "intersect", "truth", "activation"):
            if not np.array_equal(getattr(x, field), getattr(y, field)):
                return False
    labels = [
        list(run.units.order_by("layer", "channel").values_list("layer", "channel", "label", "iou"))
        for run in (a, b)
    ]
    return labels[0] == labels[1]


if __name__ == "__main__":
    main()
