from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.errors import ImportUnitsError
from runs.services import units_import


class Command(BaseCommand):
    help = (
        "Import unit image sets into a run: DIR holds one <layer>_<channel>/ folder per unit with its "
        "top images (ranked by file name) and an optional unit.json."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run", help="run name (created when missing)")
        parser.add_argument("directory", type=Path)

    def handle(self, *args: object, run: str, directory: Path, **options: object) -> None:
        try:
            units = units_import(run_name=run, directory=directory)
        except ImportUnitsError as exc:
            raise CommandError(str(exc)) from None
        images = sum(unit.images.count() for unit in units)
        self.stdout.write(
            self.style.SUCCESS(f"Imported {len(units)} units ({images} images) into run {run!r}.")
        )
