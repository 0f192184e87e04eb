from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.errors import RunError
from runs.models import DissectionRun
from runs.services import DEFAULT_PROJECT, project_get_or_create, units_import


class Command(BaseCommand):
    help = (
        "Import unit image sets into a run: DIR holds one <layer>_<channel>/ folder per unit with its "
        "top images (ranked by file name) and an optional unit.json."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run", help="run name (created when missing)")
        parser.add_argument("directory", type=Path)
        parser.add_argument(
            "--project",
            help=f"the run's project (default: the run's own, or {DEFAULT_PROJECT} for a new run)",
        )

    def handle(
        self, *args: object, run: str, directory: Path, project: str | None, **options: object
    ) -> None:
        existing = DissectionRun.objects.filter(name=run).select_related("project").first()
        try:
            owner = (
                existing.project
                if project is None and existing is not None
                else project_get_or_create(name=project or DEFAULT_PROJECT)
            )
            units = units_import(project=owner, run_name=run, directory=directory)
        except RunError as exc:
            raise CommandError(str(exc)) from None
        images = sum(unit.images.count() for unit in units)
        self.stdout.write(
            self.style.SUCCESS(f"Imported {len(units)} units ({images} images) into run {run!r}.")
        )
