# Gateway: the two commands a fresh machine needs, and a few for developers.
# Every target installs what it needs first (scripts/bootstrap is quick when nothing changed).
.PHONY: run test test-unit test-e2e bench lint help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## install into .venv and start the gateway on embedded defaults (./var, 127.0.0.1:8080/8081)
	@scripts/bootstrap
	.venv/bin/gateway run $(ARGS)

test: ## install everything the tests need (pip and Debian packages) and run the whole suite
	@scripts/bootstrap test
	@scripts/install-test-deps
	.venv/bin/python -m pytest $(ARGS)

test-unit: ## the suite without the end-to-end tests
	@scripts/bootstrap test
	.venv/bin/python -m pytest -m "not e2e" $(ARGS)

bench: ## benchmarks against mitmdump and a direct connection (see docs/performance.md)
	@scripts/bootstrap test
	bench/run $(ARGS)
