"""How the suite runs in parallel (``make test``: pytest-xdist's ``-n``), in two passes:

1. ``pytest -n N --serial-tests=without``: every test but the ``serial`` ones, spread over N
   worker processes by module (``--dist loadfile``: a module's fixtures are set up once, on one
   worker);
2. ``pytest --serial-tests=only``: the ``serial`` ones, one at a time with nothing else running.

``@pytest.mark.serial`` marks a test whose assertion is a time bound tight enough that other
tests' load could break it (microseconds per call, "answered within 2 s"): it keeps that bound,
measured on a machine doing nothing else, as before the suite ran in parallel. The default,
``--serial-tests=with``, runs everything, as plain ``pytest`` always did.

Modules of ``tests/e2e`` and ``tests/reliability`` (real processes, seconds to minutes each) are
collected first, so that the parallel pass hands the longest work out first and ends on short
unit modules, not on one long module with the other workers idle."""

from __future__ import annotations

import os
import signal

import pytest

MARK = "serial"
_SLOW_FOLDERS = ("tests/e2e/", "tests/reliability/")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--serial-tests",
        choices=("with", "without", "only"),
        default="with",
        help="run the @pytest.mark.serial tests with the others (default), leave them out, or run only them",
    )


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # execnet starts the workers with SIGINT and SIGQUIT ignored, and an ignored signal stays
        # ignored across exec: every process a test starts would ignore them too, and a test that
        # stops one with SIGINT (Ctrl-C: `gateway demo`, `gateway logs --follow`) would wait for
        # nothing. The worker takes Python's own defaults back, as a plain pytest run has them.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    config.addinivalue_line(
        "markers", f"{MARK}: a tight time bound; `make test` runs it after the parallel pass, alone"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable: each module keeps its order, and every xdist worker collects the same order.
    items.sort(key=lambda item: not item.nodeid.startswith(_SLOW_FOLDERS))
    which = config.getoption("--serial-tests")
    if which == "with":
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        serial = item.get_closest_marker(MARK) is not None
        (keep if serial == (which == "only") else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """`--serial-tests=only` on a selection with no serial test in it (`make test ARGS=tests/x.py`)
    has nothing to do: that pass succeeds instead of exiting 5 (no tests)."""
    if (
        session.config.getoption("--serial-tests") == "only"
        and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
    ):
        session.exitstatus = pytest.ExitCode.OK
