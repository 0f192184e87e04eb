"""Projects: runs, networks and probe sets belong to one, and requesters see the projects they are members
of. Existing rows go to a project "Default" whose members are every existing staff user, so nobody loses
sight of what they saw before the upgrade."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

DEFAULT_PROJECT = "Default"
OWNED = ("probeset", "network", "dissectionrun")


def _foreign_key(related_name, *, null):
    return models.ForeignKey(
        null=null,
        on_delete=django.db.models.deletion.PROTECT,
        related_name=related_name,
        to="runs.project",
    )


def existing_rows_to_default(apps, schema_editor):
    models_ = [apps.get_model("runs", name) for name in OWNED]
    if not any(model.objects.exists() for model in models_):
        return
    project, _ = apps.get_model("runs", "Project").objects.get_or_create(name=DEFAULT_PROJECT)
    user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    project.members.add(*user_model.objects.filter(is_staff=True))
    for model in models_:
        model.objects.filter(project__isnull=True).update(project=project)
    # PostgreSQL checks deferred foreign keys at commit; checking them now lets the same transaction make
    # the column NOT NULL below (else: "cannot ALTER TABLE ... because it has pending trigger events").
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0003_names_and_readiness"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Project",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=200, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "members",
                    models.ManyToManyField(blank=True, related_name="projects", to=settings.AUTH_USER_MODEL),
                ),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.AddField(model_name="probeset", name="project", field=_foreign_key("probe_sets", null=True)),
        migrations.AddField(model_name="network", name="project", field=_foreign_key("networks", null=True)),
        migrations.AddField(model_name="dissectionrun", name="project", field=_foreign_key("runs", null=True)),
        migrations.RunPython(existing_rows_to_default, migrations.RunPython.noop),
        migrations.AlterField(model_name="probeset", name="project", field=_foreign_key("probe_sets", null=False)),
        migrations.AlterField(model_name="network", name="project", field=_foreign_key("networks", null=False)),
        migrations.AlterField(model_name="dissectionrun", name="project", field=_foreign_key("runs", null=False)),
    ]
