"""The dissection models move here from `annotate`, keeping their tables: this migration only tells Django's
state where they live now (no SQL); 0002 renames the tables."""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("annotate", "0003_shard"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
            migrations.CreateModel(
                name='ProbeSet',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('name', models.CharField(max_length=200, unique=True)),
                    ('path', models.CharField(help_text='Local folder or s3://bucket/prefix', max_length=1000)),
                    ('image_count', models.PositiveIntegerField(default=0)),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                ],
                options={
                    'indexes': [],
                    'constraints': [],
                    'db_table': 'annotate_probeset',
                },
            ),
            migrations.CreateModel(
                name='Network',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('name', models.CharField(max_length=200, unique=True)),
                    ('architecture', models.CharField(max_length=100)),
                    ('weights', models.FileField(blank=True, null=True, upload_to='networks/weights/')),
                    ('torchscript', models.FileField(blank=True, null=True, upload_to='networks/torchscript/')),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                ],
                options={
                    'indexes': [],
                    'constraints': [],
                    'db_table': 'annotate_network',
                },
            ),
            migrations.CreateModel(
                name='DissectionRun',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('name', models.CharField(max_length=200, unique=True)),
                    ('layers', models.JSONField(blank=True, default=list)),
                    ('semantics', models.CharField(blank=True, help_text='Concept source, e.g. broden', max_length=100)),
                    ('topk', models.PositiveIntegerField(default=20)),
                    ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('failed', 'Failed'), ('done', 'Done'), ('cancelled', 'Cancelled')], default='queued', max_length=16)),
                    ('progress', models.FloatField(default=0.0, validators=[django.core.validators.MinValueValidator(0.0), django.core.validators.MaxValueValidator(1.0)])),
                    ('eta_seconds', models.PositiveIntegerField(blank=True, null=True)),
                    ('error', models.TextField(blank=True)),
                    ('shards_total', models.PositiveIntegerField(default=0)),
                    ('shards_done', models.PositiveIntegerField(default=0)),
                    ('report', models.JSONField(blank=True, default=dict, help_text='Per-layer report paths')),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('started_at', models.DateTimeField(blank=True, null=True)),
                    ('finished_at', models.DateTimeField(blank=True, null=True)),
                    ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ('network', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='runs', to='runs.network')),
                    ('probe_set', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='runs', to='runs.probeset')),
                ],
                options={
                    'ordering': ['-created_at'],
                    'indexes': [],
                    'constraints': [models.CheckConstraint(condition=models.Q(('progress__gte', 0.0), ('progress__lte', 1.0)), name='run_progress_0_1')],
                    'db_table': 'annotate_dissectionrun',
                },
            ),
            migrations.CreateModel(
                name='Unit',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('layer', models.CharField(max_length=200)),
                    ('index', models.PositiveIntegerField(help_text='0-based channel index')),
                    ('label', models.CharField(blank=True, help_text='Automatic label (best concept)', max_length=200)),
                    ('category', models.CharField(blank=True, help_text='Broden category of the automatic label', max_length=50)),
                    ('iou', models.FloatField(blank=True, null=True)),
                    ('interpretable', models.BooleanField(blank=True, null=True)),
                    ('threshold', models.FloatField(blank=True, null=True)),
                    ('top_concepts', models.JSONField(blank=True, default=list)),
                    ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='units', to='runs.dissectionrun')),
                ],
                options={
                    'ordering': ['run_id', 'layer', 'index'],
                    'indexes': [],
                    'constraints': [models.UniqueConstraint(fields=('run', 'layer', 'index'), name='unit_unique_per_run')],
                    'db_table': 'annotate_unit',
                },
            ),
            migrations.CreateModel(
                name='UnitImage',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('rank', models.PositiveIntegerField(help_text='0 = highest activation')),
                    ('image', models.FileField(upload_to='units/')),
                    ('max_activation', models.FloatField(blank=True, null=True)),
                    ('source_image', models.CharField(blank=True, max_length=1000)),
                    ('unit', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='images', to='runs.unit')),
                ],
                options={
                    'ordering': ['unit_id', 'rank'],
                    'indexes': [],
                    'constraints': [models.UniqueConstraint(fields=('unit', 'rank'), name='unit_image_unique_rank')],
                    'db_table': 'annotate_unitimage',
                },
            ),
            migrations.CreateModel(
                name='Shard',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('phase', models.CharField(choices=[('scan', 'Scan'), ('tally', 'Tally'), ('render', 'Render')], max_length=16)),
                    ('layer', models.CharField(blank=True, help_text='Render shards only; scan and tally cover every layer of the run', max_length=200)),
                    ('index', models.PositiveIntegerField()),
                    ('start', models.PositiveIntegerField(default=0)),
                    ('stop', models.PositiveIntegerField(default=0)),
                    ('status', models.CharField(choices=[('pending', 'Pending'), ('running', 'Running'), ('done', 'Done')], default='pending', max_length=16)),
                    ('deliveries', models.PositiveIntegerField(default=0)),
                    ('progress', models.FloatField(default=0.0)),
                    ('result_keys', models.JSONField(blank=True, default=dict, help_text='Storage key of the result per layer')),
                    ('updated_at', models.DateTimeField(auto_now=True)),
                    ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='shards', to='runs.dissectionrun')),
                ],
                options={
                    'ordering': ['run_id', 'phase', 'layer', 'index'],
                    'constraints': [models.UniqueConstraint(fields=('run', 'phase', 'layer', 'index'), name='shard_unique_per_run')],
                    'indexes': [],
                    'db_table': 'annotate_shard',
                },
            ),
            ],
            database_operations=[],
        ),
    ]
