"""Django admin for projects, dissection runs and what they found: the superuser's raw view and escape
hatch (it is not scoped by project: give staff accounts no admin permissions on these models)."""

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest

from runs.models import ApiToken, DissectionRun, Network, ProbeSet, Project, Shard, Unit, UnitImage
from runs.services import api_token_create, api_token_revoke


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


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """The superuser issues and revokes requesters' API tokens (as `manage.py api_token` does): a new key is
    shown once, in the message after saving; a token cannot be edited or deleted, only revoked."""

    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "user__username", "prefix")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and self.has_module_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user":
            kwargs["queryset"] = get_user_model().objects.filter(is_active=True, is_staff=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        token, key = api_token_create(user=obj.user, name=obj.name)
        # The admin logs and redirects with `obj`: make it the saved token.
        obj.pk = token.pk
        obj.refresh_from_db()
        obj._state.adding = False
        messages.warning(request, f"Key of token {token.pk}: {key} (copy it now; it is not shown again).")

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        live = [token for token in queryset if token.revoked_at is None]
        for token in live:
            api_token_revoke(token=token)
        self.message_user(request, f"Revoked {len(live)} token(s).")
