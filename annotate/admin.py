"""Django admin for every model: the requester's raw view and escape hatch."""
from django.contrib import admin

from annotate.models import (Annotation, Assignment, Batch, DissectionRun, Network, ProbeSet, Shard, Task, Unit,
                             UnitImage, Worker)


@admin.register(ProbeSet)
class ProbeSetAdmin(admin.ModelAdmin):
    list_display = ("name", "path", "image_count", "created_at")
    search_fields = ("name", "path")


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ("name", "architecture", "created_at")
    search_fields = ("name", "architecture")


@admin.register(DissectionRun)
class DissectionRunAdmin(admin.ModelAdmin):
    list_display = ("name", "network", "probe_set", "status", "progress", "created_at")
    list_filter = ("status",)
    search_fields = ("name",)


@admin.register(Shard)
class ShardAdmin(admin.ModelAdmin):
    list_display = ("run", "phase", "layer", "index", "start", "stop", "status", "deliveries", "progress",
                    "updated_at")
    list_filter = ("phase", "status")
    readonly_fields = ("result_keys",)


class UnitImageInline(admin.TabularInline):
    model = UnitImage
    extra = 0


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    list_display = ("run", "layer", "index", "label", "category", "iou", "interpretable")
    list_filter = ("run", "layer", "interpretable")
    search_fields = ("label", "layer")
    inlines = [UnitImageInline]


@admin.register(UnitImage)
class UnitImageAdmin(admin.ModelAdmin):
    list_display = ("unit", "rank", "max_activation")
    list_select_related = ("unit__run",)


class TaskInline(admin.TabularInline):
    model = Task
    extra = 0
    fields = ("position", "unit", "kind", "is_gold", "gold_category", "gold_words", "mturk_hit_id")
    raw_id_fields = ("unit",)


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("title", "provider", "state", "assignments_per_task", "reward", "created_at")
    list_filter = ("provider", "state")
    search_fields = ("title",)
    readonly_fields = ("public_id",)
    inlines = [TaskInline]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("batch", "position", "unit", "kind", "is_gold", "mturk_hit_id")
    list_filter = ("kind", "is_gold", "batch")
    raw_id_fields = ("unit",)
    readonly_fields = ("public_id",)


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("provider", "external_id", "blocked", "gold_correct", "gold_total")
    list_filter = ("provider", "blocked")
    search_fields = ("external_id",)
    readonly_fields = ("public_id",)


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("task", "worker", "status", "slot", "accepted_at", "submitted_at", "gold_passed")
    list_filter = ("status", "task__batch")
    search_fields = ("worker__external_id", "mturk_assignment_id")
    raw_id_fields = ("task", "worker")
    readonly_fields = ("public_id",)


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ("assignment", "words", "category", "precision", "time_spent_ms", "created_at")
    list_filter = ("category",)
    search_fields = ("words",)
    raw_id_fields = ("assignment",)
