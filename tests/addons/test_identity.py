import base64
from dataclasses import dataclass, field

from mitmproxy.test import taddons, tflow, tutils

from addons.enforcement import Enforcer, PolicySnapshot
from addons.identity import DeviceIdentity
from policies.access import AccessEngine
from policies.engine import GatewayEngine
from policies.facts import ANONYMOUS, Identity
from policies.yaml_io import load

POSTURE = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"


@dataclass
class Directory:
    """An in-memory device directory with the DeviceService interface the addon relies on."""

    secrets: dict[str, str] = field(default_factory=lambda: {"dev-1": "s3cret"})
    passed: tuple[str, ...] = (POSTURE,)

    def authenticate(self, device_id: str, secret: str) -> str | None:
        return device_id if self.secrets.get(device_id) == secret else None

    def identity(self, device_id: str) -> Identity:
        return Identity.of(email="ana@corp.test", device_id=device_id, passed=self.passed)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _connect(header: str | None):
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="files.test", port=443, path=b""))
    if header:
        flow.request.headers["Proxy-Authorization"] = header
    return flow


def test_connect_credentials_identify_the_client() -> None:
    addon = DeviceIdentity(Directory())
    with taddons.context(addon):
        flow = _connect(_basic("dev-1", "s3cret"))
        addon.http_connect(flow)
        identity = addon.identity_of(flow.client_conn)
    assert identity.device_id == "dev-1" and identity.email == "ana@corp.test"
    assert identity.posture_passed == (POSTURE,)


def test_wrong_secret_is_anonymous_and_can_be_required() -> None:
    addon = DeviceIdentity(Directory())
    with taddons.context(addon) as tctx:
        flow = _connect(_basic("dev-1", "guess"))
        addon.http_connect(flow)
        assert addon.identity_of(flow.client_conn) is ANONYMOUS and flow.response is None
        tctx.configure(addon, gateway_require_identity=True)
        flow = _connect(None)
        addon.http_connect(flow)
    assert flow.response is not None and flow.response.status_code == 407
    assert flow.response.headers["Proxy-Authenticate"].startswith("Basic")


def test_plain_http_credentials_count_per_request_and_are_never_forwarded() -> None:
    addon = DeviceIdentity(Directory())
    with taddons.context(addon):
        first = tflow.tflow(req=tutils.treq(host="files.test", port=80, scheme=b"http"))
        first.client_conn.tls = False
        first.request.headers["Proxy-Authorization"] = _basic("dev-1", "s3cret")
        addon.requestheaders(first)
        # The next request on the same connection without credentials borrows nothing.
        second = tflow.tflow(
            client_conn=first.client_conn, req=tutils.treq(host="files.test", port=80, scheme=b"http")
        )
        addon.requestheaders(second)
    assert "Proxy-Authorization" not in first.request.headers
    assert first.metadata["gateway.identity"].device_id == "dev-1"
    assert second.metadata["gateway.identity"] is ANONYMOUS


POLICIES = f"""
gateway_rules:
  - name: Uploads need a managed device
    precedence: 10
    action: block
    traffic: 'http.request.host == "files.test"'
    device_posture: 'not(any(device_posture.checks.passed[*] in {{"{POSTURE}"}}))'
"""


def test_posture_decides_and_a_change_reaches_the_next_request() -> None:
    directory = Directory()
    identity = DeviceIdentity(directory)
    policy_set = load(POLICIES)
    engines = type("E", (), {})()
    engines.gateway = GatewayEngine.build(policy_set.gateway_rules)
    engines.access = AccessEngine.build((), ())
    enforcer = Enforcer(identity_of=identity.identity_of)
    enforcer.use(PolicySnapshot(engines))
    with taddons.context(identity, enforcer):
        connect = _connect(_basic("dev-1", "s3cret"))
        identity.http_connect(connect)
        allowed = tflow.tflow(client_conn=connect.client_conn, req=tutils.treq(host="files.test", port=443))
        allowed.request.headers["host"] = "files.test"
        enforcer.request(allowed)
        directory.passed = ()  # the agent reported a failure
        blocked = tflow.tflow(client_conn=connect.client_conn, req=tutils.treq(host="files.test", port=443))
        blocked.request.headers["host"] = "files.test"
        enforcer.request(blocked)
    assert allowed.response is None
    assert blocked.response is not None and blocked.response.status_code == 403
    assert blocked.metadata["gateway.identity"].email == "ana@corp.test"


@dataclass
class AccountDirectory(Directory):
    """Devices of two accounts."""

    accounts: dict[str, str] = field(default_factory=lambda: {"dev-1": "a" * 32, "dev-2": "b" * 32})

    def identity(self, device_id: str) -> Identity:
        return Identity.of(device_id=device_id, account_id=self.accounts[device_id])


class ByPort:
    """A resolver naming the device by the client's source port (as an address or a WireGuard
    listener would)."""

    def device_of(self, client):  # type: ignore[no-untyped-def]
        return {6002: "dev-2"}.get(client.peername[1])


def test_the_account_of_a_client_is_its_devices() -> None:
    addon = DeviceIdentity(AccountDirectory(), resolvers=[ByPort()])
    with taddons.context(addon):
        flow = _connect(_basic("dev-1", "s3cret"))
        addon.http_connect(flow)
        assert addon.account_of(flow.client_conn) == "a" * 32  # from its CONNECT credentials
        resolved = _connect(None)
        resolved.client_conn.peername = ("192.0.2.7", 6002)
        assert addon.account_of(resolved.client_conn) == "b" * 32  # from how it arrived
        nobody = _connect(None)
        nobody.client_conn.peername = ("192.0.2.8", 6003)
        assert addon.account_of(nobody.client_conn) is None  # the default account's
