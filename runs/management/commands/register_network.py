from contextlib import ExitStack
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.errors import RunError
from runs.models import Network
from runs.services import DEFAULT_PROJECT, network_register, project_get_or_create, segmenter_concepts_read


def _upload(stack: ExitStack, path: Path | None) -> File | None:
    if path is None:
        return None
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    return File(stack.enter_context(path.open("rb")), name=path.name)


class Command(BaseCommand):
    help = (
        "Register a network to dissect: an architecture plus a weights file, or a TorchScript file; a "
        "generator (--kind generator) or the segmenter that labels its samples (--kind segmenter)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--arch", default="", help="toy, or a torchvision architecture such as resnet18")
        parser.add_argument("--weights", type=Path, help="state-dict checkpoint")
        parser.add_argument("--torchscript", type=Path, help="TorchScript file (instead of --arch/--weights)")
        parser.add_argument("--kind", choices=Network.Kind.values, default=Network.Kind.CLASSIFIER)
        parser.add_argument(
            "--latent-shape", default="", help="a TorchScript generator's latent shape, e.g. 512 or 512,1,1"
        )
        parser.add_argument(
            "--concepts",
            type=Path,
            help="a segmenter's classes: CSV name,category (or JSON) in output order",
        )
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
        kind: str = Network.Kind.CLASSIFIER,
        latent_shape: str = "",
        concepts: Path | None = None,
        **options: object,
    ) -> None:
        try:
            shape = [int(part) for part in latent_shape.split(",") if part.strip()]
        except ValueError:
            raise CommandError(f"--latent-shape {latent_shape!r}: expected sizes such as 512,1,1") from None
        if concepts is not None and not concepts.is_file():
            raise CommandError(f"{concepts}: no such file")
        with ExitStack() as stack:
            try:
                classes = (
                    segmenter_concepts_read(data=concepts.read_bytes(), filename=concepts.name)
                    if concepts is not None
                    else None
                )
                network = network_register(
                    project=project_get_or_create(name=project),
                    name=name,
                    architecture=arch,
                    weights=_upload(stack, weights),
                    torchscript=_upload(stack, torchscript),
                    kind=kind,
                    concepts=classes,
                    latent_shape=shape,
                    inspect_now=True,
                )
            except RunError as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered network {network.name!r} (id {network.pk}) in project {network.project.name!r}."
            )
        )
