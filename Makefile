# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test install demo bench clean

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

bench: $(STAMP)
	$(BIN)/python bench/dissect.py
	$(BIN)/python bench/cam.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf var media screenshots .pytest_cache
