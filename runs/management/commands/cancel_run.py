from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.errors import RunError
from runs.models import DissectionRun
from runs.services import run_cancel


class Command(BaseCommand):
    help = "Cancel a queued or running dissection run: workers drop its shards and no units are published."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run", help="run name")

    def handle(self, *args: object, run: str, **options: object) -> None:
        found = DissectionRun.objects.filter(name=run).first()
        if found is None:
            raise CommandError(f"no run called {run!r}")
        try:
            run_cancel(run=found)
        except RunError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Cancelled run {run!r}."))
