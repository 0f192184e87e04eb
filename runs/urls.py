from django.urls import path

from runs import paint, views

app_name = "runs"

urlpatterns = [
    path("runs/", views.run_list, name="run_list"),
    path("runs/new/", views.run_create, name="run_create"),
    path("runs/compare/", views.run_compare, name="run_compare"),
    path("runs/series/new/", views.run_series_create, name="run_series_create"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/status.json", views.run_status, name="run_status"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/cam/", views.run_cam, name="run_cam"),
    path("runs/<int:run_id>/paint/", paint.run_paint, name="paint"),
    path("runs/<int:run_id>/featviz/", views.run_featviz, name="run_featviz"),
    path("runs/<int:run_id>/layers/<str:layer>/units/<int:number>/", views.run_unit, name="run_unit"),
    path("networks/new/", views.network_create, name="network_create"),
    path("probe-sets/new/", views.probe_set_create, name="probe_set_create"),
    # FieldFile.url of local media is MEDIA_URL + key, so this prefix is MEDIA_URL (fixed at /media/).
    path("media/<path:key>", views.media_file, name="media"),
]
