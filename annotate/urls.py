from django.urls import include, path

from annotate.views import comparison, images, requester, worker

app_name = "annotate"

urlpatterns = [
    path("", requester.dashboard, name="dashboard"),
    path("batches/new/", requester.batch_create, name="batch_create"),
    path("batches/<uuid:batch_id>/", requester.batch_detail, name="batch_detail"),
    path("batches/<uuid:batch_id>/review/", requester.batch_review, name="batch_review"),
    path("batches/<uuid:batch_id>/export.<str:fmt>", requester.batch_export, name="batch_export"),
    path(
        "batches/<uuid:batch_id>/workers/<uuid:worker_id>/block/",
        requester.crowd_worker_block,
        name="worker_block",
    ),
    path("batches/<uuid:batch_id>/comparison/", comparison.batch_comparison, name="batch_comparison"),
    path(
        "batches/<uuid:batch_id>/comparison/<slug:table>.<str:fmt>",
        comparison.batch_comparison_export,
        name="batch_comparison_export",
    ),
    path(
        "batches/<uuid:batch_id>/verification/new/",
        comparison.batch_verification_create,
        name="batch_verification_create",
    ),
    path("runs/<int:run_id>/comparison/", comparison.run_comparison, name="run_comparison"),
    path(
        "runs/<int:run_id>/comparison/<slug:table>.<str:fmt>",
        comparison.run_comparison_export,
        name="run_comparison_export",
    ),
    path("batches/<uuid:batch_id>/<str:action>/", requester.batch_action, name="batch_action"),
    # Worker pages (local link and Prolific study URL; the task images serve MTurk's frame too).
    path("w/<uuid:batch_id>/", worker.batch_start, name="batch_start"),
    path("w/<uuid:batch_id>/next/", worker.batch_next, name="batch_next"),
    path("w/<uuid:batch_id>/me/<str:token>/", worker.worker_link, name="worker_link"),
    path("w/task/<uuid:task_id>/", worker.task_preview, name="task_preview"),
    path("w/task/<uuid:task_id>/image/<int:rank>/", images.task_image, name="task_image"),
    path("w/a/<uuid:assignment_id>/", worker.assignment_work, name="assignment"),
    path("w/a/<uuid:assignment_id>/return/", worker.assignment_return, name="assignment_return"),
    path("", include("annotate.providers.mturk.urls")),
]
