"""Django admin for projects, dissection runs and what they found: the superuser's raw view and escape
hatch (it is not scoped by project: give staff accounts no admin permissions on these models)."""

from django.contrib import admin

from runs.models import DissectionRun, Network, ProbeSet, Project, Shard, Unit, UnitImage


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)
    filter_horizontal = ("members",)


@admin.register(ProbeSet)
class ProbeSetAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "path", "image_count", "status", "created_at")
    list_filter = ("project",)
    search_fields = ("name", "path")


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "architecture", "status", "created_at")
    list_filter = ("project",)
    search_fields = ("name", "architecture")


@admin.register(DissectionRun)
class DissectionRunAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "network", "probe_set", "status", "progress", "created_at")
    list_filter = ("project", "status")
    search_fields = ("name",)


@admin.register(Shard)
class ShardAdmin(admin.ModelAdmin):
    list_display = (
        "run",
        "phase",
        "layer",
        "index",
        "start",
        "stop",
        "status",
        "deliveries",
        "progress",
        "updated_at",
    )
    list_filter = ("phase", "status")
    readonly_fields = ("result_keys",)


class UnitImageInline(admin.TabularInline):
    model = UnitImage
    extra = 0


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    list_display = ("run", "layer", "channel", "label", "concept_category", "iou", "interpretable")
    list_filter = ("run", "layer", "interpretable")
    search_fields = ("label", "layer")
    inlines = [UnitImageInline]


@admin.register(UnitImage)
class UnitImageAdmin(admin.ModelAdmin):
    list_display = ("unit", "rank", "max_activation")
    list_select_related = ("unit__run",)
