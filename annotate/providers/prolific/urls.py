"""Prolific's webhook (in the `annotate` URL namespace)."""

from django.urls import path

from annotate.providers.prolific import views

urlpatterns = [
    path("prolific/webhook/", views.prolific_webhook, name="prolific_webhook"),
]
