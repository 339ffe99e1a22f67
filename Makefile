# edcrm: `make run` serves the app on the embedded defaults, `make test` runs every test.
# Both start from nothing: they create the project's own virtualenv (.venv) and install into it, at the
# versions of constraints.txt, again only when pyproject.toml or constraints.txt changes. `make test`
# also installs the Chromium its browser tests drive, when it can (see `chromium` below), and the Node
# tus clients of tests/clients (see `node-clients`).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FLASK  := $(BIN)/flask --app app
PORT   ?= 5000
# Loopback only: the demo data's passwords are public. `make run HOST=0.0.0.0` to reach it from elsewhere.
HOST   ?= 127.0.0.1
export PORT HOST

#: The browsers tests/browser/conftest.py looks for on PATH (CHROMIUM_PATH names any other).
CHROMIUMS := chromium chromium-browser google-chrome-stable google-chrome

.PHONY: run test lint format chromium node-clients bench-jobs bench-import bench-recordings clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c constraints.txt
	# The slimmed botocore data S3 clients load (10 MB less per process): see edcrm/storage/botocore_data.py.
	$(BIN)/python -m edcrm.storage.botocore_data
	touch $@

run: $(STAMP)
	$(FLASK) db upgrade
	$(FLASK) edcrm seed-demo --if-empty
	@echo
	@echo "To see the demo logins again (passwords reset, new API tokens): $(FLASK) edcrm seed-demo"
	@echo "edcrm is starting on http://$(HOST):$(PORT)  (Ctrl-C stops it)"
	@echo
	$(BIN)/gunicorn -c gunicorn.conf.py app:app

# The unit suite on every core (its tests share nothing), then the suites on real services and processes,
# which start servers and workers of their own, one test at a time.
UNIT := not integration and not browser and not hostile

test: $(STAMP) chromium node-clients
	$(BIN)/pytest -n auto -m "$(UNIT)"
	$(BIN)/pytest -m "not ($(UNIT))"

# The browser tests drive Debian's chromium. When no Chromium is there and this user may install
# packages (root, or sudo without a password), install it; otherwise say so: the browser tests then skip
# with the reason (and fail under CI=true).
chromium:
	@if [ -n "$${CHROMIUM_PATH:-}" ]; then exit 0; fi; \
	for name in $(CHROMIUMS); do command -v $$name >/dev/null 2>&1 && exit 0; done; \
	if [ "$$(id -u)" -eq 0 ]; then as_root=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root="sudo -n"; \
	else echo "make: no Chromium, and installing one needs root or passwordless sudo: the browser tests will skip"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "make: no Chromium, and no apt-get to install Debian's: the browser tests will skip"; exit 0; fi; \
	echo "make: installing Debian's chromium for the browser tests"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$as_root apt-get install -y -q --no-install-recommends chromium \
		|| { $$as_root apt-get update -q && $$as_root apt-get install -y -q --no-install-recommends chromium; } \
		|| echo "make: chromium could not be installed: the browser tests will skip"

# The Node clients of the tus tests (tus-js-client, Uppy, the reference @tus/server): `npm ci` of
# tests/clients/package-lock.json, again only when the lock file is newer than node_modules. Without npm,
# say so: those tests then skip with the reason (and fail under CI=true).
CLIENTS := tests/clients
node-clients:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "make: no npm: the tests of tus-js-client, Uppy and the reference tus server will skip"; exit 0; fi; \
	if [ ! -f $(CLIENTS)/node_modules/.package-lock.json ] \
		|| [ $(CLIENTS)/package-lock.json -nt $(CLIENTS)/node_modules/.package-lock.json ]; then \
		echo "make: npm ci in $(CLIENTS)"; \
		npm ci --no-audit --no-fund --prefix $(CLIENTS) \
			|| echo "make: npm ci failed: the tests of the Node tus clients will skip"; \
	fi

# ruff, mypy (configured in pyproject.toml) and import-linter's layer contracts.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

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
	rm -rf $(VENV) *.egg-info build .pytest_cache .ruff_cache .mypy_cache tests/artifacts

# `make bench-tus BENCH_ARGS="--s3 rgw --size-mb 64"`; needs PostgreSQL, Redis, Node.js and the test
# clients (`npm ci --prefix tests/clients`); see bench/tus.py.
.PHONY: bench-tus
bench-tus: $(STAMP) node-clients
	$(BIN)/python bench/tus.py $(BENCH_ARGS)
