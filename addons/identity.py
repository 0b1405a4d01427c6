"""Device identity in explicit-proxy mode: ``Proxy-Authorization: Basic <device id>:<secret>``.

The agent's device id and secret identify the device on the CONNECT (and on plain-HTTP proxy
requests); the header is stripped before anything is forwarded. The identity (user email,
posture passed/failed) is looked up again for every request, so a posture change reaches the
next decision; the directory caches it, so the lookup is a dictionary hit. With
``gateway_require_identity`` an unidentified client gets ``407 Proxy Authentication Required``.

In transparent mode there is no proxy request to carry credentials: the client is the device
its source address resolves to (``SourceAddresses``, a resolver: the most specific network an
admin bound, else the address its agent registered last; docs/modes.md says what that is worth).
An unidentified transparent client that must identify gets a 403 page saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from mitmproxy import connection, ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.addons.proxyauth import parse_http_basic_auth

from addons.enforcement import IDENTITY
from policies.facts import ANONYMOUS, Identity

logger = logging.getLogger(__name__)

HEADER = "Proxy-Authorization"
REALM = "Gateway device"


class DeviceDirectory(Protocol):
    def authenticate(self, device_id: str, secret: str) -> str | None: ...

    def identity(self, device_id: str) -> Identity: ...


class ClientDevices(Protocol):
    """Names a client's device by how it arrived rather than by credentials (its WireGuard
    listener: ``addons.wireguard``); None when it cannot tell."""

    def device_of(self, client: connection.Client) -> str | None: ...


class AddressBook(Protocol):
    def device_at(self, address: str) -> str | None: ...


class SourceAddresses:
    """Transparent mode's resolver: the device at the client's source address."""

    def __init__(self, book: AddressBook) -> None:
        self._book = book

    def device_of(self, client: connection.Client) -> str | None:
        if not _transparent(client) or not client.peername:
            return None
        return self._book.device_at(str(client.peername[0]))


class DeviceIdentity:
    def __init__(
        self, directory: DeviceDirectory | None = None, *, resolvers: Sequence[ClientDevices] = ()
    ) -> None:
        self.directory = directory
        self.resolvers = tuple(resolvers)
        self._devices: dict[str, str] = {}  # client id → device id, from its CONNECT

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gateway_require_identity",
            bool,
            False,
            "Answer 407 to clients that do not identify as an enrolled device (Proxy-Authorization).",
        )

    # -- who is this client ----------------------------------------------------------------------
    def identity_of(self, client: connection.Client) -> Identity:
        """The identity of the client's CONNECT tunnel, or of the way it arrived (``resolvers``);
        ANONYMOUS when it did not identify."""
        return self._identity(self._devices.get(client.id) or self._resolved(client))

    def account_of(self, client: connection.Client) -> str | None:
        """The account of the client's device (what signs its leaves and decides its requests);
        None when it did not identify (the gateway's default account)."""
        return self.identity_of(client).account_id or None

    def http_connect(self, flow: http.HTTPFlow) -> None:
        device_id = self._authenticate(flow)
        if device_id is not None:
            self._devices[flow.client_conn.id] = device_id
        elif ctx.options.gateway_require_identity:
            self._challenge(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Inside a CONNECT tunnel the tunnel's device counts; a plain-HTTP proxy request carries
        its own credentials (RFC 9110 §11.7.2), so it is identified by them alone: a request
        without them, or with a wrong secret, never borrows an earlier request's device."""
        if flow.request.method == "CONNECT" or flow.response is not None:
            return
        client = flow.client_conn
        if not _sends_credentials(client):  # transparent, WireGuard: how it arrived names it
            device_id = self._resolved(client)
            flow.metadata[IDENTITY] = self._identity(device_id)
            if device_id is None and ctx.options.gateway_require_identity:
                self._unidentified(flow)
        elif client.tls:
            device_id = self._devices.get(client.id)
        else:
            device_id = self._authenticate(flow)
            flow.metadata[IDENTITY] = self._identity(device_id)
            if device_id is None and ctx.options.gateway_require_identity:
                self._challenge(flow)
        if HEADER in flow.request.headers:
            del flow.request.headers[HEADER]  # never forwarded upstream, whatever the mode
        if device_id is not None:
            flow.metadata.setdefault(IDENTITY, self._identity(device_id))

    def client_disconnected(self, client: connection.Client) -> None:
        self._devices.pop(client.id, None)

    # -- helpers -----------------------------------------------------------------------------------
    def _resolved(self, client: connection.Client) -> str | None:
        for resolver in self.resolvers:
            device_id = resolver.device_of(client)
            if device_id is not None:
                return device_id
        return None

    def _identity(self, device_id: str | None) -> Identity:
        if device_id is None or self.directory is None:
            return ANONYMOUS
        return self.directory.identity(device_id)

    def _authenticate(self, flow: http.HTTPFlow) -> str | None:
        header = flow.request.headers.get(HEADER)
        if not header or self.directory is None:
            return None
        try:
            scheme, device, secret = parse_http_basic_auth(header)
        except ValueError:
            logger.info("client %s sent a malformed %s header", flow.client_conn.peername, HEADER)
            return None
        if scheme.lower() != "basic":
            return None
        device_id = self.directory.authenticate(device, secret)
        if device_id is None:
            logger.warning(
                "client %s: device %r was not recognised (unknown device or wrong secret)",
                flow.client_conn.peername,
                device[:64],
            )
        return device_id

    def _unidentified(self, flow: http.HTTPFlow) -> None:
        address = flow.client_conn.peername[0] if flow.client_conn.peername else "?"
        logger.info("transparent client %s: no device registered or bound for this address: 403", address)
        flow.response = http.Response.make(
            403,
            f"This gateway needs the device's identity, and no enrolled device is registered at {address}: "
            "run the Gateway agent (gateway agent enroll / report) on this device, or ask an administrator "
            "to bind this address to it (gateway device bind DEVICE ADDRESS).\n".encode(),
            {"Content-Type": "text/plain; charset=utf-8"},
        )

    def _challenge(self, flow: http.HTTPFlow) -> None:
        flow.response = http.Response.make(
            407,
            b"This gateway needs the device's identity: run the Gateway agent (gateway agent enroll) "
            b"and send its device id and secret as proxy credentials.\n",
            {"Proxy-Authenticate": f'Basic realm="{REALM}"', "Content-Type": "text/plain; charset=utf-8"},
        )


def _transparent(client: connection.Client) -> bool:
    return client.proxy_mode.type_name == "transparent"


def _sends_credentials(client: connection.Client) -> bool:
    """Only an explicit-proxy client (regular mode) can send Proxy-Authorization and answer a
    407; in the other modes the resolvers (address, WireGuard listener) name the device."""
    return client.proxy_mode.type_name == "regular"
