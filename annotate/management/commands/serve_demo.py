from typing import TextIO, cast

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate import demo_extras
from annotate.demo import DemoError, demo_content_build, demo_password
from annotate.management.commands.demo import print_demo_access
from workers.inprocess import needs_in_process_worker, start_in_process_worker


class Command(BaseCommand):
    help = (
        "Make sure the demo content exists, start the in-process worker (without CELERY_BROKER_URL), print "
        "the requester login and the worker link, and run the development server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--no-extras",
            action="store_true",
            help="serve without building the demo's slow extras in the background",
        )

    def handle(self, *args: object, addrport: str, no_extras: bool, **options: object) -> None:
        worker = start_in_process_worker() if needs_in_process_worker() else None
        try:
            try:
                content = demo_content_build(
                    password=demo_password(), progress=cast(TextIO, self.stderr._out)
                )
            except DemoError as exc:
                raise CommandError(str(exc)) from None
            print_demo_access(self, f"http://{addrport}", content)
            if worker is not None:
                self.stdout.write(
                    "Worker:          a Celery worker thread in this process (queues celery, gpu)"
                )
            if not no_extras:
                demo_extras.demo_extras_start(user=content.user)
                self.stdout.write(
                    "Extras:          building in the background; the dashboard shows their progress"
                )
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if worker is not None:
                worker.__exit__(None, None, None)
