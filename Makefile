# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
# `make run PORT=8001` (or `make serve PORT=8001`) when port 8000 is taken.
PYTHON ?= python3
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Test processes (pytest-xdist; each test file stays in one process): most tests use one core, so two
# processes on this 2-core machine halve the wall time. PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= auto

.PHONY: run serve test check format install demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing unitscope and its dependencies into $(VENV); the first time downloads torch (a few minutes)."
	$(BIN)/python -m pip install --progress-bar on --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	DEBUG=1 SECURE_SSL=0 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 SECURE_SSL=0 $(BIN)/python manage.py demo --site http://127.0.0.1:$(PORT)

run: demo
	DEBUG=1 SECURE_SSL=0 SITE_URL=http://127.0.0.1:$(PORT) $(BIN)/python manage.py serve_demo 127.0.0.1:$(PORT)

# Production-like on this machine: DEBUG off, gunicorn with config/gunicorn.py, static files collected and
# served by whitenoise, media only through the app's permission view. The secret key is SECRET_KEY when set,
# else one generated once into var/secret-key (kept, so that sessions survive a restart; never the public
# development key). Plain HTTP on 127.0.0.1 unless SECURE_SSL=1 (behind a TLS proxy). Runs need a broker and
# Celery workers (CELERY_BROKER_URL, README: Workers): gunicorn starts no worker thread.
SECRET_FILE := var/secret-key
SERVE_ENV = DEBUG=0 SECRET_KEY="$${SECRET_KEY:-$$(cat $(SECRET_FILE))}" SECURE_SSL="$${SECURE_SSL:-0}"

$(SECRET_FILE):
	mkdir -p $(@D)
	umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

serve: $(STAMP) $(SECRET_FILE)
	$(SERVE_ENV) $(BIN)/python manage.py migrate --noinput
	$(SERVE_ENV) $(BIN)/python manage.py collectstatic --noinput
	$(SERVE_ENV) $(BIN)/gunicorn --config config/gunicorn.py --bind 127.0.0.1:$(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Lint and format (ruff), types (mypy with django-stubs), import contracts (import-linter, see pyproject.toml).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=1 $(BIN)/mypy  # the Django plugin loads the settings, which need DEBUG or a SECRET_KEY
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/dissect.py
	$(BIN)/python bench/cam.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/web.py

clean:
	rm -rf var media staticfiles screenshots .pytest_cache
