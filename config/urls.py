"""Top-level routes: the runs and annotate apps, the REST API (`config.api`, docs at /api/docs), auth and
admin. Media has no public route: runs' media view (`/media/<key>`) serves stored files to the members of
their project only."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("runs.urls")),
    path("", include("annotate.urls")),
]
