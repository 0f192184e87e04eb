"""A local crowd worker's typed name becomes a label (identity is their personal link), and an MTurk
assignment stays unverified until MTurk confirms it. Existing rows are verified."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0005_rename_worker_crowdworker"),
    ]

    operations = [
        migrations.AddField(
            model_name="crowdworker",
            name="label",
            field=models.CharField(
                blank=True,
                help_text="The name a worker typed on the local link: shown, never trusted",
                max_length=100,
            ),
        ),
        migrations.AddField(
            model_name="assignment",
            name="verified",
            field=models.BooleanField(
                default=True,
                help_text="False for an MTurk assignment until MTurk confirms it: unverified answers count in "
                "no statistic, pay no bonus and block nobody",
            ),
        ),
    ]
