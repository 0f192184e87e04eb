from django.core.management.base import BaseCommand, CommandError

from annotate.services.prolific import prolific_batches_sync


class Command(BaseCommand):
    help = (
        "Poll Prolific for every open Prolific batch: the study's status and each submission (returned and "
        "timed-out ones free their slots; approvals and rejections made in Prolific are recorded). Run it "
        "from cron or a Celery beat schedule where webhooks cannot reach this service."
    )

    def handle(self, *args: object, **options: object) -> None:
        outcome = prolific_batches_sync()
        failed = 0
        for batch, result in outcome.items():
            if isinstance(result, str):
                failed += 1
                self.stderr.write(f"batch {batch}: {result}")
            else:
                self.stdout.write(
                    f"batch {batch}: {result.seen} submission(s) seen, {result.updated} assignment(s) "
                    f"updated, {len(result.unknown)} unknown"
                )
        if failed:
            raise CommandError(f"{failed} of {len(outcome)} Prolific batch(es) could not be synced")
