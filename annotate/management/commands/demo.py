from typing import TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from annotate.demo import DemoContent, DemoError, demo_content_build, demo_password
from annotate.demo_extras import demo_extras_build_with_worker


def print_demo_access(command: BaseCommand, site: str, content: DemoContent) -> None:
    command.stdout.write(
        f"Requester login: {site}/accounts/login/  user {content.username}  password {content.password}"
    )
    command.stdout.write(f"Worker link:     {site}/w/{content.batch.public_id}/")
    command.stdout.write(f"Demo run:        {site}/runs/{content.run.pk}/")
    command.stdout.write(
        f"Comparison:      {site}{reverse('annotate:batch_comparison', args=[content.batch.public_id])}"
    )


class Command(BaseCommand):
    help = (
        "Create (idempotently) the demo: a synthetic probe set and a toy network trained on it (cached under "
        "var/demo), a dissection of conv3 and conv4 through the workers, and a published batch with two "
        "gold units."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--site", default="http://127.0.0.1:8000", help="address printed in the links")
        parser.add_argument(
            "--extras",
            action="store_true",
            help="also build the slow extras now (`serve_demo` builds them in the background)",
        )

    def handle(self, *args: object, site: str, extras: bool, **options: object) -> None:
        try:
            content = demo_content_build(password=demo_password(), progress=cast(TextIO, self.stderr._out))
        except DemoError as exc:
            raise CommandError(str(exc)) from None
        print_demo_access(self, site.rstrip("/"), content)
        if extras:
            for job in demo_extras_build_with_worker(user=content.user):
                line = f"{job.title}: {job.get_status_display()}"
                self.stdout.write(
                    line + (f" ({job.error})" if job.error else f"  {site.rstrip('/')}{job.link}")
                )
