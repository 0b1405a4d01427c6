"""What the gateway's own per-request hooks cost, in-process, with no rules and with N rules.

The end-to-end keep-alive figures of ``bench/run`` move by +-30 % from one second to the next on a
shared VM, so a few-percent difference between "no rules" and "1,000 rules" needs many rounds to
show. This measures the difference where it is made: the gateway's hooks that run for every
request, called on a keep-alive-like flow (``GET https://same.bench.test/`` over an intercepted
connection, response 200 with a 24-byte body), one call at a time, with the addons built as
``gateway run`` builds them:

  DeviceIdentity.requestheaders   device identity (no Proxy-Authorization: anonymous)
  Enforcer.request                no rules (the idle path) vs the N rules of bench/rulegen.py
                                  (request facts, Do Not Inspect and HTTP rules, Access lookup)
  (and, apart, the parts of the N-rule case: request facts, GatewayEngine.decide, AccessEngine.decide,
  and one mitmproxy ``Request.pretty_host``, which the facts and the log line each call)
  RequestLog.response             one JSON line into the buffered requests.jsonl (flushed every
                                  125 lines, about what the 0.5 s timer sees at 250 req/s)

Figures are CPU microseconds per call (``time.process_time``; median of ``--repeat`` runs of
``--calls`` calls each, per-run figures kept in the JSON), next to each other so the N-rule extra
is one subtraction. Set against the proxy's CPU per keep-alive request (``bench/run``), they give
the expected throughput loss without the end-to-end noise.

Run:  .venv/bin/python bench/hook_bench.py [--rules 1000] [--calls 3000] [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import rulegen
from mitmproxy.test import taddons, tflow, tutils

from addons.enforcement import Enforcer, PolicySnapshot, request_facts
from addons.identity import DeviceIdentity
from addons.request_log import RequestLog
from policies.access import AccessEngine
from policies.engine import GatewayEngine
from policies.yaml_io import load_files
from proxy.jsonlines import JsonLinesFile
from proxy.metrics import Metrics
from proxy.services.policies import PolicyEngines

HOST = rulegen.BENCH_HOST


def make_flow() -> Any:
    flow = tflow.tflow(resp=False)
    req = flow.request
    req.scheme, req.host, req.port, req.path = "https", HOST, 443, "/"
    req.headers["host"] = HOST
    flow.client_conn.peername = ("127.0.0.1", 50123)
    flow.client_conn.sni = HOST
    flow.client_conn.tls = True  # inside a CONNECT tunnel, as the benchmark client
    flow.server_conn.address = (HOST, 443)
    flow.server_conn.peername = ("127.0.0.1", 443)
    return flow


def per_call(fn: Callable[[], None], calls: int) -> float:
    """CPU microseconds per call of ``fn``."""
    for _ in range(min(200, calls)):
        fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rules", type=int, default=1000)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="gateway-hookbench-"))
    rules_file = tmp / "rules.yaml"
    rulegen.write(rules_file, a.rules)
    policy_set = load_files([rules_file])
    engines = {
        "none": PolicyEngines(GatewayEngine.build([]), AccessEngine.build([], []), 1),
        "rules": PolicyEngines(policy_set.gateway_engine(), policy_set.access_engine(), 2),
    }
    sink = JsonLinesFile(tmp / "requests.jsonl")
    identity = DeviceIdentity(None)
    request_log = RequestLog(sink.write, node_id="bench", ca_fingerprint=lambda client_id: "ab" * 32)
    enforcers = {}
    for key, eng in engines.items():
        enforcers[key] = Enforcer(Metrics(), identity_of=identity.identity_of)
        enforcers[key].use(PolicySnapshot(engines=eng))

    runs: dict[str, list[float]] = {
        "identity": [],
        "enforcer none": [],
        "enforcer rules": [],
        "request log": [],
        "facts": [],
        "gateway decide": [],
        "access decide": [],
        "pretty_host": [],
    }
    with taddons.context(identity):
        flow = make_flow()
        responded = make_flow()
        responded.response = tutils.tresp(content=b"gateway-bench-origin ok\n")
        written = [0]

        def log_once() -> None:
            request_log.response(responded)
            written[0] += 1
            if written[0] % 125 == 0:
                sink.flush()

        def decide(enforcer: Enforcer) -> Callable[[], None]:
            def once() -> None:
                flow.metadata.clear()
                enforcer.request(flow)

            return once

        for _ in range(a.repeat):  # interleaved, so slow and fast moments of the machine hit all alike
            runs["identity"].append(per_call(lambda: identity.requestheaders(flow), a.calls))
            runs["enforcer none"].append(per_call(decide(enforcers["none"]), a.calls))
            runs["enforcer rules"].append(per_call(decide(enforcers["rules"]), a.calls))
            runs["request log"].append(per_call(log_once, a.calls))
            # parts of "enforcer rules": building the facts, the Gateway rules, the Access lookup
            facts = request_facts(flow)
            runs["facts"].append(per_call(lambda: request_facts(flow), a.calls))
            runs["gateway decide"].append(
                per_call(lambda f=facts: engines["rules"].gateway.decide(f), a.calls)
            )
            runs["access decide"].append(per_call(lambda f=facts: engines["rules"].access.decide(f), a.calls))
            runs["pretty_host"].append(per_call(lambda: flow.request.pretty_host, a.calls))
        decision = flow.metadata.get("gateway.decision")
    sink.close()
    if decision is None or decision.action != "allow" or flow.response is not None:
        print(f"hook_bench: the benchmark request was not allowed: {decision}", file=sys.stderr)
        return 1
    med = {k: statistics.median(v) for k, v in runs.items()}
    extra = med["enforcer rules"] - med["enforcer none"]
    total_none = med["identity"] + med["enforcer none"] + med["request log"]
    result = {
        "rules": a.rules,
        "calls": a.calls,
        "repeat": a.repeat,
        "median_us": med,
        "runs_us": runs,
        "rules_extra_us": extra,
        "gateway_hooks_no_rules_us": total_none,
        "gateway_hooks_rules_us": total_none + extra,
        "candidates_for_bench_host": len(engines["rules"].gateway.candidates(HOST, HOST)),
    }
    if a.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"Gateway per-request hooks, in-process, CPU us per call (median of {a.repeat} x {a.calls} calls)")
    for key, label in (
        ("identity", "DeviceIdentity.requestheaders"),
        ("enforcer none", "Enforcer.request, no rules"),
        ("enforcer rules", f"Enforcer.request, {a.rules} rules"),
        ("request log", "RequestLog.response"),
    ):
        spread = f"{min(runs[key]):.1f}-{max(runs[key]):.1f}"
        print(f"  {label:<36} {med[key]:8.1f}   (runs {spread})")
    for key, label in (
        ("facts", "  of which request_facts()"),
        ("gateway decide", "  of which GatewayEngine.decide()"),
        ("access decide", "  of which AccessEngine.decide()"),
        ("pretty_host", "mitmproxy Request.pretty_host (1 call)"),
    ):
        print(f"  {label:<36} {med[key]:8.1f}   (runs {min(runs[key]):.1f}-{max(runs[key]):.1f})")
    print(f"  {'all three, no rules':<36} {total_none:8.1f}")
    print(f"  {'all three, ' + str(a.rules) + ' rules':<36} {total_none + extra:8.1f}")
    print(
        f"extra per request with {a.rules} rules: {extra:.1f} us ({result['candidates_for_bench_host']} of the rules "
        f"are candidates for {HOST}); as a share of the proxy's CPU per keep-alive request (bench/run): "
        f"{extra / 3500:.1%} at 3,500 us, {extra / 2500:.1%} at 2,500 us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
