# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test check format install demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	DEBUG=1 SECURE_SSL=0 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 SECURE_SSL=0 $(BIN)/python manage.py demo

run: demo
	DEBUG=1 SECURE_SSL=0 $(BIN)/python manage.py serve_demo 127.0.0.1:8000

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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

clean:
	rm -rf var media screenshots .pytest_cache
