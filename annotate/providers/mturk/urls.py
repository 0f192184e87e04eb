"""MTurk's ExternalQuestion frame and the images of its qualification tests (in the `annotate` URL namespace,
as every worker page)."""

from django.urls import path

from annotate.providers.mturk import views

urlpatterns = [
    path("mturk/task/<uuid:task_id>/", views.mturk_task, name="mturk_task"),
    path("mturk/task/<uuid:task_id>/submit/", views.mturk_submit, name="mturk_submit"),
    path(
        "mturk/screening/<uuid:qualification_id>/<str:token>/",
        views.mturk_screening_image,
        name="mturk_screening_image",
    ),
]
