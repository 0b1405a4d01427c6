"""The policy lab: a YAML policy file for `gateway run --policies` against the e2e origin, the ids
and names the tests look for, and readers for what the gateway records (request log, metrics,
the in-use CA's fingerprint)."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.wait import poll

from .gateway_process import GatewayProcess

# Hosts (all resolved to the origin by the lab hosts file).
BLOCKED = "blocked.origin.test"
REDIRECTED = "old.origin.test"
PASSTHROUGH = "passthrough.origin.test"
APP = "app.origin.test"
UNMATCHED = "plain.origin.test"
UNTRUSTED_DEFAULT = "untrusted.test"  # no rule: the default handling (block page)
UNTRUSTED_PASS = "pass.untrusted.test"  # allow rule with untrusted_cert pass_through
UNTRUSTED_ERROR = "error.untrusted.test"  # allow rule with untrusted_cert error (526)


@dataclass(frozen=True)
class FileRule:
    id: str
    name: str
    precedence: int


OFF_RULE = FileRule("7e2e0000-0000-4000-8000-000000000010", "e2e do not inspect passthrough", 10)
BLOCK_RULE = FileRule("7e2e0000-0000-4000-8000-000000000100", "e2e block blocked.origin.test", 100)
REDIRECT_RULE = FileRule("7e2e0000-0000-4000-8000-000000000200", "e2e redirect old.origin.test", 200)
PASS_RULE = FileRule("7e2e0000-0000-4000-8000-000000000300", "e2e pass untrusted through", 300)
ERROR_RULE = FileRule("7e2e0000-0000-4000-8000-000000000310", "e2e untrusted origin is an error", 310)
ACCESS_POLICY_ID = "7e2e0000-0000-4000-8000-000000001000"
ACCESS_POLICY_NAME = "e2e employees"
ACCESS_APP_NAME = "e2e intranet"
BLOCK_REASON = "Blocked in the e2e lab: this host is off limits."


def redirect_target(origin_port: int) -> str:
    return f"https://www.example.com:{origin_port}/moved"


def policy_yaml(origin_port: int) -> str:
    return f"""\
# e2e lab rules: one of each action, two untrusted-certificate handlings, one Access application.
gateway_rules:
  - id: {OFF_RULE.id}
    name: {OFF_RULE.name}
    precedence: {OFF_RULE.precedence}
    action: "off"
    traffic: net.sni.host == "{PASSTHROUGH}"
  - id: {BLOCK_RULE.id}
    name: {BLOCK_RULE.name}
    precedence: {BLOCK_RULE.precedence}
    action: block
    traffic: http.request.host == "{BLOCKED}"
    rule_settings:
      block_page_enabled: true
      block_reason: "{BLOCK_REASON}"
  - id: {REDIRECT_RULE.id}
    name: {REDIRECT_RULE.name}
    precedence: {REDIRECT_RULE.precedence}
    action: redirect
    traffic: http.request.host == "{REDIRECTED}"
    rule_settings:
      redirect:
        target_uri: "{redirect_target(origin_port)}"
        preserve_path_and_query: true
  - id: {PASS_RULE.id}
    name: {PASS_RULE.name}
    precedence: {PASS_RULE.precedence}
    action: allow
    traffic: http.request.host == "{UNTRUSTED_PASS}"
    rule_settings:
      untrusted_cert: {{action: pass_through}}
  - id: {ERROR_RULE.id}
    name: {ERROR_RULE.name}
    precedence: {ERROR_RULE.precedence}
    action: allow
    traffic: http.request.host == "{UNTRUSTED_ERROR}"
    rule_settings:
      untrusted_cert: {{action: error}}
access_policies:
  - id: {ACCESS_POLICY_ID}
    name: {ACCESS_POLICY_NAME}
    decision: allow
    include: [{{email_domain: {{domain: example.com}}}}]
access_applications:
  - type: self_hosted
    name: {ACCESS_APP_NAME}
    domain: {APP}
    policies: [{ACCESS_POLICY_ID}]
"""


@dataclass
class PolicyLab:
    gateway: GatewayProcess
    policy_file: Path
    origin_port: int

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.origin_port}{path}"

    @property
    def request_log(self) -> Path:
        return self.gateway.data_dir / "requests.jsonl"

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.request_log.exists():
            return []
        return [json.loads(line) for line in self.request_log.read_text().splitlines() if line]

    def account(self) -> str:
        with self.gateway.api() as api:
            response = api.get("/accounts")
        assert response.status_code == 200, response.text
        return str(response.json()["result"][0]["id"])

    def in_use_fingerprint(self) -> str:
        with self.gateway.api() as api:
            response = api.get(f"/accounts/{self.account()}/gateway/certificates")
        assert response.status_code == 200, response.text
        in_use = [c for c in response.json()["result"] if c["in_use"]]
        assert len(in_use) == 1, response.json()["result"]
        return str(in_use[0]["fingerprint"])


def settled_log_lines(lab: PolicyLab, *, timeout: float = 5) -> list[dict[str, Any]]:
    """The request log once it stops growing: the gateway writes it in batches (at most every
    0.5 s), so lines of earlier requests may still be on their way."""
    deadline = time.monotonic() + timeout
    lines = lab.log_lines()
    while time.monotonic() < deadline:
        time.sleep(0.7)  # real time on purpose: longer than a batch (0.5 s), then see if it grew
        again = lab.log_lines()
        if len(again) == len(lines):
            return again
        lines = again
    return lines


def wait_log_lines(lab: PolicyLab, count: int, *, timeout: float = 5) -> list[dict[str, Any]]:
    """The log once it holds at least `count` lines (it is written as each response goes out;
    polling only absorbs scheduling noise), bounded by `timeout`."""
    return poll(lab.log_lines, lambda lines: len(lines) >= count, timeout)


def metric_counts(gw: GatewayProcess, counter: str, *labels: str) -> Counter[tuple[str, ...]]:
    """The samples of `counter`_total from GET /metrics, by the values of `labels`."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(f"{gw.admin_url}/metrics")
    assert response.status_code == 200, response.text[:300]
    counts: Counter[tuple[str, ...]] = Counter()
    for family in text_string_to_metric_families(response.text):
        if family.name != counter:
            continue
        for sample in family.samples:
            if sample.name == f"{counter}_total":
                counts[tuple(sample.labels[label] for label in labels)] = int(sample.value)
    return counts


def decision_counts(gw: GatewayProcess) -> Counter[tuple[str, ...]]:
    """gateway_decisions_total by (action, stage)."""
    return metric_counts(gw, "gateway_decisions", "action", "stage")


class KeepAlive:
    """One HTTPS connection through the proxy (CONNECT tunnel), reused for every request."""

    def __init__(
        self, proxy_port: int, host: str, port: int, ctx: ssl.SSLContext,
        *, proxy_headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        """`proxy_headers` go on the CONNECT only (such as Proxy-Authorization)."""
        self.conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, timeout=10, context=ctx)
        self.conn.set_tunnel(host, port, headers=proxy_headers)
        self.host = host

    def get(self, path: str = "/") -> tuple[int, str]:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read().decode(errors="replace")
        assert not response.will_close, "the proxy closed the keep-alive connection"
        return response.status, body

    @property
    def socket_id(self) -> int:
        assert self.conn.sock is not None
        return id(self.conn.sock)

    def close(self) -> None:
        self.conn.close()
