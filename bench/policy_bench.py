"""Gateway decisions per second for 10, 100 and 1,000 rules, on one core, in one run.

Each rule set mixes what real policies hold (shares of the rule count):
  36% host rules         http.request.host == "..." / in {...}, some with a method clause
  30% domain rules       any(http.request.domains[*] in {...})
  15% host + regex       host and http.request.uri.path matches "..."
  10% domain + identity  a domain and an identity-group or device-posture clause
   9% SNI rules          net.sni.host / http.conn.domains (HTTP actions, indexed by SNI too)
plus rules no index can narrow (two regexes over every URL, posture-, identity- and
method-only rules: ``OPEN``), which every request evaluates: 1 at 10 rules, 5 at 100 and 1,000 (real policy sets hold a handful, not a
share; each costs about 1-2 µs per request, so 20 of them would cost ~30 µs on their own), and
3 Do Not Inspect rules (always evaluated first). Requests cycle over 2,000 facts: half to
hosts some rule names, half to hosts no rule names (the worst case for a host index is not
"every host is in a rule"; the realistic one is mostly unknown hosts), with mixed identity and
posture. A decision is ``GatewayEngine.decide(facts)``, context building included; facts are
made beforehand (the proxy builds them per request anyway).

``--list-items N`` adds a DOMAIN list of N items and two rules on it (``http.request.host in
$list``, ``any(http.request.domains[*] in $list)``), indexed under the list. ``--pairs K`` (with
``--list-items``) measures, at 1,000 rules only and in one process, the engine without and with
the list in K alternating pairs of ``--seconds`` each and prints the median ratio: both sides
see the same load, so the ratio holds on a shared machine where absolute rates wander.

Run:  .venv/bin/python bench/policy_bench.py [--seconds 2] [--json] [--list-items N [--pairs K]]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from policies.engine import GatewayEngine
from policies.facts import Identity, RequestFacts
from policies.list_matchers import ListRegistry, ListType
from policies.lists import GatewayList, ListItem
from policies.rules import GatewayRule

POSTURE = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"
SIZES = (10, 100, 1000)


def open_rules(count: int) -> int:
    """Rules no host index can narrow: few in real policies, whatever their size."""
    return min(5, max(1, count // 20))


REQUESTS = 2000


# The rules no index narrows, the same ones at every size (in this order).
OPEN: list[dict[str, str]] = [
    {"device_posture": f'any(device_posture.checks.failed[*] == "{POSTURE}")'},
    {"traffic": 'http.request.uri matches "(?i)/download/[^/]+[.](exe|msi)$"'},
    {"traffic": 'http.request.method == "PUT"', "identity": 'identity.email == ""'},
    {"traffic": 'http.request.uri.path matches "^/wp-(admin|login)"'},
    {"identity": 'any(identity.groups.name[*] == "contractors")'},
]


def make_rules(count: int, rng: random.Random) -> tuple[list[GatewayRule], list[str]]:
    """``count`` HTTP rules plus 3 Do Not Inspect rules, and the hosts the rules name."""
    shares = [("host", 36), ("domain", 30), ("regex", 15), ("posture", 10), ("sni", 9)]
    kinds = [kind for kind, share in shares for _ in range(max(1, round(count * share / 100)))]
    rng.shuffle(kinds)
    kinds = ["open"] * open_rules(count) + kinds[: count - open_rules(count)]
    rng.shuffle(kinds)
    bodies: list[dict[str, object]] = []
    opened = 0
    hosts: list[str] = []
    for i, kind in enumerate(kinds):
        host = f"h{i}.site{i % 97}.example"
        body: dict[str, object] = {
            "name": f"{kind} {i}",
            "action": rng.choice(["block", "allow", "block"]),
        }
        if kind == "host":
            others = " ".join(f'"alt{i}-{j}.example"' for j in range(3))
            body["traffic"] = (
                f'http.request.host in {{"{host}" {others}}}'
                if i % 2
                else f'http.request.host == "{host}" and http.request.method == "POST"'
            )
            hosts.append(host)
        elif kind == "domain":
            domain = f"d{i}.example"
            body["traffic"] = f'any(http.request.domains[*] in {{"{domain}" "e{i}.example.org"}})'
            hosts.append(f"www.{domain}")
        elif kind == "regex":
            body["traffic"] = (
                f'http.request.host == "{host}" and http.request.uri.path matches "^/api/v[0-9]+/(users|admin)/{i}"'
            )
            hosts.append(host)
        elif kind == "posture":
            body["traffic"] = f'any(http.request.domains[*] == "p{i}.example")'
            if i % 2:
                body["device_posture"] = f'not(any(device_posture.checks.passed[*] in {{"{POSTURE}"}}))'
            else:
                body["identity"] = 'not(any(identity.groups.name[*] in {"engineering" "sales"}))'
            hosts.append(f"app.p{i}.example")
        elif kind == "sni":
            body["traffic"] = f'net.sni.host == "s{i}.example" or any(http.conn.domains[*] == "c{i}.example")'
            hosts.append(f"s{i}.example")
        else:
            body.update(OPEN[opened % len(OPEN)])
            opened += 1
        bodies.append(body)
    dni = [
        {
            "name": "dni bank",
            "action": "off",
            "traffic": 'any(http.conn.domains[*] in {"bank.example" "bank2.example"})',
        },
        {
            "name": "dni pinned",
            "action": "off",
            "traffic": 'net.sni.host in {"pinned.example" "pinned2.example"}',
        },
        {
            "name": "dni lab",
            "action": "off",
            "traffic": 'any(http.conn.domains[*] == "lab.example")',
            "device_posture": f'any(device_posture.checks.passed[*] == "{POSTURE}")',
        },
    ]
    rules = []
    for precedence, body in enumerate(dni + bodies, start=1):
        rules.append(GatewayRule.from_api({**body, "precedence": precedence * 10}, where="bench"))
    return rules, hosts


LIST_ID = "5b1d0c4e-0000-4000-8000-00000000b1d5"


def make_list(items: int, hosts: list[str], rng: random.Random) -> GatewayList:
    """A DOMAIN list of ``items`` domains: a tenth of the rules' hosts (so some requests match),
    the rest made up."""
    named = rng.sample(hosts, min(len(hosts) // 10, items))
    values = dict.fromkeys(named)
    i = 0
    while len(values) < items:
        values[f"listed{i}.example.org"] = None
        i += 1
    return GatewayList("bench list", ListType.DOMAIN, LIST_ID, items=tuple(ListItem(v) for v in values))


def list_rules(precedence: int) -> list[GatewayRule]:
    """Two rules on the list, after all the others. The index files them under the list, so
    only requests to a listed host (or a subdomain of one) evaluate them."""
    bodies = [
        {"name": "listed host", "action": "block", "traffic": f"http.request.host in ${LIST_ID}"},
        {
            "name": "listed domain",
            "action": "block",
            "traffic": f"any(http.request.domains[*] in ${LIST_ID})",
        },
    ]
    return [
        GatewayRule.from_api({**body, "precedence": precedence + i}, where="bench", check_expressions=False)
        for i, body in enumerate(bodies)
    ]


def make_requests(hosts: list[str], rng: random.Random) -> list[RequestFacts]:
    identities = [
        Identity.of(),
        Identity.of(email="ana@example.com", groups=["engineering"], passed=[POSTURE]),
        Identity.of(email="bo@example.com", groups=["marketing"], failed=[POSTURE]),
    ]
    paths = ["/", "/index.html", "/api/v2/users/7", "/download/tool.exe", "/search?q=x"]
    out = []
    for i in range(REQUESTS):
        host = rng.choice(hosts) if hosts and i % 2 else f"www.unknown{rng.randrange(5000)}.example.net"
        out.append(
            RequestFacts.from_url(
                f"https://{host}{rng.choice(paths)}",
                method=rng.choice(["GET", "GET", "POST"]),
                src_ip=f"10.0.{i % 250}.{i % 200 + 1}",
                identity=identities[i % 3],
            )
        )
    return out


def measure(engine: GatewayEngine, requests: list[RequestFacts], seconds: float) -> float:
    """Decisions per CPU second of this process (``time.process_time``): other processes on a
    shared machine slow the wall clock, not the work done per decision."""
    decide = engine.decide
    for facts in requests:  # warm: candidate cache and code paths
        decide(facts)
    done = 0
    start = time.process_time()
    deadline = time.perf_counter() + seconds
    while True:
        for facts in requests:
            decide(facts)
        done += len(requests)
        if time.perf_counter() >= deadline:
            return done / (time.process_time() - start)


def compare_pairs(items: int, pairs: int, seconds: float, *, as_json: bool) -> int:
    """1,000 rules without and with the list, alternating; the median of the pairs' ratios."""
    rng = random.Random(1000)
    rules, hosts = make_rules(1000, rng)
    requests = make_requests(hosts, rng)
    gateway_list = make_list(items, hosts, rng)
    without = GatewayEngine.build(rules)
    lookup = ListRegistry().lookup([gateway_list])
    with_list = GatewayEngine.build(rules + list_rules(10 * (len(rules) + 10)), lists=lookup)
    rows = [
        (measure(without, requests, seconds), measure(with_list, requests, seconds)) for _ in range(pairs)
    ]
    ratios = sorted(w / wo for wo, w in rows)
    median = statistics.median(ratios)
    # Load-independent: how many HTTP rules the index hands each request (an upper bound of the
    # rules evaluated; the first match stops earlier).
    looked_at = [
        statistics.mean(len(engine.candidates(f.host, f.connection.sni)) for f in requests)
        for engine in (without, with_list)
    ]
    if as_json:
        print(
            json.dumps(
                {
                    "pairs": [{"without": wo, "with": w} for wo, w in rows],
                    "median_ratio": median,
                    "candidates_per_request": {"without": looked_at[0], "with": looked_at[1]},
                }
            )
        )
        return 0
    print(f"1,000 rules, without / with a {items:,}-item DOMAIN list and 2 rules on it, {pairs} pairs")
    for number, (wo, w) in enumerate(rows, start=1):
        print(f"  pair {number}: {wo:>10,.0f}/s  {w:>10,.0f}/s  with/without {w / wo:.3f}")
    print(f"HTTP rules each request looks at (mean): without {looked_at[0]:.2f}, with {looked_at[1]:.2f}")
    print(f"median with/without: {median:.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f})")
    print(f"median decisions/s: without {statistics.median(r[0] for r in rows):,.0f}, "
          f"with {statistics.median(r[1] for r in rows):,.0f}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per rule count (default: 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--list-items",
        type=int,
        default=0,
        metavar="N",
        help="add a DOMAIN list of N items and two rules on it, indexed under the list "
        "(http.request.host in $list, any(http.request.domains[*] in $list)); also time a change "
        "to the list (one item added: new matcher, the two rules recompiled, engine rebuilt)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        metavar="K",
        help="with --list-items: at 1,000 rules only, K alternating pairs (without, with the list) "
        "of --seconds each in this process, and the median ratio with/without",
    )
    args = parser.parse_args(argv)
    if args.pairs:
        if not args.list_items:
            parser.error("--pairs needs --list-items N")
        return compare_pairs(args.list_items, args.pairs, args.seconds, as_json=args.json)
    results: dict[str, dict[str, float]] = {}
    for size in SIZES:
        rng = random.Random(size)
        rules, hosts = make_rules(size, rng)
        requests = make_requests(hosts, rng)
        registry = ListRegistry()
        row: dict[str, float] = {}
        if args.list_items:
            gateway_list = make_list(args.list_items, hosts, rng)
            rules += list_rules(10 * (len(rules) + 10))
            registry.lookup([gateway_list])
        built = time.perf_counter()
        engine = GatewayEngine.build(
            rules, lists=registry.lookup([gateway_list]) if args.list_items else None
        )
        row["build_ms"] = (time.perf_counter() - built) * 1000
        row["decisions_per_s"] = measure(engine, requests, args.seconds)
        row["unindexed_decisions_per_s"] = measure(
            GatewayEngine.build(
                rules, indexed=False, lists=registry.lookup([gateway_list]) if args.list_items else None
            ),
            requests,
            min(args.seconds, 1.0),
        )
        if args.list_items:
            changed = GatewayList(
                gateway_list.name, gateway_list.type, gateway_list.id,
                items=(*gateway_list.items, ListItem("added.example.org")),
            )  # fmt: skip
            compiled = [r.compile(lists=registry.lookup([gateway_list])) for r in rules]
            started = time.perf_counter()
            lookup = registry.lookup([changed])
            fresh = [c if c.uses_current_lists(lookup) else c.rule.compile(lists=lookup) for c in compiled]
            GatewayEngine.build(fresh)
            row["list_change_ms"] = (time.perf_counter() - started) * 1000
            row["recompiled_rules"] = sum(1 for a, b in zip(compiled, fresh, strict=True) if a is not b)
        results[str(size)] = row
    ratio = results["10"]["decisions_per_s"] / results["1000"]["decisions_per_s"]
    if args.json:
        summary = {
            "results": results,
            "cost_ratio_1000_vs_10": ratio,
            "rate_ratio_1000_vs_10": 1 / ratio,
        }
        print(json.dumps(summary, indent=2))
        return 0
    if args.list_items:
        print(f"with a {args.list_items:,}-item DOMAIN list and 2 rules on it (indexed under the list)")
    print(f"{'rules':>6} {'decisions/s':>12} {'µs/decision':>12} {'no index/s':>11} {'build ms':>9}")
    for size, row in results.items():
        rate = row["decisions_per_s"]
        print(
            f"{size:>6} {rate:>12,.0f} {1e6 / rate:>12.2f} {row['unindexed_decisions_per_s']:>11,.0f} {row['build_ms']:>9.1f}"
        )
        if "list_change_ms" in row:
            print(
                f"{'':>6} list change: {row['list_change_ms']:.1f} ms "
                f"({row['recompiled_rules']:.0f} rules recompiled of {int(size) + 5})"
            )
    speed = results["1000"]["decisions_per_s"] / results["10"]["decisions_per_s"]
    print(f"decisions/s at 1000 rules / at 10 rules: {speed:.2f} (rule count: 100x)")
    print(f"cost per decision, 1000 rules vs 10 rules: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
