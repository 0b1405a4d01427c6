"""Moved to ``tests.support.devices``; re-exported until the test files written meanwhile import it
from there."""

from tests.support.devices import (
    EMAIL,
    HOSTNAME,
    SERIAL,
    DeviceCa,
    Lab,
    make_lab,
    pem,
    rule_body,
    token_secret,
)

__all__ = ["EMAIL", "HOSTNAME", "SERIAL", "DeviceCa", "Lab", "make_lab", "pem", "rule_body", "token_secret"]
