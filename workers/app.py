"""The Celery application, configured from Django settings (the `CELERY_` names in config/settings.py).

Tasks live beside the services they call (`runs.tasks`, `annotate.tasks`); this package holds only the app,
its routing (in the settings) and the in-process worker of the embedded default.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("unitscope")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["runs", "annotate"], related_name="tasks")
