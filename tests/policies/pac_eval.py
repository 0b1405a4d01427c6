"""Run a PAC file's ``FindProxyForURL`` for real, in Node.js, with the PAC helper functions
browsers provide (Netscape's definitions). ``isInNet`` on a name that is not an IPv4 literal
throws: a PAC file that would make the browser resolve host names fails the test."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

_HELPERS = r"""
function isPlainHostName(host) { return host.indexOf(".") < 0; }
function dnsDomainIs(host, domain) {
  return host.length >= domain.length && host.substring(host.length - domain.length) == domain;
}
function shExpMatch(str, pattern) {
  var re = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp("^" + re + "$").test(str);
}
function _ip4(text) {
  var parts = text.split(".");
  if (parts.length != 4) throw new Error("isInNet on a name that is not an IPv4 literal: " + text);
  return parts.reduce(function (acc, p) { return acc * 256 + Number(p); }, 0);
}
function isInNet(host, pattern, mask) {
  var m = _ip4(mask);
  return (_ip4(host) & m) >>> 0 == (_ip4(pattern) & m) >>> 0;
}
function dnsResolve(host) { throw new Error("dnsResolve called for " + host); }
function myIpAddress() { throw new Error("myIpAddress called"); }
"""


def find_proxy(pac: str, hosts: list[str]) -> dict[str, str]:
    """``FindProxyForURL("https://HOST/", HOST)`` for each host (as browsers pass it: IPv6
    literals without brackets), by host."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("Node.js is not installed (apt-get install nodejs): the PAC file cannot be run")
    script = (
        _HELPERS
        + pac
        + f"\nvar hosts = {json.dumps(hosts)};\nvar out = {{}};\n"
        + "hosts.forEach(function (h) { out[h] = FindProxyForURL('https://' + h + '/', h); });\n"
        + "process.stdout.write(JSON.stringify(out));\n"
    )
    ran = subprocess.run([node, "-e", script], capture_output=True, timeout=30, check=False)
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    result = json.loads(ran.stdout)
    assert isinstance(result, dict)
    return {str(k): str(v) for k, v in result.items()}
