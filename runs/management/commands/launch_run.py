from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs import selectors as run_selectors
from runs.errors import RunError
from runs.follow import follow_run
from runs.models import DissectionRun, Network, ProbeSet
from runs.services import project_get_or_create, run_launch
from workers.inprocess import in_process_worker, needs_in_process_worker


class Command(BaseCommand):
    help = (
        "Launch a dissection run and follow its progress with a bar. Without CELERY_BROKER_URL the run "
        "goes through a worker thread in this process; with it, through the workers on the gpu queue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--network", required=True, help="registered network name")
        parser.add_argument("--probe-set", required=True, help="registered probe set name")
        parser.add_argument("--layers", required=True, help="comma-separated, e.g. conv3,conv4")
        parser.add_argument("--shard-size", type=int, default=64, help="images per shard")
        parser.add_argument("--topk", type=int, default=20)
        parser.add_argument("--semantics", default="paper", choices=["paper", "netdissect-lite"])
        parser.add_argument("--no-wait", action="store_true", help="return once the run is queued")
        parser.add_argument(
            "--project",
            help="project of the run; the network and the probe set must be in it (default: the network's)",
        )

    def handle(
        self,
        *args: object,
        name: str,
        network: str,
        probe_set: str,
        layers: str,
        shard_size: int,
        topk: int,
        semantics: str,
        no_wait: bool,
        project: str | None,
        **options: object,
    ) -> None:
        found_network = Network.objects.filter(name=network).first()
        found_probe_set = ProbeSet.objects.filter(name=probe_set).first()
        if found_network is None:
            raise CommandError(f"no network called {network!r} (manage.py register_network)")
        if found_probe_set is None:
            raise CommandError(f"no probe set called {probe_set!r} (manage.py register_probe_set)")
        local = needs_in_process_worker()
        if local and no_wait:
            raise CommandError(
                "--no-wait needs CELERY_BROKER_URL: the in-memory broker dies with this command"
            )
        with in_process_worker() if local else nullcontext():
            try:
                run = run_launch(
                    project=found_network.project if project is None else project_get_or_create(name=project),
                    name=name,
                    network=found_network,
                    probe_set=found_probe_set,
                    layers=layers.split(","),
                    shard_size=shard_size,
                    topk=topk,
                    semantics=semantics,
                )
            except RunError as exc:
                raise CommandError(str(exc)) from None
            if run_selectors.run_waits_for_broker(run=run):
                self.stderr.write(
                    "The task broker is unreachable: the run waits until it is back and the sweep "
                    "(celery beat, or manage.py sweep_runs) hands it to the workers."
                )
            if no_wait:
                self.stdout.write(f"Queued run {run.name!r} (id {run.pk}).")
                return
            run = follow_run(run, stream=self.stderr)
        if run.status != DissectionRun.Status.DONE:
            raise CommandError(f"run {run.name!r} {run.status}: {run.error}")
        self.stdout.write(self.style.SUCCESS(f"Run {run.name!r} done: {run.units.count()} units."))
