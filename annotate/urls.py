from django.urls import path

from annotate import views

app_name = "annotate"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("batches/new/", views.batch_create, name="batch_create"),
    path("batches/<uuid:batch_id>/", views.batch_detail, name="batch_detail"),
    path("batches/<uuid:batch_id>/review/", views.batch_review, name="batch_review"),
    path("batches/<uuid:batch_id>/export.<str:fmt>", views.batch_export, name="batch_export"),
    path("batches/<uuid:batch_id>/workers/<uuid:worker_id>/block/", views.worker_block, name="worker_block"),
    path("batches/<uuid:batch_id>/<str:action>/", views.batch_action, name="batch_action"),
    # Worker pages (local link and Prolific study URL).
    path("w/<uuid:batch_id>/", views.batch_start, name="batch_start"),
    path("w/<uuid:batch_id>/next/", views.batch_next, name="batch_next"),
    path("w/task/<uuid:task_id>/", views.task_preview, name="task_preview"),
    path("w/a/<uuid:assignment_id>/", views.assignment_work, name="assignment"),
    path("w/a/<uuid:assignment_id>/return/", views.assignment_return, name="assignment_return"),
    # MTurk's ExternalQuestion frame.
    path("mturk/task/<uuid:task_id>/", views.mturk_task, name="mturk_task"),
    path("mturk/task/<uuid:task_id>/submit/", views.mturk_submit, name="mturk_submit"),
]
