"""Django admin for dissection runs and what they found: the requester's raw view and escape hatch."""

from django.contrib import admin

from runs.models import DissectionRun, Network, ProbeSet, Shard, Unit, UnitImage


@admin.register(ProbeSet)
class ProbeSetAdmin(admin.ModelAdmin):
    list_display = ("name", "path", "image_count", "status", "created_at")
    search_fields = ("name", "path")


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ("name", "architecture", "status", "created_at")
    search_fields = ("name", "architecture")


@admin.register(DissectionRun)
class DissectionRunAdmin(admin.ModelAdmin):
    list_display = ("name", "network", "probe_set", "status", "progress", "created_at")
    list_filter = ("status",)
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
