from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.errors import RunError
from runs.services import DEFAULT_PROJECT, probe_set_register, project_get_or_create


class Command(BaseCommand):
    help = "Register a Broden-format probe set: a folder every worker can read, or an s3://bucket/prefix."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("path")
        parser.add_argument(
            "--project",
            default=DEFAULT_PROJECT,
            help="project it belongs to (made when missing; default %(default)s)",
        )

    def handle(self, *args: object, name: str, path: str, project: str, **options: object) -> None:
        try:
            probe_set = probe_set_register(
                project=project_get_or_create(name=project), name=name, path=path, inspect_now=True
            )
        except RunError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered probe set {probe_set.name!r} "
                f"({probe_set.image_count} images, id {probe_set.pk}) in project {probe_set.project.name!r}."
            )
        )
