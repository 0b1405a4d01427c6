"""The demo's policies and their tests, written into the demo directory for ``gateway run
--policies``. The same text is in ``policies/examples/demo/demo.yaml`` and ``demo-tests.yaml`` (a test
keeps them equal), so ``gateway policy test`` runs them from a checkout too."""

from __future__ import annotations

from pathlib import Path

POLICIES = """\
# The policies of `gateway demo` (docs/demo.md): the demo lab's four sites.
# Check them with `gateway policy test policies/examples/demo/demo.yaml policies/examples/demo/demo-tests.yaml`.
#
# secure.demo.test needs the demo laptop's client certificate, checked by the agent and verified by
# the server (a client_certificate_v2 posture rule: issued by the Gateway Demo Device CA, CN
# demo-laptop.demo.test, proof of possession of its key). The demo makes that rule through the
# admin API when it starts, so its id is not known here; `common_name` holds exactly while such a
# server-verified posture pass is current, so it needs the passing check all the same.

gateway_rules:
  - id: 9d3e0c1a-0000-4000-8000-0000000de001
    name: Do not inspect the bank
    description: The browser sees the bank's own certificate; the gateway passes TLS through.
    precedence: 10
    action: "off"
    traffic: net.sni.host == "bank.demo.test"
  - id: 9d3e0c1a-0000-4000-8000-0000000de002
    name: Block blocked.demo.test
    precedence: 100
    action: block
    traffic: any(http.request.domains[*] == "blocked.demo.test")
    rule_settings:
      block_page_enabled: true
      block_reason: The demo blocks this host with a Gateway HTTP rule.

access_policies:
  - id: 9d3e0c1a-0000-4000-8000-0000000de101
    name: The demo laptop with its client certificate
    decision: allow
    include:
      - everyone: {}
    require:
      - common_name: {common_name: demo-laptop.demo.test}

access_applications:
  - id: 9d3e0c1a-0000-4000-8000-0000000de201
    type: self_hosted
    name: Secure demo app
    domain: secure.demo.test
    policies: [9d3e0c1a-0000-4000-8000-0000000de101]
"""

TESTS = """\
# Policy tests for demo.yaml (`gateway demo`'s policies).
# Run: gateway policy test policies/examples/demo/demo.yaml policies/examples/demo/demo-tests.yaml
tests:
  - name: www is allowed
    request: {method: GET, url: "https://www.demo.test/"}
    expect: {action: allow}
  - name: blocked is blocked by its rule
    request: {method: GET, url: "https://blocked.demo.test/anything"}
    expect: {action: block, rule: Block blocked.demo.test}
  - name: the bank is not inspected
    request: {method: GET, url: "https://bank.demo.test/"}
    expect: {action: "off", rule: Do not inspect the bank}
  - name: the demo laptop with a verified client certificate reaches the secure app
    request: {method: GET, url: "https://secure.demo.test/"}
    identity: {email: trainer@demo.test, certificate_cn: demo-laptop.demo.test}
    expect: {action: allow, access: allow}
  - name: the same device without a passing certificate check is denied
    request: {method: GET, url: "https://secure.demo.test/"}
    identity: {email: trainer@demo.test}
    expect: {action: allow, access: deny}
  - name: another device's certificate is not enough
    request: {method: GET, url: "https://secure.demo.test/"}
    identity: {certificate_cn: someone-else.demo.test}
    expect: {action: allow, access: deny}
"""


def write(directory: Path) -> Path:
    """``demo.yaml`` and ``demo-tests.yaml`` in ``directory``; returns the policy file."""
    (directory / "demo-tests.yaml").write_text(TESTS)
    policy_file = directory / "demo.yaml"
    policy_file.write_text(POLICIES)
    return policy_file
