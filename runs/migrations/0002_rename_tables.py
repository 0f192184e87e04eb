"""Give the moved tables the `runs_` names (rows, keys and references are kept)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0001_initial"),
        ("annotate", "0004_dissection_models_move_to_runs"),
    ]

    operations = [
        migrations.AlterModelTable(name=name, table=None)
        for name in ("probeset", "network", "dissectionrun", "unit", "unitimage", "shard")
    ]
