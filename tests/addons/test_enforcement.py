from dataclasses import dataclass

import pytest
from mitmproxy import connection, tls
from mitmproxy.proxy import context
from mitmproxy.test import taddons, tflow, tutils
from OpenSSL import SSL

from addons.enforcement import DECISION, DecisionRecord, Enforcer, PolicySnapshot
from addons.pages import BlockPage
from policies.access import AccessEngine
from policies.engine import GatewayEngine
from policies.facts import Identity, PostureNote, PostureState
from policies.yaml_io import load
from proxy.metrics import Metrics

POLICIES = """
gateway_rules:
  - {name: Pass the bank through, precedence: 10, action: "off", traffic: 'net.sni.host == "bank.test"'}
  - name: Block gambling
    precedence: 100
    action: block
    traffic: 'any(http.request.domains[*] == "casino.test")'
    rule_settings: {block_page_enabled: true, block_reason: No gambling at work.}
  - name: Move the legacy host
    precedence: 200
    action: redirect
    traffic: 'http.request.host == "old.test"'
    rule_settings: {redirect: {target_uri: "https://new.test/base", preserve_path_and_query: true}}
  - name: Lab origin with a self-signed certificate
    precedence: 300
    action: allow
    traffic: 'http.request.host == "lab.test"'
    rule_settings: {untrusted_cert: {action: pass_through}}
  - name: Strict origin
    precedence: 400
    action: allow
    traffic: 'http.request.host == "strict.test"'
    rule_settings: {untrusted_cert: {action: error}}
access_applications:
  - {id: 5b0e2c7e-0000-4000-8000-000000000001, type: self_hosted, name: Intranet, domain: intranet.test, policies: [5b0e2c7e-0000-4000-8000-0000000000a1]}
access_policies:
  - {id: 5b0e2c7e-0000-4000-8000-0000000000a1, name: Staff only, decision: allow, include: [{email_domain: {domain: corp.test}}]}
"""


@dataclass(frozen=True)
class Engines:
    gateway: GatewayEngine
    access: AccessEngine


@pytest.fixture(scope="module")
def engines() -> Engines:
    policy_set = load(POLICIES)
    return Engines(
        GatewayEngine.build(policy_set.gateway_rules),
        AccessEngine.build(policy_set.access_applications, policy_set.access_policies),
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def enforcer(engines: Engines, metrics: Metrics) -> Enforcer:
    addon = Enforcer(metrics)
    addon.use(
        PolicySnapshot(engines, block_page=BlockPage(header_text="Acme says no", background_color="#ffeecc"))
    )
    return addon


def _flow(host: str, path: str = "/", accept: str = "*/*", error: str | None = None):
    flow = tflow.tflow(req=tutils.treq(host=host, port=443, scheme=b"https", path=path.encode()))
    flow.request.headers["host"] = host
    flow.request.headers["accept"] = accept
    flow.client_conn.sni = host
    flow.server_conn.error = error
    return flow


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_block_page_names_rule_reason_and_host(enforcer: Enforcer, metrics: Metrics) -> None:
    with taddons.context(enforcer):
        flow = _flow("www.casino.test")
        enforcer.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    text = flow.response.get_text()
    assert "Block gambling" in text and "No gambling at work." in text and "www.casino.test" in text
    assert flow.response.headers["content-type"].startswith("text/plain")
    assert flow.metadata[DECISION].action == "block" and flow.metadata[DECISION].rule_name == "Block gambling"
    assert _count(metrics, "gateway_decisions_total", action="block", stage="request") == 1


def test_browsers_get_the_configured_html_block_page(enforcer: Enforcer) -> None:
    with taddons.context(enforcer):
        flow = _flow("casino.test", accept="text/html,*/*")
        enforcer.request(flow)
    body = flow.response.get_text()
    assert flow.response.headers["content-type"].startswith("text/html")
    assert "Acme says no" in body and "#ffeecc" in body and "No gambling at work." in body


def test_redirect_preserves_path_and_query(enforcer: Enforcer) -> None:
    with taddons.context(enforcer):
        flow = _flow("old.test", path="/a/b?x=1")
        enforcer.request(flow)
    assert flow.response.status_code == 307
    assert flow.response.headers["location"] == "https://new.test/base/a/b?x=1"


def test_no_rule_matches_allows(enforcer: Enforcer, metrics: Metrics) -> None:
    with taddons.context(enforcer):
        flow = _flow("example.test")
        enforcer.request(flow)
    assert flow.response is None
    assert flow.metadata[DECISION] == DecisionRecord("allow", "request")
    assert _count(metrics, "gateway_decisions_total", action="allow", stage="request") == 1


def test_access_denies_by_default(enforcer: Enforcer) -> None:
    with taddons.context(enforcer):
        flow = _flow("intranet.test", accept="text/html")
        enforcer.request(flow)
    assert flow.response.status_code == 403
    assert "Access denied" in flow.response.get_text() and "Intranet" in flow.response.get_text()
    assert (
        "no policy matched (policy &#x27;Staff only&#x27; needs email_domain corp.test)"
        in flow.response.get_text()
    )


def test_untrusted_upstream_gets_a_block_page_by_default(enforcer: Enforcer) -> None:
    with taddons.context(enforcer):
        flow = _flow("other.test", error="Certificate verify failed: self-signed certificate")
        enforcer.request(flow)
    assert flow.response.status_code == 403
    assert (
        "The certificate of other.test is not trusted: self-signed certificate." in flow.response.get_text()
    )


def test_untrusted_upstream_error_setting_gives_526(enforcer: Enforcer) -> None:
    with taddons.context(enforcer):
        flow = _flow("strict.test", error="Certificate verify failed: certificate has expired")
        enforcer.request(flow)
    assert flow.response.status_code == 526
    assert "certificate has expired" in flow.response.get_text()


def test_untrusted_upstream_pass_through_reconnects_without_verification(enforcer: Enforcer) -> None:
    with taddons.context(enforcer) as tctx:
        flow = _flow("lab.test", error="Certificate verify failed: self-signed certificate")
        flow.server_conn.address = ("lab.test", 443)
        enforcer.request(flow)
        assert flow.response is None and flow.server_conn.error is None
        # The next upstream connection for this client and address skips verification.
        server = connection.Server(address=("lab.test", 443))
        ctx = context.Context(flow.client_conn, tctx.options)
        data = tls.TlsData(server, ctx, ssl_conn=SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD)))
        data.ssl_conn.set_verify(SSL.VERIFY_PEER, lambda *a: True)
        enforcer.tls_start_server(data)
        assert data.ssl_conn.get_verify_mode() == SSL.VERIFY_NONE


def test_unreachable_upstream_gets_502(enforcer: Enforcer) -> None:
    with taddons.context(enforcer):
        flow = _flow("down.test", error="Connection refused")
        enforcer.request(flow)
    assert flow.response.status_code == 502
    assert "could not connect to down.test: Connection refused" in flow.response.get_text()


def _client_hello(tctx, sni: str) -> tls.ClientHelloData:
    client = connection.Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), timestamp_start=0)
    ctx = context.Context(client, tctx.options)
    ctx.server.address = (sni, 443)

    class Hello:
        pass

    hello = Hello()
    hello.sni = sni
    return tls.ClientHelloData(ctx, hello)  # type: ignore[arg-type]


def test_do_not_inspect_passes_tls_through(enforcer: Enforcer, metrics: Metrics) -> None:
    with taddons.context(enforcer) as tctx:
        passed, inspected = _client_hello(tctx, "bank.test"), _client_hello(tctx, "casino.test")
        enforcer.tls_clienthello(passed)
        enforcer.tls_clienthello(inspected)
    assert passed.ignore_connection is True
    assert inspected.ignore_connection is False
    assert _count(metrics, "gateway_client_handshakes_total", outcome="passed_through") == 1


def test_tls_decrypt_off_passes_everything_through(engines: Engines) -> None:
    addon = Enforcer()
    addon.use(PolicySnapshot(engines, tls_decrypt=False))
    with taddons.context(addon) as tctx:
        hello = _client_hello(tctx, "casino.test")
        addon.tls_clienthello(hello)
    assert hello.ignore_connection is True


def test_without_do_not_inspect_rules_the_clienthello_decides_nothing() -> None:
    """Only HTTP rules: every connection is inspected, so the ClientHello neither looks the device
    up nor builds facts; one Do Not Inspect rule and it does both."""
    asked: list[str] = []

    def identity_of(client: connection.Client) -> Identity:
        asked.append(client.id)
        return Identity()

    http_only = load(
        "gateway_rules:\n  - {name: Block, precedence: 1, action: block, traffic: 'http.request.host == \"x.test\"'}\n"
    )
    with_dni = load(
        'gateway_rules:\n  - {name: Bank, precedence: 1, action: "off", traffic: \'net.sni.host == "bank.test"\'}\n'
    )
    for policy_set, lookups, passed in ((http_only, 0, False), (with_dni, 1, True)):
        asked.clear()
        addon = Enforcer(identity_of=identity_of)
        addon.use(
            PolicySnapshot(Engines(GatewayEngine.build(policy_set.gateway_rules), AccessEngine.build((), ())))
        )
        with taddons.context(addon) as tctx:
            hello = _client_hello(tctx, "bank.test")
            addon.tls_clienthello(hello)
        assert len(asked) == lookups
        assert hello.ignore_connection is passed


class BrokenGateway:
    is_empty = False

    def decide(self, facts):
        raise RuntimeError("boom")


class Broken:
    gateway = BrokenGateway()
    access = AccessEngine.build((), ())


def test_internal_error_fails_closed_and_is_counted(metrics: Metrics) -> None:
    addon = Enforcer(metrics)
    addon.use(PolicySnapshot(Broken()))  # type: ignore[arg-type]
    with taddons.context(addon):
        flow = _flow("example.test")
        addon.request(flow)
    assert flow.response.status_code == 500
    assert _count(metrics, "gateway_internal_errors_total") == 1


POSTURE_POLICIES = """
access_applications:
  - {id: 5b0e2c7e-0000-4000-8000-000000000002, type: self_hosted, name: Secure, domain: secure.test, policies: [5b0e2c7e-0000-4000-8000-0000000000b1]}
access_policies:
  - {id: 5b0e2c7e-0000-4000-8000-0000000000b1, name: Managed devices, decision: allow, include: [{device_posture: {integration_uid: 6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7}}]}
"""
CERT_RULE = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"


def _posture_enforcer(metrics: Metrics, identity: Identity) -> Enforcer:
    policy_set = load(POSTURE_POLICIES)
    engines = Engines(
        GatewayEngine.build(policy_set.gateway_rules),
        AccessEngine.build(policy_set.access_applications, policy_set.access_policies),
    )
    addon = Enforcer(metrics, identity_of=lambda client: identity)
    addon.use(PolicySnapshot(engines))
    return addon


@pytest.mark.parametrize(
    ("identity", "why"),
    [
        (Identity.of(), "no device identified"),
        (
            Identity.of(
                device_id="dev-1",
                failed=[CERT_RULE],
                notes=[
                    PostureNote(CERT_RULE, "Client certificate", PostureState.FAILED, "no certificate found")
                ],
            ),
            "posture check 'Client certificate' failed: no certificate found",
        ),
        (
            Identity.of(
                device_id="dev-1",
                failed=[CERT_RULE],
                notes=[
                    PostureNote(
                        CERT_RULE, "Client certificate", PostureState.EXPIRED, "its last pass expired"
                    )
                ],
            ),
            "posture check 'Client certificate' expired: its last pass expired",
        ),
        (Identity.of(device_id="dev-1"), f"posture check '{CERT_RULE}': no result from this device"),
    ],
)
def test_access_denial_names_what_failed(identity: Identity, why: str, metrics: Metrics) -> None:
    enforcer = _posture_enforcer(metrics, identity)
    with taddons.context(enforcer):
        flow = _flow("secure.test")
        enforcer.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    detail = f"Access application 'Secure' denies this request: {why}."
    assert flow.response.get_text().splitlines()[:2] == ["Access denied", detail]
    assert flow.metadata[DECISION] == DecisionRecord("block", "access", reason=detail, posture=(CERT_RULE,))
    # the metric says what the log says
    assert _count(metrics, "gateway_decisions_total", action="block", stage="access") == 1
    assert _count(metrics, "gateway_decisions_total", action="allow", stage="request") == 0
    device = "identified" if identity.device_id else "unidentified"
    assert _count(metrics, "gateway_requests_total", mode="regular", device=device) == 1


def test_access_allow_records_the_policy_and_the_posture_consulted(metrics: Metrics) -> None:
    enforcer = _posture_enforcer(metrics, Identity.of(device_id="dev-1", passed=[CERT_RULE]))
    with taddons.context(enforcer):
        flow = _flow("secure.test")
        enforcer.request(flow)
    assert flow.response is None
    assert flow.metadata[DECISION] == DecisionRecord(
        "allow", "request", access_policy="Managed devices", posture=(CERT_RULE,)
    )
    assert _count(metrics, "gateway_decisions_total", action="allow", stage="request") == 1


BRANCH_POLICIES = """
gateway_rules:
  - {name: Branch blocks the casino, precedence: 10, action: block, traffic: 'http.request.host == "casino.test"'}
  - {name: Branch passes the bank through, precedence: 5, action: "off", traffic: 'net.sni.host == "bank.test"'}
"""
HQ, BRANCH = "a" * 32, "b" * 32


def _accounts_enforcer(identity: Identity) -> Enforcer:
    """HQ (the default: nothing blocked) and Branch (blocks the casino, passes the bank through)."""
    empty = load("gateway_rules: []")
    branch = load(BRANCH_POLICIES)
    addon = Enforcer(identity_of=lambda client: identity)
    hq = PolicySnapshot(
        Engines(GatewayEngine.build(empty.gateway_rules), AccessEngine.build((), ()))  # type: ignore[arg-type]
    )
    addon.use(hq)
    addon.use_account(HQ, hq)
    addon.use_account(
        BRANCH,
        PolicySnapshot(
            Engines(GatewayEngine.build(branch.gateway_rules), AccessEngine.build((), ()))  # type: ignore[arg-type]
        ),
    )
    return addon


@pytest.mark.parametrize(
    ("identity", "blocked"),
    [
        (Identity(device_id="d-branch", account_id=BRANCH), True),
        (Identity(device_id="d-hq", account_id=HQ), False),
        (Identity(), False),  # no known device: the default account's policies
    ],
)
def test_each_account_decides_for_its_own_devices(identity: Identity, blocked: bool) -> None:
    addon = _accounts_enforcer(identity)
    with taddons.context(addon) as tctx:
        flow = _flow("casino.test")
        addon.request(flow)
        hello = _client_hello(tctx, "bank.test")
        addon.tls_clienthello(hello)
    assert (flow.response is not None and flow.response.status_code == 403) is blocked
    assert hello.ignore_connection is blocked  # Branch's Do Not Inspect rule, Branch's devices only


def test_a_device_of_an_account_not_loaded_here_fails_closed() -> None:
    addon = _accounts_enforcer(Identity(device_id="d-new", account_id="c" * 32))
    with taddons.context(addon):
        flow = _flow("example.test")
        addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 500
    addon.drop_account(BRANCH)  # one account left: the default decides for everyone again
    with taddons.context(addon):
        flow = _flow("casino.test")
        addon.request(flow)
    assert flow.response is None
