"""A batch belongs to a project: the project of its units' run, or (a batch without tasks) the project
"Default", made here when the runs' migration had no rows to put in it, with every staff user a member."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

DEFAULT_PROJECT = "Default"


def _foreign_key(*, null):
    return models.ForeignKey(
        null=null, on_delete=django.db.models.deletion.PROTECT, related_name="batches", to="runs.project"
    )


def batches_to_their_runs_project(apps, schema_editor):
    Batch = apps.get_model("annotate", "Batch")
    Task = apps.get_model("annotate", "Task")
    for batch in Batch.objects.filter(project__isnull=True):
        task = Task.objects.filter(batch=batch).select_related("unit__run").order_by("position").first()
        if task is not None:
            batch.project_id = task.unit.run.project_id
        else:
            project, created = apps.get_model("runs", "Project").objects.get_or_create(name=DEFAULT_PROJECT)
            if created:
                user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
                project.members.add(*user_model.objects.filter(is_staff=True))
            batch.project_id = project.pk
        batch.save(update_fields=["project"])
    # See runs 0004: check the deferred foreign keys now, so the column can become NOT NULL in this transaction.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0006_crowd_worker_label_assignment_verified"),
        ("runs", "0004_projects"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(model_name="batch", name="project", field=_foreign_key(null=True)),
        migrations.RunPython(batches_to_their_runs_project, migrations.RunPython.noop),
        migrations.AlterField(model_name="batch", name="project", field=_foreign_key(null=False)),
    ]
