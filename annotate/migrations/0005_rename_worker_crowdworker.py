"""A crowd worker is a `CrowdWorker`, never to be confused with a Celery worker (the table is renamed, rows
and keys kept)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0004_dissection_models_move_to_runs"),
    ]

    operations = [
        migrations.RenameModel(old_name="Worker", new_name="CrowdWorker"),
    ]
