from contextlib import ExitStack
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.errors import RunError
from runs.services import DEFAULT_PROJECT, network_register, project_get_or_create


def _upload(stack: ExitStack, path: Path | None) -> File | None:
    if path is None:
        return None
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    return File(stack.enter_context(path.open("rb")), name=path.name)


class Command(BaseCommand):
    help = "Register a network to dissect: an architecture plus a weights file, or a TorchScript file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--arch", default="", help="toy, or a torchvision architecture such as resnet18")
        parser.add_argument("--weights", type=Path, help="state-dict checkpoint")
        parser.add_argument("--torchscript", type=Path, help="TorchScript file (instead of --arch/--weights)")
        parser.add_argument(
            "--project",
            default=DEFAULT_PROJECT,
            help="project it belongs to (made when missing; default %(default)s)",
        )

    def handle(
        self,
        *args: object,
        name: str,
        arch: str,
        weights: Path | None,
        torchscript: Path | None,
        project: str,
        **options: object,
    ) -> None:
        with ExitStack() as stack:
            try:
                network = network_register(
                    project=project_get_or_create(name=project),
                    name=name,
                    architecture=arch,
                    weights=_upload(stack, weights),
                    torchscript=_upload(stack, torchscript),
                    inspect_now=True,
                )
            except RunError as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered network {network.name!r} (id {network.pk}) in project {network.project.name!r}."
            )
        )
