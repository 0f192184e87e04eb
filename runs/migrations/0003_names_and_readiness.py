"""One name per meaning: a unit's 0-based `channel` and its probe-set `concept_category` (not the crowd's
category); networks record their layer names; shards record when the broker took them; networks and probe sets say whether a worker checked them (rows
that exist already were checked when they were registered); a run's merges and publish become shard rows."""

from django.db import migrations, models

READINESS = [("pending", "Being checked"), ("ready", "Ready"), ("failed", "Failed")]


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_rename_tables"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="unit", name="unit_unique_per_run"),
        migrations.RenameField(model_name="unit", old_name="index", new_name="channel"),
        migrations.RenameField(model_name="unit", old_name="category", new_name="concept_category"),
        migrations.AlterField(
            model_name="unit",
            name="channel",
            field=models.PositiveIntegerField(help_text="0-based channel index (tally.csv's unit is channel + 1)"),
        ),
        migrations.AlterField(
            model_name="unit",
            name="concept_category",
            field=models.CharField(
                blank=True, help_text="Probe-set category of the automatic label (object, part, ...)", max_length=50
            ),
        ),
        migrations.AlterModelOptions(name="unit", options={"ordering": ["run_id", "layer", "channel"]}),
        migrations.AddConstraint(
            model_name="unit",
            constraint=models.UniqueConstraint(fields=("run", "layer", "channel"), name="unit_unique_per_run"),
        ),
        migrations.AddField(model_name="network", name="layers", field=models.JSONField(blank=True, default=list)),
        migrations.AddField(
            model_name="network",
            name="status",
            field=models.CharField(choices=READINESS, default="ready", max_length=16),
        ),
        migrations.AddField(model_name="network", name="error", field=models.TextField(blank=True)),
        migrations.AddField(
            model_name="probeset",
            name="status",
            field=models.CharField(choices=READINESS, default="ready", max_length=16),
        ),
        migrations.AddField(model_name="probeset", name="error", field=models.TextField(blank=True)),
        migrations.AlterField(
            model_name="shard",
            name="layer",
            field=models.CharField(
                blank=True,
                help_text="Render shards only; the other phases cover every layer of the run",
                max_length=200,
            ),
        ),
        migrations.AddField(
            model_name="shard",
            name="queued_at",
            field=models.DateTimeField(
                blank=True, help_text="When the broker last took this shard; empty while it never did", null=True
            ),
        ),
        migrations.AlterField(
            model_name="shard",
            name="updated_at",
            field=models.DateTimeField(auto_now=True, help_text="Last start, progress report or release"),
        ),
        migrations.AlterField(
            model_name="shard",
            name="phase",
            field=models.CharField(
                choices=[
                    ("scan", "Scan"),
                    ("merge_scan", "Merge scans"),
                    ("tally", "Tally"),
                    ("merge_tally", "Merge tallies"),
                    ("render", "Render"),
                    ("publish", "Publish"),
                ],
                max_length=16,
            ),
        ),
    ]
