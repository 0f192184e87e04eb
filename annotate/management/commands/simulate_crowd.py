from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.errors import AnnotateError
from annotate.management.commands.export_batch import find_batch
from annotate.simulation import crowd_simulate


class Command(BaseCommand):
    help = (
        "Answer a published batch's tasks with a simulated crowd through the real worker pages: honest "
        "workers give the unit's true concept with the given accuracy, spammers answer at random."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("batch", help="batch id, public id or title")
        parser.add_argument("--workers", type=int, default=10)
        parser.add_argument("--spammers", type=int, default=2)
        parser.add_argument("--accuracy", type=float, default=0.8)
        parser.add_argument("--limit", type=int, help="stop after this many answers")
        parser.add_argument(
            "--url", help="base URL of a running server on this database (default: in-process)"
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(
        self,
        *args: object,
        batch: str,
        workers: int,
        spammers: int,
        accuracy: float,
        limit: int | None,
        url: str | None,
        seed: int,
        **options: object,
    ) -> None:
        try:
            result = crowd_simulate(
                batch=find_batch(batch),
                workers=workers,
                spammers=spammers,
                accuracy=accuracy,
                limit=limit,
                seed=seed,
                client=url,
                progress=True,
            )
        except AnnotateError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{result.submitted} answers submitted.")
        for name, count in result.per_worker.items():
            why = result.stopped.get(name)
            self.stdout.write(f"  {name}: {count}{f' ({why})' if why else ''}")
