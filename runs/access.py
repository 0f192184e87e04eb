"""Who may see and act on what: the one place that decides it.

Requesters are active staff accounts (the crowd never logs in). Runs, networks, probe sets and batches
belong to a project; a requester sees and acts on the projects they are a member of, the superuser on all.
Pages look objects up through `.visible_to(user)`, so another project's object is a 404, never a 403: ids
do not leak. `runs.models` builds its managers from the querysets here, so this module imports no model (it
finds Project through the app registry).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self, TypeVar

from django.apps import apps
from django.contrib.auth.decorators import user_passes_test
from django.db import models

_M = TypeVar("_M", bound=models.Model)


def is_requester(user: Any) -> bool:
    """An active staff account: may use the requester pages at all."""
    return bool(user is not None and user.is_active and user.is_staff)


staff_required = user_passes_test(is_requester, login_url="login")


class ProjectScopedQuerySet(models.QuerySet[_M]):
    """Rows of the projects a user may see; `project_path` leads from the row to its project."""

    project_path: ClassVar[str] = "project"

    def visible_to(self, user: Any) -> Self:
        """Superuser: every row; requester: rows of their projects; anyone else: none."""
        if not is_requester(user):
            return self.none()
        if user.is_superuser:
            return self
        members = f"{self.project_path}__members" if self.project_path else "members"
        return self.filter(**{members: user})


class ProjectQuerySet(ProjectScopedQuerySet[_M]):
    """Projects themselves: a requester's are those they are a member of."""

    project_path = ""


def projects_of(user: Any) -> ProjectQuerySet[Any]:
    """The projects `user` may see and create things in, by name."""
    return ProjectQuerySet(model=apps.get_model("runs", "Project")).visible_to(user).order_by("name")


def may_use_project(user: Any, project: models.Model) -> bool:
    """Whether `user` may create things in `project`. No user (a management command, the demo) may."""
    if user is None:
        return True
    return projects_of(user).filter(pk=project.pk).exists()
