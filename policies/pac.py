"""Proxy auto-config (PAC) files: which hosts a browser sends to the proxy, and which it reaches
directly. Pure: the admin server (``GET /proxy.pac``) and the agent's local proxy render their
PAC files with the same code, each naming its own proxy.

Always direct: loopback, private and link-local ranges (10/8, 172.16/12, 192.168/16, 169.254/16,
and fc00::/7, fe80::/10 as host literals), ``localhost`` and names under it, plain host names
(no dot: intranet names), the hosts the caller names (the admin host), and the configured
exclusions. Everything else goes to the proxy, with no fallback to ``DIRECT``: a gateway that is
down must not turn into no gateway at all.

An exclusion is one of (``PacFile.exclusion`` checks it):

- a host name, ``intranet.example``: that name and every name under it (as curl's ``NO_PROXY``);
- a pattern with ``*`` or ``?``, ``*.corp.example``: PAC's ``shExpMatch`` on the host name;
- an IPv4 address or network, ``203.0.113.7``, ``203.0.113.0/24``: a host written as that
  address (PAC's ``isInNet`` on a literal only, so that no host name is resolved by the browser).

IPv6 networks are not accepted: PAC's ``isInNet`` is IPv4 only, and the same IPv6 address can be
written many ways.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from dataclasses import dataclass
from enum import Enum

from policies.errors import PolicyError

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-ns-proxy-autoconfig"
MAX_EXCLUSIONS = 500
MAX_EXCLUSION_LENGTH = 253

PRIVATE_NETWORKS = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
    ipaddress.IPv4Network("169.254.0.0/16"),
)
# fc00::/7 (unique local), fe80::/10 (link-local) and ::1, as PAC can test them: on the literal.
_IPV6_DIRECT = r"/^(::1$|f[cd][0-9a-f]{0,2}:|fe[89ab][0-9a-f]?:)/"

_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$"
)
_PATTERN = re.compile(r"^[a-z0-9_.*?-]{1,253}$")
_PROXY = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+):[0-9]{1,5}$")


class PacError(PolicyError):
    """An exclusion or proxy address a PAC file cannot carry; the message says what would do."""


class ExclusionKind(Enum):
    NAME = "name"  # the name and every name under it
    PATTERN = "pattern"  # shExpMatch
    NETWORK = "network"  # an IPv4 literal inside the network


@dataclass(frozen=True)
class Exclusion:
    kind: ExclusionKind
    value: str  # lower-case name, pattern, or network ("203.0.113.0/24")


@dataclass(frozen=True)
class PacFile:
    """A PAC file sending everything but the direct hosts to ``proxy`` (``HOST:PORT``)."""

    proxy: str
    exclusions: tuple[Exclusion, ...] = ()
    direct_hosts: tuple[str, ...] = ()  # names or literals reached directly (the admin host)

    def __post_init__(self) -> None:
        if not _PROXY.match(self.proxy.lower()):
            raise PacError(f"proxy {self.proxy!r}: expected HOST:PORT (for example gw.example:8080)")

    @staticmethod
    def exclusion(text: str) -> Exclusion:
        """One configured exclusion, checked; ``PacError`` says what is accepted."""
        value = text.strip().lower().rstrip(".")
        if not value or len(value) > MAX_EXCLUSION_LENGTH:
            raise PacError(
                f"{text!r}: give a host name, a pattern such as *.corp.example, or an IPv4 network"
            )
        if "/" in value or _looks_like_address(value):
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise PacError(f"{text!r}: not an IP address or network (such as 203.0.113.0/24)") from None
            if network.version == 6:
                raise PacError(
                    f"{text!r}: IPv6 networks cannot be expressed in a PAC file (isInNet is IPv4 only); "
                    "list the host names instead"
                )
            return Exclusion(ExclusionKind.NETWORK, str(network))
        if "*" in value or "?" in value:
            if not _PATTERN.match(value):
                raise PacError(f"{text!r}: a pattern may hold letters, digits, '-', '.', '*' and '?' only")
            return Exclusion(ExclusionKind.PATTERN, value)
        if not _NAME.match(value):
            raise PacError(
                f"{text!r}: not a host name (letters, digits, '-' and dots; such as intranet.example)"
            )
        return Exclusion(ExclusionKind.NAME, value)

    def render(self) -> str:
        names = sorted({"localhost", *(h.lower().strip("[]") for h in self.direct_hosts if h)})
        names += [e.value for e in self.exclusions if e.kind is ExclusionKind.NAME and e.value not in names]
        patterns = ["*.localhost", *(e.value for e in self.exclusions if e.kind is ExclusionKind.PATTERN)]
        networks = [*PRIVATE_NETWORKS]
        networks += [
            n
            for e in self.exclusions
            if e.kind is ExclusionKind.NETWORK and (n := ipaddress.IPv4Network(e.value)) not in networks
        ]
        nets = [[str(n.network_address), str(n.netmask)] for n in networks]
        return _TEMPLATE.format(
            names=json.dumps(names),
            patterns=json.dumps(patterns),
            networks=json.dumps(nets),
            ipv6=_IPV6_DIRECT,
            proxy=json.dumps(f"PROXY {self.proxy}"),
        )


def _looks_like_address(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+", value)) or ":" in value


_TEMPLATE = """\
// Proxy auto-config from Gateway: the proxy for everything but loopback, private and
// link-local ranges, plain host names and the hosts below. No DIRECT fallback: when the
// proxy is down, the browser says so instead of going around it.
var DIRECT_NAMES = {names};
var DIRECT_PATTERNS = {patterns};
var DIRECT_NETWORKS = {networks};

function FindProxyForURL(url, host) {{
  host = host.toLowerCase();
  if (host.charAt(0) == "[") host = host.substring(1, host.length - 1);
  if (host.charAt(host.length - 1) == ".") host = host.substring(0, host.length - 1);
  if (host.indexOf(":") >= 0) return {ipv6}.test(host) ? "DIRECT" : {proxy};
  if (isPlainHostName(host)) return "DIRECT";
  for (var i = 0; i < DIRECT_NAMES.length; i++) {{
    var name = DIRECT_NAMES[i];
    if (host == name || dnsDomainIs(host, "." + name)) return "DIRECT";
  }}
  for (var j = 0; j < DIRECT_PATTERNS.length; j++) {{
    if (shExpMatch(host, DIRECT_PATTERNS[j])) return "DIRECT";
  }}
  if (/^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$/.test(host)) {{
    for (var k = 0; k < DIRECT_NETWORKS.length; k++) {{
      if (isInNet(host, DIRECT_NETWORKS[k][0], DIRECT_NETWORKS[k][1])) return "DIRECT";
    }}
  }}
  return {proxy};
}}
"""
