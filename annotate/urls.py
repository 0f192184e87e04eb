from django.urls import path

from annotate import views
from annotate.views import runs as run_views
from annotate.views import comparison as comparison_views

app_name = "annotate"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("batches/new/", views.batch_create, name="batch_create"),
    path("batches/<uuid:batch_id>/", views.batch_detail, name="batch_detail"),
    path("batches/<uuid:batch_id>/review/", views.batch_review, name="batch_review"),
    path("batches/<uuid:batch_id>/export.<str:fmt>", views.batch_export, name="batch_export"),
    path("batches/<uuid:batch_id>/workers/<uuid:worker_id>/block/", views.worker_block, name="worker_block"),
    path("batches/<uuid:batch_id>/comparison/", comparison_views.batch_comparison, name="batch_comparison"),
    path("batches/<uuid:batch_id>/comparison/<slug:table>.<str:fmt>", comparison_views.batch_comparison_export,
         name="batch_comparison_export"),
    path("batches/<uuid:batch_id>/verification/new/", comparison_views.batch_verification_create,
         name="batch_verification_create"),
    path("runs/<int:run_id>/comparison/", comparison_views.run_comparison, name="run_comparison"),
    path("runs/<int:run_id>/comparison/<slug:table>.<str:fmt>", comparison_views.run_comparison_export,
         name="run_comparison_export"),
    path("batches/<uuid:batch_id>/<str:action>/", views.batch_action, name="batch_action"),
    path("runs/", run_views.run_list, name="run_list"),
    path("runs/new/", run_views.run_create, name="run_create"),
    path("runs/<int:run_id>/", run_views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/status.json", run_views.run_status, name="run_status"),
    path("runs/<int:run_id>/cancel/", run_views.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/cam/", run_views.run_cam, name="run_cam"),
    path("networks/new/", run_views.network_create, name="network_create"),
    path("probe-sets/new/", run_views.probe_set_create, name="probe_set_create"),
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
