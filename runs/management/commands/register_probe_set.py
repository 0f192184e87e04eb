from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.errors import RunError
from runs.models import Network, ProbeSet
from runs.services import DEFAULT_PROJECT, probe_set_register, project_get_or_create


class Command(BaseCommand):
    help = (
        "Register a Broden-format probe set (a folder every worker can read, or an s3://bucket/prefix), or "
        "convert a dataset in another format (a path in PROBE_SET_SOURCE_ROOT) and register the result."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("path")
        parser.add_argument(
            "--project",
            default=DEFAULT_PROJECT,
            help="project it belongs to (made when missing; default %(default)s)",
        )
        parser.add_argument(
            "--format",
            dest="source_format",
            choices=ProbeSet.Format.values,
            default=ProbeSet.Format.BRODEN,
            help="the dataset's format (default %(default)s); any other is converted here, with progress",
        )
        parser.add_argument("--segmenter", help="--format segmented: the registered segmenter network's name")
        parser.add_argument("--image-size", type=int, default=224, help="a conversion's image side in px")

    def handle(
        self,
        *args: object,
        name: str,
        path: str,
        project: str,
        source_format: str,
        segmenter: str | None,
        image_size: int,
        **options: object,
    ) -> None:
        owner = project_get_or_create(name=project)
        network = None
        if segmenter:
            network = Network.objects.filter(project=owner, name=segmenter).first()
            if network is None:
                raise CommandError(f"no network {segmenter!r} in project {owner.name!r}")
        try:
            probe_set = probe_set_register(
                project=owner,
                name=name,
                path=path,
                source_format=source_format,
                segmenter=network,
                image_size=image_size,
                inspect_now=True,
            )
        except RunError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered probe set {probe_set.name!r} "
                f"({probe_set.image_count} images, id {probe_set.pk}) in project {probe_set.project.name!r}."
            )
        )
