from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from annotate.demo import demo_password
from annotate.management.commands.demo import print_demo_access
from annotate.services import demo_content_build


class Command(BaseCommand):
    help = "Make sure the demo content exists, print the requester login and a worker link, run the server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args: object, addrport: str, **options: object) -> None:
        content = demo_content_build(password=demo_password())
        print_demo_access(self, f"http://{addrport}", content.username, content.password,
                          str(content.batch.public_id))
        call_command("runserver", addrport, use_reloader=False)
