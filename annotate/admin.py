"""Django admin for the crowd platform's models: the requester's raw view and escape hatch."""

from django.contrib import admin

from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Task


class TaskInline(admin.TabularInline):
    model = Task
    extra = 0
    fields = ("position", "unit", "kind", "is_gold", "gold_category", "gold_words", "mturk_hit_id")
    raw_id_fields = ("unit",)


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("title", "project", "provider", "state", "assignments_per_task", "reward", "created_at")
    list_filter = ("project", "provider", "state")
    search_fields = ("title",)
    readonly_fields = ("public_id",)
    inlines = [TaskInline]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("batch", "position", "unit", "kind", "is_gold", "mturk_hit_id")
    list_filter = ("kind", "is_gold", "batch")
    raw_id_fields = ("unit",)
    readonly_fields = ("public_id",)


@admin.register(CrowdWorker)
class CrowdWorkerAdmin(admin.ModelAdmin):
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
