# Gateway: the two commands a fresh machine needs, and a few for developers.
# Every target installs what it needs first (scripts/bootstrap is quick when nothing changed).
.PHONY: run test test-unit test-e2e bench lint format help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## install into .venv and start the gateway on embedded defaults (./var, 127.0.0.1:8080/8081)
	@scripts/bootstrap
	.venv/bin/gateway run $(ARGS)

# `make test`'s parallel pass: pytest-xdist worker processes. More than the cores: most of a test's
# time is spent waiting on the processes it started (tests/support/parallel.py).
JOBS ?= 4

test: ## install everything the tests need (pip and Debian packages), lint, and run the whole suite
	@scripts/bootstrap test
	@scripts/install-test-deps
	@$(MAKE) --no-print-directory lint
	@# Each pass's pytest processes import and assertion-rewrite every test module, and the tests
	@# start hundreds of gateway and agent processes: with PYTHONDONTWRITEBYTECODE set (as on our
	@# development machines) all of that is compiled again in every process (about 12 s of CPU per pytest process).
	@# The tests write their bytecode to __pycache__ (ignored by git) whatever that variable says.
	@status=0; \
	export PYTHONDONTWRITEBYTECODE=; \
	set -x; \
	.venv/bin/python -m pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder --serial-tests=without $(ARGS) || status=1; \
	.venv/bin/python -m pytest --serial-tests=only $(ARGS) || status=1; \
	exit $$status

lint: ## mypy strict on every package, ruff lint + format check, the layering test
	@scripts/bootstrap test
	.venv/bin/mypy
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_layering.py

format: ## apply ruff's fixes and formatting
	@scripts/bootstrap test
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test-unit: ## the suite without the end-to-end tests
	@scripts/bootstrap test
	.venv/bin/python -m pytest -m "not e2e" $(ARGS)

test-e2e: ## only the end-to-end tests (real processes on loopback)
	@scripts/bootstrap test
	@scripts/install-test-deps
	.venv/bin/python -m pytest -m e2e $(ARGS)

bench: ## benchmarks against mitmdump and a direct connection (see docs/performance.md)
	@scripts/bootstrap test
	bench/run $(ARGS)
