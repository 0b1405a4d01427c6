"""Policy enforcement: Gateway rules and Access decide every connection and request.

- At the ClientHello: inspection switched off (``tls_decrypt``) or a Do Not Inspect rule passes
  the TLS bytes through untouched (``ignore_connection``).
- Per request: the Gateway HTTP rules decide (block page, redirect, allow); an allowed request
  to an Access application's host must then be let through by its policies.
- An upstream whose certificate failed verification is handled as the deciding allow rule's
  ``untrusted_cert`` says: block page (the default), error page, or pass through (a new
  upstream connection without verification).

Several accounts: each has its own snapshot (``use_account``), and a connection or request is
decided with the snapshot of its device's account (``Identity.account_id``); no known device:
the default snapshot (``use``, the default account's). With one account, the default decides.

Decisions come from ``policies/``; this addon only applies them, and records each in
``flow.metadata["gateway.decision"]`` for the request log; ``gateway_decisions_total`` counts
the same record's action and stage, in the log's words. An Access denial says what failed
(``AccessEngine.why_denied``, worked out for denials only). A hook never raises: on an internal
error it answers with an error page (fail closed), logs with the flow id and counts it.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mitmproxy import connection, http, tls
from OpenSSL import SSL

from addons.pages import BlockPage, PageFacts, render
from addons.request_names import ip, pretty_host_and_url
from policies.access import AccessDecision, AccessEngine
from policies.engine import Decision, GatewayEngine
from policies.facts import ANONYMOUS, ConnectionFacts, Identity, IPAddress, RequestFacts
from policies.rules import Action, RedirectSettings, UntrustedCertAction

logger = logging.getLogger(__name__)

DECISION = "gateway.decision"  # flow.metadata key: DecisionRecord
IDENTITY = "gateway.identity"  # flow.metadata key: the Identity the request was decided with
CERT_VERIFY_FAILED = "Certificate verify failed"
UNSPECIFIED = ipaddress.ip_address("0.0.0.0")


class Engines(Protocol):
    @property
    def gateway(self) -> GatewayEngine: ...

    @property
    def access(self) -> AccessEngine: ...


class Counters(Protocol):
    """What enforcement counts (``proxy.metrics.Metrics`` fits)."""

    @property
    def decisions(self) -> object: ...

    @property
    def handshakes(self) -> object: ...

    @property
    def upstream_errors(self) -> object: ...

    @property
    def internal_errors(self) -> object: ...

    @property
    def requests(self) -> object: ...


@dataclass(frozen=True)
class PolicySnapshot:
    engines: Engines
    tls_decrypt: bool = True
    block_page: BlockPage = BlockPage()


@dataclass(frozen=True)
class DecisionRecord:
    """What was decided for one request, for the log line."""

    action: str
    stage: str
    rule_id: str = ""
    rule_name: str = ""
    reason: str = ""
    access_policy: str = ""  # the Access policy that let the request through (its name)
    posture: tuple[str, ...] = ()  # posture rule ids the Access application consulted


ALLOWED = DecisionRecord("allow", "request")
EMPTY = PolicySnapshot(engines=None)  # type: ignore[arg-type]  # replaced by use() before traffic


def _anonymous(client: connection.Client) -> Identity:
    return ANONYMOUS


class AccountNotLoaded(RuntimeError):
    """A device's account has no snapshot on this node (yet): its traffic fails closed."""


class Enforcer:
    def __init__(
        self,
        counters: Counters | None = None,
        *,
        identity_of: Callable[[connection.Client], Identity] = _anonymous,
    ) -> None:
        self._snapshot = EMPTY
        self._idle = True  # no rule and no application: allow without building request facts
        self._by_account: dict[str, tuple[PolicySnapshot, bool]] = {}  # account → (snapshot, idle)
        self._counters = counters
        self._children: dict[tuple[str, ...], Any] = {}  # labelled counter children, by labels
        self._identity_of = identity_of
        # (client id, upstream address) → pass an untrusted upstream through without verification
        self._insecure: set[tuple[str, tuple[str, int]]] = set()

    def use(self, snapshot: PolicySnapshot) -> None:
        """From the next ClientHello and request on, decide with ``snapshot`` (one assignment)."""
        self._idle = _idle(snapshot)
        self._snapshot = snapshot

    def use_account(self, account_id: str, snapshot: PolicySnapshot) -> None:
        """Decide the traffic of ``account_id``'s devices with ``snapshot`` (one assignment);
        other accounts' decisions are not touched."""
        self._by_account = {**self._by_account, account_id: (snapshot, _idle(snapshot))}

    def drop_account(self, account_id: str) -> None:
        self._by_account = {a: s for a, s in self._by_account.items() if a != account_id}

    def _snapshot_of(self, identity: Identity) -> tuple[PolicySnapshot, bool]:
        """The snapshot (and whether it is idle) of the identity's account: the default one with
        a single account or no known device."""
        by_account = self._by_account
        if len(by_account) < 2 or not identity.account_id:
            return self._snapshot, self._idle
        try:
            return by_account[identity.account_id]
        except KeyError:
            raise AccountNotLoaded(
                f"account {identity.account_id} of device {identity.device_id} is not loaded on this node (yet)"
            ) from None

    @property
    def several_accounts(self) -> bool:
        return len(self._by_account) > 1

    # -- connection level ---------------------------------------------------------------------------
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        client = data.context.client
        identity: Identity | None = None
        snapshot = self._snapshot
        if self.several_accounts:  # the device's account decides, tls_decrypt included
            identity = self._identity_of(client)
            try:
                snapshot = self._snapshot_of(identity)[0]
            except AccountNotLoaded as e:  # fail closed: inspect, and the request is refused
                logger.warning("client %s: %s", client.id, e)
                return
        if snapshot.engines is None:
            return
        if not snapshot.tls_decrypt:
            data.ignore_connection = True
            self._count("handshakes", "passed_through")
            logger.debug("TLS to %s passed through: tls_decrypt is off", data.client_hello.sni)
            return
        if snapshot.engines.gateway.inspects_every_connection:
            return  # no Do Not Inspect rule: nothing to decide (and no facts to build)
        try:
            identity = identity or self._identity_of(client)
            facts = connection_facts(data.context, data.client_hello.sni, identity)
            decision = snapshot.engines.gateway.decide_connection(facts)
        except Exception:  # fail closed: inspect, so HTTP rules still apply
            logger.exception("Do Not Inspect check failed for client %s; inspecting", client.id)
            self._count("internal_errors")
            return
        if decision.passes_through:
            data.ignore_connection = True
            self._count("handshakes", "passed_through")
            self._count("decisions", Action.OFF.value, decision.stage.value)  # no request: no log line
            logger.info(
                "do not inspect %s (rule %s): TLS passed through",
                data.client_hello.sni,
                decision.rule.label if decision.rule else "-",
            )

    def tls_established_client(self, data: tls.TlsData) -> None:
        self._count("handshakes", "intercepted")

    def tls_failed_client(self, data: tls.TlsData) -> None:
        self._count("handshakes", "failed")

    def tls_start_server(self, data: tls.TlsData) -> None:
        server = data.conn
        key = (data.context.client.id, _address(server))
        if key in self._insecure and isinstance(data.ssl_conn, SSL.Connection):
            data.ssl_conn.set_verify(SSL.VERIFY_NONE, None)
            logger.info("connecting to %s without certificate verification (rule: pass_through)", key[1][0])

    def client_disconnected(self, client: connection.Client) -> None:
        self._insecure = (
            {k for k in self._insecure if k[0] != client.id} if self._insecure else self._insecure
        )

    # -- request level ----------------------------------------------------------------------------------
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not flow.live or self._snapshot.engines is None:
            return
        try:
            self._decide(flow, self._snapshot)
        except Exception as e:  # fail closed
            logger.exception("policy check failed for flow %s; answering with an error page", flow.id)
            self._count("internal_errors")
            self._decided(flow, DecisionRecord("error", "internal", reason=type(e).__name__))
            flow.response = render(
                flow,
                500,
                PageFacts(
                    "The gateway could not decide this request",
                    "An internal error occurred; it was logged.",
                    flow.request.pretty_host,
                ),
                self._snapshot.block_page,
            )

    def _decide(self, flow: http.HTTPFlow, snapshot: PolicySnapshot) -> None:
        identity = flow.metadata.get(IDENTITY)  # set per request for plain-HTTP proxy credentials
        if identity is None:
            identity = flow.metadata[IDENTITY] = self._identity_of(flow.client_conn)
        snapshot, idle = self._snapshot_of(identity) if self.several_accounts else (snapshot, self._idle)
        self._count(
            "requests",
            flow.client_conn.proxy_mode.type_name,
            "identified" if identity.device_id else "unidentified",
        )
        if idle and not flow.server_conn.error:
            self._decided(flow, ALLOWED)
            return
        facts = request_facts(flow, identity)
        decision = snapshot.engines.gateway.decide(facts)
        if decision.action is Action.BLOCK:
            reason = decision.settings.block_reason or "This request was blocked by policy."
            self._block(flow, snapshot, decision, reason)
            return
        if decision.action is Action.REDIRECT:
            self._redirect(flow, decision, facts)
            return
        if flow.server_conn.error and self._upstream_failed(flow, snapshot, decision):
            return
        verdict = snapshot.engines.access.decide(facts)
        if verdict is None:
            self._decided(flow, record(decision))
        elif not verdict.allowed:
            self._deny(flow, snapshot, verdict, snapshot.engines.access.why_denied(facts))
        else:
            policy = verdict.policy.name if verdict.policy else ""
            self._decided(flow, record(decision, access_policy=policy, posture=verdict.posture))

    def _decided(self, flow: http.HTTPFlow, decision: DecisionRecord) -> None:
        """Record the decision for the log line, and count it with the log's words."""
        flow.metadata[DECISION] = decision
        self._count("decisions", decision.action, decision.stage)

    def _block(self, flow: http.HTTPFlow, snapshot: PolicySnapshot, decision: Decision, reason: str) -> None:
        rule = decision.rule
        self._decided(flow, record(decision, reason))
        flow.response = render(
            flow,
            403,
            PageFacts(
                "Blocked by policy",
                reason,
                flow.request.pretty_host,
                rule.name if rule else "",
                rule.id if rule else "",
            ),
            snapshot.block_page,
        )

    def _redirect(self, flow: http.HTTPFlow, decision: Decision, facts: RequestFacts) -> None:
        settings = decision.settings.redirect
        assert settings is not None  # the rule model refuses a redirect without a target
        self._decided(flow, record(decision))
        target = redirect_target(settings, flow.request.path, facts, decision)
        flow.response = http.Response.make(307, b"", {"location": target, "cache-control": "no-store"})

    def _upstream_failed(self, flow: http.HTTPFlow, snapshot: PolicySnapshot, decision: Decision) -> bool:
        """True when the request was answered here because its upstream failed."""
        error = flow.server_conn.error or ""
        host = flow.request.pretty_host
        if not error.startswith(CERT_VERIFY_FAILED):
            self._count("upstream_errors", "unreachable")
            self._decided(flow, DecisionRecord("error", "upstream", reason=error))
            flow.response = render(
                flow,
                502,
                PageFacts(
                    "The origin could not be reached", f"Gateway could not connect to {host}: {error}.", host
                ),
                snapshot.block_page,
            )
            return True
        reason = error.removeprefix(CERT_VERIFY_FAILED).lstrip(": ").strip() or error
        handling = decision.untrusted_cert
        rule = decision.rule
        if handling is UntrustedCertAction.PASS_THROUGH:
            # Forget the failed connection; the next one to this address skips verification.
            self._insecure.add((flow.client_conn.id, _address(flow.server_conn)))
            flow.server_conn.error = None
            self._count("upstream_errors", "pass_through")
            logger.info(
                "untrusted certificate of %s passed through by rule %s: %s",
                host,
                rule.label if rule else "-",
                reason,
            )
            return False
        detail = f"The certificate of {host} is not trusted: {reason}."
        if handling is UntrustedCertAction.ERROR:
            self._count("upstream_errors", "error")
            self._decided(
                flow,
                DecisionRecord(
                    "error", "upstream", rule.id if rule else "", rule.name if rule else "", reason
                ),
            )
            flow.response = render(
                flow,
                526,
                PageFacts(
                    "Invalid origin certificate",
                    detail,
                    host,
                    rule.name if rule else "",
                    rule.id if rule else "",
                ),
                snapshot.block_page,
            )
            return True
        self._count("upstream_errors", "block")
        self._decided(
            flow,
            DecisionRecord("block", "upstream", rule.id if rule else "", rule.name if rule else "", reason),
        )
        flow.response = render(
            flow,
            403,
            PageFacts(
                "Blocked: untrusted origin certificate",
                detail,
                host,
                rule.name if rule else "",
                rule.id if rule else "",
            ),
            snapshot.block_page,
        )
        return True

    def _deny(self, flow: http.HTTPFlow, snapshot: PolicySnapshot, verdict: AccessDecision, why: str) -> None:
        policy = verdict.policy
        detail = f"Access application {verdict.application.name!r} denies this request: {why or 'no policy matched'}."
        self._decided(
            flow,
            DecisionRecord(
                "block",
                "access",
                policy.id if policy else "",
                policy.name if policy else "",
                detail,
                posture=verdict.posture,
            ),
        )
        logger.info("access denied to %s for flow %s: %s", flow.request.pretty_host, flow.id, why)
        flow.response = render(
            flow,
            403,
            PageFacts(
                "Access denied",
                detail,
                flow.request.pretty_host,
                policy.name if policy else "",
                policy.id if policy else "",
            ),
            snapshot.block_page,
        )

    def _count(self, counter: str, *labels: str) -> None:
        """Increment a counter; each labelled child is looked up once (``labels()`` is ~20 µs,
        too much for every request), then reused."""
        if self._counters is None:
            return
        key = (counter, *labels)
        child = self._children.get(key)
        if child is None:
            metric = getattr(self._counters, counter)
            child = self._children[key] = metric.labels(*labels) if labels else metric
        child.inc()


def _idle(snapshot: PolicySnapshot) -> bool:
    """No rule and no application: every request is allowed without building its facts."""
    engines = snapshot.engines
    return engines is None or (engines.gateway.is_empty and engines.access.is_empty)


def redirect_target(
    settings: RedirectSettings, request_path: str, facts: RequestFacts, decision: Decision
) -> str:
    """The Location of a redirect: the target, plus the request's path and query when asked
    (the target's own query kept first), plus context parameters when asked (as Cloudflare's
    ``cf_*`` names)."""
    parts = urllib.parse.urlsplit(settings.target_uri)
    path, query = parts.path, parts.query
    if settings.preserve_path_and_query:
        request, _, request_query = request_path.partition("?")
        path = path.rstrip("/") + request
        query = "&".join(q for q in (query, request_query) if q)
    if settings.include_context:
        context = {
            "cf_site_uri": facts.url,
            "cf_rule_id": decision.rule.id if decision.rule else "",
            "cf_source_ip": str(facts.connection.src_ip),
            "cf_user_email": facts.identity.email,
            "cf_device_id": facts.identity.device_id,
        }
        extra = urllib.parse.urlencode({k: v for k, v in context.items() if v})
        query = "&".join(q for q in (query, extra) if q)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


def record(
    decision: Decision, reason: str = "", *, access_policy: str = "", posture: tuple[str, ...] = ()
) -> DecisionRecord:
    rule = decision.rule
    return DecisionRecord(
        decision.action.value,
        decision.stage.value,
        rule.id if rule else "",
        rule.name if rule else "",
        reason,
        access_policy,
        posture,
    )


def connection_facts(context: object, sni: str | None, identity: Identity = ANONYMOUS) -> ConnectionFacts:
    client = context.client  # type: ignore[attr-defined]
    server = context.server  # type: ignore[attr-defined]
    dst_ip, dst_port = _destination(server)
    return ConnectionFacts(
        sni=sni.lower() if sni else None,
        src_ip=ip(client.peername[0]),
        dst_ip=dst_ip,
        dst_port=dst_port,
        identity=identity,
    )


def request_facts(flow: http.HTTPFlow, identity: Identity = ANONYMOUS) -> RequestFacts:
    request = flow.request
    host, url = pretty_host_and_url(request)
    path, _, query = request.path.partition("?")
    dst_ip, _ = _destination(flow.server_conn)
    sni = flow.client_conn.sni
    conn = ConnectionFacts(
        sni=sni.lower() if sni else None,
        src_ip=ip(flow.client_conn.peername[0]),
        dst_ip=dst_ip,
        dst_port=request.port,
        identity=identity,
    )
    return RequestFacts(request.method.upper(), url, host.lower().rstrip("."), path or "/", query, conn)


def _destination(server: connection.Server) -> tuple[IPAddress, int]:
    address = server.peername or server.address
    if not address:
        return UNSPECIFIED, 0
    try:
        return ip(address[0]), int(address[1])
    except ValueError:
        return UNSPECIFIED, int(address[1])


def _address(server: connection.Connection) -> tuple[str, int]:
    address = server.address or ("", 0)  # type: ignore[attr-defined]
    return str(address[0]), int(address[1])
