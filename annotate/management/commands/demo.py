from django.core.management.base import BaseCommand, CommandParser

from annotate.demo import demo_password
from annotate.services import demo_content_build


def print_demo_access(command: BaseCommand, site: str, username: str, password: str, batch_id: str) -> None:
    command.stdout.write(f"Requester login: {site}/accounts/login/  user {username}  password {password}")
    command.stdout.write(f"Worker link:     {site}/w/{batch_id}/")


class Command(BaseCommand):
    help = "Create (idempotently) the demo requester, drawn demo units and a published batch with gold units."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--site", default="http://127.0.0.1:8000", help="address printed in the links")

    def handle(self, *args: object, site: str, **options: object) -> None:
        content = demo_content_build(password=demo_password())
        print_demo_access(self, site.rstrip("/"), content.username, content.password, str(content.batch.public_id))
