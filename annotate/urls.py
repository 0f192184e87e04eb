from django.urls import include, path

from annotate.views import audit, comparison, images, qualifications, requester, units, worker

app_name = "annotate"

urlpatterns = [
    path("", requester.dashboard, name="dashboard"),
    path("batches/new/", requester.batch_create, name="batch_create"),
    path("batches/<uuid:batch_id>/", requester.batch_detail, name="batch_detail"),
    path("batches/<uuid:batch_id>/review/", requester.batch_review, name="batch_review"),
    path("batches/<uuid:batch_id>/export.<str:fmt>", requester.batch_export, name="batch_export"),
    path("batches/<uuid:batch_id>/audit.csv", audit.batch_audit_export, name="batch_audit_export"),
    path("crowd-workers/<uuid:worker_id>/", requester.crowd_worker_detail, name="crowd_worker"),
    path("crowd-workers/<uuid:worker_id>/block/", requester.crowd_worker_block, name="crowd_worker_block"),
    path(
        "crowd-workers/<uuid:worker_id>/unblock/", requester.crowd_worker_unblock, name="crowd_worker_unblock"
    ),
    path("batches/<uuid:batch_id>/comparison/", comparison.batch_comparison, name="batch_comparison"),
    path(
        "batches/<uuid:batch_id>/comparison/<slug:table>.<str:fmt>",
        comparison.batch_comparison_export,
        name="batch_comparison_export",
    ),
    path(
        "batches/<uuid:batch_id>/comparison/settings/",
        comparison.batch_comparison_settings,
        name="batch_comparison_settings",
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
    path("units/<int:unit_id>/", units.unit_detail, name="unit_detail"),
    path("qualifications/", qualifications.qualification_list, name="qualification_list"),
    path("qualifications/new/", qualifications.qualification_create, name="qualification_create"),
    path(
        "qualifications/<uuid:qualification_id>/",
        qualifications.qualification_detail,
        name="qualification_detail",
    ),
    # Worker pages (local link and Prolific study URL; the task images serve MTurk's frame too).
    path("w/<uuid:batch_id>/", worker.batch_start, name="batch_start"),
    path("w/<uuid:batch_id>/next/", worker.batch_next, name="batch_next"),
    path("w/<uuid:batch_id>/me/<str:token>/", worker.worker_link, name="worker_link"),
    path("w/<uuid:batch_id>/status/", worker.worker_status, name="worker_status"),
    path("w/<uuid:batch_id>/test/", qualifications.qualification_test, name="qualification_test"),
    path(
        "w/test-item/<uuid:item_id>/image/<int:rank>/",
        qualifications.qualification_item_image,
        name="qualification_item_image",
    ),
    path("w/task/<uuid:task_id>/", worker.task_preview, name="task_preview"),
    path("w/task/<uuid:task_id>/image/<int:rank>/", images.task_image, name="task_image"),
    path("w/task/<uuid:task_id>/featviz/<int:index>/", worker.task_featviz, name="task_featviz"),
    path("w/a/<uuid:assignment_id>/", worker.assignment_work, name="assignment"),
    path("w/a/<uuid:assignment_id>/return/", worker.assignment_return, name="assignment_return"),
    path("w/a/<uuid:assignment_id>/ref/<int:number>/", worker.trial_reference, name="trial_reference"),
    path("w/a/<uuid:assignment_id>/viz/<int:number>/", worker.trial_featviz, name="trial_featviz"),
    path("w/a/<uuid:assignment_id>/q/<str:side>/", worker.trial_query, name="trial_query"),
    path("", include("annotate.providers.mturk.urls")),
    path("", include("annotate.providers.prolific.urls")),
]
