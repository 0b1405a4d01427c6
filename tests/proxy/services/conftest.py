"""Every test here that uses ``store`` runs on SQLite and on PostgreSQL."""

import pytest

from tests.support.fixtures import BACKENDS, both_backends

store_url = pytest.fixture(params=BACKENDS)(both_backends)
