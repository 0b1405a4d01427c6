from mitmproxy.test import taddons, tflow, tutils

from addons.upstream import UpstreamErrors


def _flow(error: str | None, accept: str = "*/*"):
    flow = tflow.tflow(req=tutils.treq(host="untrusted.test", port=443, scheme=b"https"))
    flow.request.headers["accept"] = accept
    flow.server_conn.error = error
    return flow


def test_untrusted_upstream_gets_a_page_naming_the_reason() -> None:
    addon = UpstreamErrors()
    with taddons.context(addon):
        flow = _flow("Certificate verify failed: self-signed certificate")
        addon.request(flow)
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert flow.response.headers["content-type"].startswith("text/plain")
    text = flow.response.get_text()
    assert "could not verify the TLS certificate of untrusted.test: self-signed certificate" in text
    assert flow.metadata["gateway.upstream_error"].startswith("Certificate verify failed")


def test_browsers_get_html_with_escaped_reason() -> None:
    addon = UpstreamErrors()
    with taddons.context(addon):
        flow = _flow("Certificate verify failed: <script>", accept="text/html,application/xhtml+xml")
        addon.request(flow)
    assert flow.response is not None
    assert flow.response.headers["content-type"].startswith("text/html")
    body = flow.response.get_text()
    assert "&lt;script&gt;" in body and "<script>" not in body


def test_connect_failures_are_named_too() -> None:
    addon = UpstreamErrors()
    with taddons.context(addon):
        flow = _flow("Connection refused")
        addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert "could not connect to untrusted.test: Connection refused" in flow.response.get_text()


def test_healthy_upstream_is_left_alone() -> None:
    addon = UpstreamErrors()
    with taddons.context(addon):
        flow = _flow(None)
        addon.request(flow)
    assert flow.response is None
