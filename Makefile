# edcrm: `make run` serves the app on the embedded defaults, `make test` runs every test.
# Both start from nothing: they create the project's own virtualenv (.venv) and install into it, at the
# versions of constraints.txt, again only when pyproject.toml or constraints.txt changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FLASK  := $(BIN)/flask --app app
PORT   ?= 5000
# Loopback only: the demo data's passwords are public. `make run HOST=0.0.0.0` to reach it from elsewhere.
HOST   ?= 127.0.0.1
export PORT HOST

.PHONY: run test lint format bench-jobs bench-import bench-recordings clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c constraints.txt
	touch $@

run: $(STAMP)
	$(FLASK) db upgrade
	$(FLASK) edcrm seed-demo --if-empty
	@echo
	@echo "To see the demo logins again (passwords reset, new API tokens): $(FLASK) edcrm seed-demo"
	@echo "edcrm is starting on http://$(HOST):$(PORT)  (Ctrl-C stops it)"
	@echo
	$(BIN)/gunicorn -c gunicorn.conf.py app:app

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `make bench-jobs BENCH_ARGS="--n 1000"`; needs PostgreSQL and Redis (see bench/jobs.py).
bench-jobs: $(STAMP)
	$(BIN)/python bench/jobs.py $(BENCH_ARGS)

# `make bench-recordings BENCH_ARGS="--size-mb 256"`; needs PostgreSQL and Redis (see bench/recordings.py).
bench-recordings: $(STAMP)
	$(BIN)/python bench/recordings.py $(BENCH_ARGS)

# `make bench-import BENCH_ARGS="--rows 100000"`; needs PostgreSQL and Redis (see bench/import.py).
bench-import: $(STAMP)
	$(BIN)/python bench/import.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info build .pytest_cache .ruff_cache tests/artifacts
