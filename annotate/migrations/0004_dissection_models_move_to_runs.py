"""The dissection models now live in the `runs` app (state only: their tables stay and are renamed by runs'
0002); a task's unit points at `runs.Unit`."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0003_shard"),
        ("runs", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="unit",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="tasks", to="runs.unit"
                    ),
                ),
                migrations.DeleteModel(name="Shard"),
                migrations.DeleteModel(name="UnitImage"),
                migrations.DeleteModel(name="Unit"),
                migrations.DeleteModel(name="DissectionRun"),
                migrations.DeleteModel(name="Network"),
                migrations.DeleteModel(name="ProbeSet"),
            ],
            database_operations=[],
        ),
    ]
