"""TLS inspection: sign every intercepted leaf with the in-use CA, swappable while traffic flows.

``HotTlsConfig`` replaces mitmproxy's ``TlsConfig`` (same ``name``, so every other addon and
option keeps working: ALPN, ciphers, upstream verification, QUIC). What changes:

- leaves come from a ``certs.LeafIssuer`` (a leaf key of its own, SPEC §3 contents, LRU cache)
  instead of mitmproxy's ``CertStore`` (which reuses the CA key and caches 100 entries FIFO);
- the issuer is one attribute, swapped atomically on the event-loop thread by ``use_issuer``:
  the next handshake signs with the new CA, established connections go on untouched;
- mitmproxy's own confdir CA is never created or used, and options that would sign with a
  third-party key (``emudhra*`` in mitmproxy 12.3) are refused;
- per handshake it does only what cannot be done before: the leaf and its key reach OpenSSL as
  objects converted once (``addons.native``), and connections to origin servers resume their
  TLS sessions (``addons.sessions``).

Several accounts: each has its own in-use issuer (``use_account_issuer``), and a handshake is
signed by the issuer of the client's account (``account_of``: the identity addon's answer, the
device's account; None for no known device, which gets the default issuer of ``use_issuer``).
With one account (or none registered) the default issuer signs everything, as before.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import tempfile
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs, connection, ctx, exceptions, http, tls
from mitmproxy.addons import tlsconfig
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy import context, server_hooks
from mitmproxy.proxy.layers import modes
from OpenSSL import SSL

from addons.native import NativeLeaves
from addons.sessions import SessionStats, UpstreamSessions
from certs.issuer import LeafIssuer

logger = logging.getLogger(__name__)

# Options that make stock TlsConfig (re)build its CertStore from confdir: we own the CA instead.
_CERTSTORE_OPTIONS = frozenset({"certs", "confdir", "key_size", "cert_passphrase"})
# mitmproxy 12.3 options that sign leaves with a publicly leaked third-party CA key.
_FORBIDDEN_OPTIONS = ("emudhra", "emudhra_old")
UPSTREAM_NAMES_CACHE_SIZE = 1024  # upstream certificates whose names are kept
# A CN is copied into the SAN only when it looks like a host name (or wildcard), as browsers read SANs.
_HOSTNAME = re.compile(r"(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|[0-9a-fA-F:.]+")


class NoCertificateInUse(RuntimeError):
    """No CA is in use, so no leaf can be signed: the handshake fails closed."""


def _no_account(client: connection.Client) -> str | None:
    return None


class HotTlsConfig(tlsconfig.TlsConfig):
    name = "tlsconfig"

    def __init__(self, *, account_of: Callable[[connection.Client], str | None] = _no_account) -> None:
        super().__init__()
        self._issuer: LeafIssuer | None = None
        self._by_account: dict[str, LeafIssuer | None] = {}  # account id → its in-use issuer
        self.account_of = account_of  # the account of a client's device; None: no known device
        self._dhparams: certs.DHParams | None = None
        self._chain_files: dict[str, Path] = {}
        self._chain_dir: Path | None = None
        self._ca_by_client: dict[str, str] = {}  # client id → fingerprint of the CA of its leaf
        self._native = NativeLeaves()
        self._sessions = UpstreamSessions()

    # -- the swap -------------------------------------------------------------------------
    @property
    def issuer(self) -> LeafIssuer | None:
        return self._issuer

    def use_issuer(self, issuer: LeafIssuer | None) -> None:
        """Sign every new handshake with ``issuer`` from now on (None: refuse to intercept)."""
        previous = self._issuer
        self._issuer = issuer
        self._refresh_certstore()
        if issuer is not None and (
            previous is None or previous.authority.fingerprint != issuer.authority.fingerprint
        ):
            logger.info("signing leaves with CA %s (%s)", issuer.authority.fingerprint, _subject(issuer))
        elif issuer is None and previous is not None:
            logger.warning("no certificate in use: TLS interception is refused until one is turned on")

    def use_account_issuer(self, account_id: str, issuer: LeafIssuer | None) -> None:
        """Sign the handshakes of ``account_id``'s devices with ``issuer`` from now on (None:
        refuse them); other accounts' handshakes are not touched."""
        previous = self._by_account.get(account_id)
        self._by_account = {**self._by_account, account_id: issuer}  # one assignment
        if issuer is not None and (previous is None or previous.fingerprint != issuer.fingerprint):
            logger.info("account %s: signing leaves with CA %s", account_id, issuer.fingerprint)
        elif issuer is None:
            logger.warning("account %s: no certificate in use: its devices' TLS is refused", account_id)

    def drop_account(self, account_id: str) -> None:
        """The account is gone: its devices' handshakes are refused (until it comes back)."""
        self._by_account = {a: i for a, i in self._by_account.items() if a != account_id}

    def _issuer_for(self, client: connection.Client) -> LeafIssuer | None:
        """The issuer of the client's account: one dictionary lookup, none with one account."""
        by_account = self._by_account
        if len(by_account) < 2:
            return self._issuer
        account = self.account_of(client)
        if account is None:
            return self._issuer
        try:
            return by_account[account]
        except KeyError:
            raise NoCertificateInUse(
                f"account {account} of this client's device is not loaded on this node (yet): its "
                "next synchronisation loads it"
            ) from None

    # -- mitmproxy hooks --------------------------------------------------------------------
    def configure(self, updated: Collection[str] | str) -> None:
        names = {updated} if isinstance(updated, str) else set(updated)
        refuse_forbidden_options()
        if "certs" in names and ctx.options.certs:
            raise exceptions.OptionsError(
                "option 'certs' is not supported by Gateway: upload a CA through the admin API instead"
            )
        super().configure(names - _CERTSTORE_OPTIONS)  # type: ignore[no-untyped-call]
        if "confdir" in names or self._dhparams is None:
            confdir = Path(ctx.options.confdir).expanduser()
            confdir.mkdir(parents=True, exist_ok=True)
            dhparam = confdir / "mitmproxy-dhparam.pem"
            self._dhparams = certs.CertStore.load_dhparam(dhparam)
            dhparam.chmod(0o600)
            self._refresh_certstore()

    def running(self) -> None:
        # Stock TlsConfig rebuilds its store from confdir here; we only need dhparams.
        self.configure({"confdir"})

    def request(self, flow: http.HTTPFlow) -> None:
        """Stock TlsConfig answers its magic CRL path here; our CRLs live on the admin server."""

    def client_disconnected(self, client: connection.Client) -> None:
        self._ca_by_client.pop(client.id, None)

    def ca_fingerprint(self, client_id: str) -> str | None:
        """The fingerprint of the CA that signed the leaf this client was shown, if any."""
        return self._ca_by_client.get(client_id)

    def tls_start_client(self, tls_start: tls.TlsData) -> None:
        """Stock ``TlsConfig.tls_start_client`` with one difference: the leaf and its key reach
        OpenSSL as objects converted once per leaf (the key once per issuer) instead of at every
        handshake, where pyOpenSSL re-parses their DER (~100 µs each with OpenSSL 3)."""
        if tls_start.ssl_conn is not None:
            return  # another addon has set up the connection
        assert isinstance(tls_start.conn, connection.Client)
        client = tls_start.conn
        server = tls_start.context.server
        entry = self.get_cert(tls_start.context)
        if not client.cipher_list and ctx.options.ciphers_client:
            client.cipher_list = ctx.options.ciphers_client.split(":")
        min_version = net_tls.Version[ctx.options.tls_version_client_min]
        cipher_list = client.cipher_list or tlsconfig._default_ciphers(min_version)
        extra_chain_certs: list[certs.Cert] = []
        if entry.chain_file is None and len(entry.chain_certs) > 1:
            extra_chain_certs.extend(entry.chain_certs)
        if ctx.options.add_upstream_certs_to_client_chain:
            extra_chain_certs.extend(server.certificate_list)
        ssl_ctx = net_tls.create_client_proxy_context(
            method=net_tls.Method.DTLS_SERVER_METHOD
            if tls_start.is_dtls
            else net_tls.Method.TLS_SERVER_METHOD,
            min_version=min_version,
            max_version=net_tls.Version[ctx.options.tls_version_client_max],
            cipher_list=tuple(cipher_list),
            ecdh_curve=net_tls.get_curve(ctx.options.tls_ecdh_curve_client),
            chain_file=entry.chain_file,
            request_client_cert=ctx.options.request_client_cert,
            alpn_select_callback=tlsconfig.alpn_select_callback,
            extra_chain_certs=tuple(extra_chain_certs),
            dhparams=self.certstore.dhparams,
        )
        ssl_conn = SSL.Connection(ssl_ctx)
        self._native.install(ssl_conn, entry.cert.to_cryptography(), entry.privatekey)
        # A secure web proxy speaks HTTP/1 to its client (no CONNECT over HTTP/2), as stock does.
        layers = tls_start.context.layers
        if len(layers) == 2 and isinstance(layers[0], modes.HttpProxy):
            client_alpn: bytes | None = b"http/1.1"
        else:
            client_alpn = client.alpn
        ssl_conn.set_app_data(
            tlsconfig.AppData(client_alpn=client_alpn, server_alpn=server.alpn, http2=ctx.options.http2)
        )
        ssl_conn.set_accept_state()
        tls_start.ssl_conn = ssl_conn

    def tls_start_server(self, tls_start: tls.TlsData) -> None:
        """Stock ``TlsConfig.tls_start_server``, then offer the upstream's stored TLS session."""
        if tls_start.ssl_conn is not None:
            return  # another addon has set up the connection
        super().tls_start_server(tls_start)
        if tls_start.ssl_conn is not None and isinstance(tls_start.conn, connection.Server):
            self._sessions.start(tls_start.conn, tls_start.ssl_conn)

    def tls_established_server(self, tls_start: tls.TlsData) -> None:
        if isinstance(tls_start.conn, connection.Server):
            self._sessions.established(tls_start.conn)

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._sessions.closed(data.server)

    def upstream_sessions(self) -> SessionStats:
        """How often upstream TLS sessions were offered and resumed (for tests and the bench)."""
        return self._sessions.stats()

    def get_cert(self, conn_context: context.Context) -> certs.CertStoreEntry:
        issuer = self._issuer_for(conn_context.client)
        if issuer is None:
            raise NoCertificateInUse(
                "no certificate is in use: turn one on (gateway ca use ID) to intercept TLS"
            )
        leaf = issuer.leaf_for(leaf_names(conn_context, use_upstream=ctx.options.upstream_cert))
        self._ca_by_client[conn_context.client.id] = issuer.fingerprint
        return certs.CertStoreEntry(
            cert=certs.Cert(leaf.certificate),
            privatekey=leaf.private_key,
            chain_file=self._chain_file(issuer),
            chain_certs=[certs.Cert(c) for c in leaf.chain],
        )

    # -- helpers -----------------------------------------------------------------------------
    def _refresh_certstore(self) -> None:
        """Keep ``self.certstore`` valid for the stock code paths that read it (dhparams)."""
        if self._issuer is None or self._dhparams is None:
            return
        authority = self._issuer.authority
        self.certstore = certs.CertStore(
            default_privatekey=authority.private_key,
            default_ca=certs.Cert(authority.certificate),
            default_chain_file=None,
            default_crl=b"",
            dhparams=self._dhparams,
        )

    def _chain_file(self, issuer: LeafIssuer) -> Path | None:
        """For a CA below another CA, a PEM file of the CA and its chain, so OpenSSL sends them."""
        authority = issuer.authority
        if not authority.chain:
            return None
        path = self._chain_files.get(authority.fingerprint)
        if path is None:
            if self._chain_dir is None:
                self._chain_dir = Path(tempfile.mkdtemp(prefix="gateway-chains-"))
            path = self._chain_dir / (authority.fingerprint.replace(":", "") + ".pem")
            path.write_bytes(
                b"".join(
                    c.public_bytes(serialization.Encoding.PEM)
                    for c in (authority.certificate, *authority.chain)
                )
            )
            self._chain_files[authority.fingerprint] = path
        return path


def refuse_forbidden_options() -> None:
    """Options that sign with a key we do not own are an error, whatever else is configured."""
    for option in _FORBIDDEN_OPTIONS:
        if option in ctx.options and getattr(ctx.options, option):
            raise exceptions.OptionsError(
                f"option {option!r} signs leaves with a publicly leaked third-party key; "
                "Gateway refuses it: leaves are signed only by your own CA"
            )


def leaf_names(conn_context: context.Context, *, use_upstream: bool) -> list[str]:
    """The names a leaf must carry: upstream certificate names, then the SNI; without SNI, the
    address the client connected to and the server address. De-duplicated, in order.

    Unlike stock mitmproxy we add the server address only without SNI: a lab hosts map may have
    rewritten it to a loopback address, which does not belong in a leaf for a public name."""
    names: list[str] = []
    if use_upstream and conn_context.server.certificate_list:
        names.extend(_upstream_names(conn_context.server.certificate_list[0].to_cryptography()))
    if conn_context.client.sni:
        names.append(conn_context.client.sni)
    else:
        if conn_context.client.sockname:
            names.append(str(conn_context.client.sockname[0]))
        if conn_context.server.address:
            names.append(str(conn_context.server.address[0]))
    return [n for n in dict.fromkeys(_normalise(n) for n in names) if n]


@functools.lru_cache(maxsize=UPSTREAM_NAMES_CACHE_SIZE)
def _upstream_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """An upstream certificate's common name (if it is a host name) and DNS and IP alternative
    names. Memoised per certificate (equal by their DER bytes): an origin presents the same one
    at every connection, and reading the names parses the subject and every extension (~25 µs)."""
    upstream = certs.Cert(certificate)
    names = [upstream.cn] if upstream.cn and _HOSTNAME.fullmatch(upstream.cn) else []
    names.extend(_general_names(upstream.altnames))
    return tuple(names)


def _general_names(altnames: Iterable[x509.GeneralName]) -> Iterable[str]:
    for name in altnames:
        if isinstance(name, (x509.DNSName, x509.IPAddress)):
            yield str(name.value)


def _normalise(name: str) -> str:
    if ":" in name or name[-1:].isdigit():  # only these can be IP literals (a TLD is never all digits)
        try:
            return str(ipaddress.ip_address(name))
        except ValueError:
            pass
    return name.strip().rstrip(".").lower()


def _subject(issuer: LeafIssuer) -> str:
    return issuer.authority.certificate.subject.rfc4514_string()
