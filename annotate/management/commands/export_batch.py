import io
import uuid
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.export import FORMATS, batch_export_rows, write_rows
from annotate.models import Batch


def find_batch(ref: str) -> Batch:
    """A batch by public id, database id or exact title."""
    try:
        return Batch.objects.get(public_id=uuid.UUID(ref))
    except (ValueError, Batch.DoesNotExist):
        pass
    if ref.isdigit() and Batch.objects.filter(pk=int(ref)).exists():
        return Batch.objects.get(pk=int(ref))
    matches = list(Batch.objects.filter(title=ref)[:2])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise CommandError(f"several batches are titled {ref!r}; use the batch id")
    raise CommandError(f"no batch {ref!r} (give its id, public id or title)")


class Command(BaseCommand):
    help = "Export one row per answered assignment of a batch as CSV or JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("batch", help="batch id, public id or title")
        parser.add_argument("--format", choices=FORMATS, default="csv")
        parser.add_argument("--out", type=Path, help="file to write (default: standard output)")

    def handle(self, *args: object, batch: str, format: str, out: Path | None, **options: object) -> None:
        rows = batch_export_rows(batch=find_batch(batch))
        if out is None:
            buffer = io.StringIO()
            write_rows(rows, buffer, format)
            self.stdout.write(buffer.getvalue(), ending="")
            return
        tmp = out.with_name(out.name + ".partial")
        with tmp.open("w", newline="", encoding="utf-8") as stream:
            write_rows(rows, stream, format)
        tmp.replace(out)
        self.stderr.write(f"Wrote {len(rows)} rows to {out}.")
