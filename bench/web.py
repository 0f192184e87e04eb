"""The web app under concurrent clients: gunicorn (config/gunicorn.py, what `make serve` runs) on 127.0.0.1.

For each database (a throwaway SQLite file, then PostgreSQL at 127.0.0.1:5432 with trust auth when it answers:
a throwaway database is created and dropped), a batch is seeded (UNITS units, ASSIGNMENTS workers per unit,
8 images each), gunicorn is started with DEBUG off, and:

1. worker clients (threads, one simulated person each, urllib with cookies and CSRF as a browser) take
   tasks, load the task page and submit an answer, until every slot is answered or the time is up;
2. requester clients, logged in as staff, load the batch's review page.

Each request is timed on its own (redirects are not followed); printed per page: requests, p50 and p95
latency, and requests/s over the phase (all clients together). The crowd throttles are lifted (they count
per client address, and every client here is 127.0.0.1). Images are not fetched: the figures are the pages.

    .venv/bin/python bench/web.py [--quick] [--clients 8] [--units 60] [--assignments 5] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib import error as urlerror
from urllib import parse, request

REPO = Path(__file__).resolve().parents[1]
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
STAFF, STAFF_PASSWORD = "bench-requester", "bench-password-not-secret-1234"
IMAGES_PER_UNIT = 8


# --- the seed, run in a child process with the server's environment ----------------------------------------


def seed(units: int, assignments: int) -> None:
    """Migrate, then make a staff requester, a run of `units` units with images, and a published local batch;
    print the batch's public id as JSON on the last line."""
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    import io

    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from PIL import Image

    from annotate.services import batch_create, batch_publish
    from runs.models import DissectionRun, Project, Unit, UnitImage

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="Bench")
    user = get_user_model().objects.create_user(STAFF, password=STAFF_PASSWORD, is_staff=True)
    project.members.add(user)
    run = DissectionRun.objects.create(project=project, name="bench run", status="done", progress=1.0)
    made = []
    for channel in range(units):
        unit = Unit.objects.create(
            run=run,
            layer="conv4",
            channel=channel,
            label=["roof", "grass", "wheel", "red-c"][channel % 4],
            concept_category=["object", "object", "part", "color"][channel % 4],
            iou=0.05 + channel % 10 / 40,
            interpretable=True,
        )
        for rank in range(IMAGES_PER_UNIT):
            buffer = io.BytesIO()
            Image.new("RGB", (64, 64), (rank * 30 % 256, channel * 7 % 256, 90)).save(buffer, format="PNG")
            image = UnitImage(unit=unit, rank=rank, max_activation=10.0 - rank)
            image.image.save(f"{run.pk}/{channel}-{rank}.png", ContentFile(buffer.getvalue()), save=False)
            image.save()
        made.append(unit)
    batch = batch_create(
        title="Bench batch",
        units=made,
        created_by=user,
        assignments_per_task=assignments,
        images_per_task=IMAGES_PER_UNIT,
    )
    batch_publish(batch=batch)
    print(json.dumps({"batch": str(batch.public_id)}))


# --- clients -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    location: str
    body: str


class _NoRedirect(request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Timings:
    """Latencies (seconds) per page name, from every client thread."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, elapsed: float) -> None:
        with self.lock:
            self.seconds.setdefault(name, []).append(elapsed)


class Client:
    """One browser: cookies kept, CSRF token sent back, redirects read (not followed)."""

    def __init__(self, base: str, timings: Timings) -> None:
        self.base, self.timings = base, timings
        self.cookies = CookieJar()
        self.opener = request.build_opener(request.HTTPCookieProcessor(self.cookies), _NoRedirect())

    def _open(self, req: request.Request, name: str | None) -> Reply:
        start = time.perf_counter()
        try:
            with self.opener.open(req, timeout=60) as response:
                reply = Reply(response.status, response.headers.get("Location", ""), response.read().decode())
        except urlerror.HTTPError as exc:
            reply = Reply(exc.code, exc.headers.get("Location", ""), exc.read().decode(errors="replace"))
        if name is not None:
            self.timings.add(name, time.perf_counter() - start)
        return reply

    def get(self, path: str, name: str | None = None) -> Reply:
        return self._open(request.Request(self.base + path), name)

    def post(self, path: str, data: Mapping[str, Any], name: str | None = None) -> Reply:
        token = next((c.value for c in self.cookies if c.name == "csrftoken"), "")
        body = parse.urlencode({**data, "csrfmiddlewaretoken": token}, doseq=True).encode()
        headers = {"Referer": self.base + path}
        return self._open(request.Request(self.base + path, data=body, method="POST", headers=headers), name)


def _path(location: str) -> str:
    return parse.urlsplit(location).path


def crowd_worker(base: str, batch: str, number: int, timings: Timings, deadline: float) -> None:
    """A person: start on the batch link, then take, open and answer tasks until none is left or time's up."""
    client = Client(base, timings)
    client.get(f"/w/{batch}/")
    started = client.post(f"/w/{batch}/", {"worker_id": f"bench-{number:03d}"})
    if started.status != 302:
        raise RuntimeError(f"client {number}: the start answered {started.status}")
    client.get(_path(started.location))  # the personal link logs this browser in
    while time.monotonic() < deadline:
        reply = client.get(f"/w/{batch}/next/")
        if reply.status != 302:
            return  # no task left for this person
        location = _path(reply.location)
        if "/w/task/" in location:
            reply = client.post(location, {})
            if reply.status != 302:
                return  # every slot of the task was taken meanwhile
            location = _path(reply.location)
        if "/w/a/" not in location:
            return
        page = client.get(location, "task page")
        if page.status != 200:
            raise RuntimeError(f"client {number}: the task page answered {page.status}")
        answer = {"words": "roof", "category": "object"}
        reply = client.post(location, answer, "submit")
        if reply.status != 302:
            detail = re.search(r'role="alert">(.*?)</', reply.body, re.S)
            raise RuntimeError(
                f"client {number}: submit answered {reply.status}: {detail and detail.group(1)}"
            )


def requester(base: str, batch: str, timings: Timings, deadline: float, count: int) -> None:
    """A requester: log in, then load the review page `count` times or until time is up."""
    client = Client(base, timings)
    client.get("/accounts/login/")
    reply = client.post("/accounts/login/", {"username": STAFF, "password": STAFF_PASSWORD})
    if reply.status != 302:
        raise RuntimeError(f"the requester's login answered {reply.status}")
    for _ in range(count):
        if time.monotonic() >= deadline:
            return
        page = client.get(f"/batches/{batch}/review/", "review page")
        if page.status != 200:
            raise RuntimeError(f"the review page answered {page.status}")


def run_clients(targets: list[Callable[[], None]], timings: Timings) -> float:
    """Run each target in its own thread; the phase's wall time."""

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except Exception as exc:  # a failing client is reported, the others go on
            with timings.lock:
                timings.errors.append(str(exc))

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


# --- the server --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(base: str, server: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.returncode}")
        try:
            with request.urlopen(base + "/accounts/login/", timeout=5) as response:
                if response.status == 200:
                    return
        except (urlerror.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise RuntimeError(f"gunicorn did not answer at {base} within {seconds:.0f} s")


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def bench_database(name: str, database_url: str, args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="unitscope-web-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-" + "k" * 50,
        "SECURE_SSL": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(work / "media"),
        "WORK_DIR": str(work / "work"),
        "RATELIMIT_WORKER_CREATE": "1000000/m",
        "RATELIMIT_SLOT_TAKE": "1000000/m",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    seeded = subprocess.run(
        [
            sys.executable,
            __file__,
            "--seed",
            "--units",
            str(args.units),
            "--assignments",
            str(args.assignments),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if seeded.returncode != 0:
        raise RuntimeError(f"seeding on {name} failed:\n{seeded.stderr[-3000:]}")
    batch = json.loads(seeded.stdout.strip().splitlines()[-1])["batch"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "config/gunicorn.py",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    command += ["--access-logfile", "/dev/null", "--workers", str(args.workers)]
    log = work / "gunicorn.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, cwd=REPO, env=env, start_new_session=True, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        try:
            wait_until_up(base, server)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; its log, {log}:\n{log.read_text()[-3000:]}") from None
        crowd = Timings()
        deadline = time.monotonic() + args.seconds
        crowd_wall = run_clients(
            [lambda n=n: crowd_worker(base, batch, n, crowd, deadline) for n in range(args.clients)],
            crowd,
        )
        review = Timings()
        deadline = time.monotonic() + args.seconds
        per_client = max(1, args.review_requests // args.clients)
        review_wall = run_clients(
            [lambda: requester(base, batch, review, deadline, per_client) for _ in range(args.clients)],
            review,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    print(
        f"\n{name}: gunicorn {args.workers} workers, {args.clients} concurrent clients, {args.units} units x "
        f"{args.assignments} workers per unit"
    )
    print(f"  {'page':<12} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}")
    for timings, wall in ((crowd, crowd_wall), (review, review_wall)):
        for page, seconds in timings.seconds.items():
            print(
                f"  {page:<12} {len(seconds):>8} {statistics.median(seconds) * 1000:>8.1f} "
                f"{percentile(seconds, 0.95) * 1000:>8.1f} {len(seconds) / wall:>8.1f}"
            )
        for message in timings.errors:
            print(f"  client error: {message}")


# --- PostgreSQL --------------------------------------------------------------------------------------------


def postgres_database() -> tuple[str, Callable[[], None]] | None:
    """A fresh database on the local PostgreSQL (trust auth) and how to drop it; None when none answers."""
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=2).close()
        import psycopg2

        admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    except Exception as exc:  # any reason PostgreSQL cannot be used: say it and go on without
        print(f"\nPostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}): not usable ({exc}); skipped")
        return None
    admin.autocommit = True
    name = f"unitscope_bench_web_{os.getpid()}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: few units, clients and requests")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (threads)")
    parser.add_argument("--units", type=int, default=60)
    parser.add_argument("--assignments", type=int, default=5, help="workers per unit")
    parser.add_argument("--review-requests", type=int, default=200, help="review page loads, all clients")
    parser.add_argument("--seconds", type=float, default=120, help="time bound of each phase")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1, help="gunicorn workers")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed(args.units, args.assignments)
        return
    if args.quick:
        args.clients, args.units, args.assignments = min(args.clients, 4), 8, 3
        args.review_requests, args.seconds = 20, 30
    args.clients = max(1, min(args.clients, 64))
    sqlite = Path(tempfile.mkdtemp(prefix="unitscope-web-db-")) / "db.sqlite3"
    bench_database("SQLite", f"sqlite:///{sqlite}", args)
    found = None if args.no_postgres else postgres_database()
    if found is not None:
        url, drop = found
        try:
            bench_database("PostgreSQL", url, args)
        finally:
            drop()


if __name__ == "__main__":
    main()
