from django.core.management.base import BaseCommand, CommandParser

from runs.services import runs_sweep


class Command(BaseCommand):
    help = (
        "Queue again the shards nobody holds (lost by a broker restart, never queued because the broker was "
        "down, or held by a dead worker), and the lost pieces of feature-visualization jobs, and fail runs "
        "and jobs that cannot progress. Celery beat runs this every "
        "SWEEP_INTERVAL_S; run it by hand, or from cron, where no beat runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help="seconds after which a queued or running shard counts as lost (default SHARD_STALE_AFTER_S)",
        )

    def handle(self, *args: object, stale_after: float | None, **options: object) -> None:
        outcome = runs_sweep(stale_after=stale_after)
        self.stdout.write(
            f"Queued again: {len(outcome.requeued)} shard(s); failed: {len(outcome.failed)} run(s). "
            f"Feature visualizations: {len(outcome.jobs_requeued)} piece(s) queued again, "
            f"{len(outcome.jobs_failed)} job(s) failed."
        )
