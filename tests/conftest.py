"""Suite-wide settings, and the shared fixtures of ``tests/support/fixtures.py`` registered once for
every test folder."""

import os

from hypothesis import settings

pytest_plugins = ["tests.support.fixtures", "tests.support.parallel"]

# In CI, property tests run the same examples every time: a red CI then always means a change,
# never the luck of the draw (locally they keep exploring new examples).
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
