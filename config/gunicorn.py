"""gunicorn's settings for unitscope: `gunicorn --config config/gunicorn.py --bind HOST:PORT`, what
`make serve` runs. Each can be overridden from the environment (gunicorn also reads GUNICORN_CMD_ARGS).

Sync workers, one request at a time each: no page loads a model or waits on a worker (runs are Celery's),
so a request is short and (2 x cores) + 1 processes keep the cores busy while some wait on the database.
Static files come from whitenoise inside the app (`collectstatic` first); media only through the app's
permission view (`runs.views.media_file`), never from a directory the server exposes.
"""

from __future__ import annotations

import multiprocessing
import os

wsgi_app = "config.wsgi:application"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * multiprocessing.cpu_count() + 1)
threads = int(os.environ.get("GUNICORN_THREADS") or 1)
# A worker that answers nothing for this long is killed and replaced: longer than the slowest page (a large
# batch's CSV export), shorter than a person's patience.
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 60)
graceful_timeout = 30
# Behind a proxy that keeps connections open (nginx, a load balancer); the default 2 s is for direct clients.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE") or 5)
# Replace each worker after this many requests (jittered, so they do not restart together): memory that a
# long-lived process accumulates is given back.
max_requests = 2000
max_requests_jitter = 200
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
# The proxies whose X-Forwarded-* headers gunicorn trusts (Django's own rule is BEHIND_PROXY, PROXY_COUNT).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
