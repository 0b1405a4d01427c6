"""A realistic policy file of N Gateway rules (plus Access) for the proxy benchmark with rules loaded.

None of the rules matches the benchmark's host (``same.bench.test``): every request through the
gateway walks the engine (request facts, Do Not Inspect check, HTTP rules, Access lookup) and is
allowed, so the benchmark measures the cost of deciding, not a cheaper block page. Shares of the
rule count (at 1,000 rules):

  ~1%  Do Not Inspect (``off``) for other SNIs, and one ``on`` exception
  35%  exact hosts: ``http.request.host == ...`` / ``in {...}``, some with a method clause
  30%  domain lists: ``any(http.request.domains[*] in {...})`` (2-6 domains each)
  12%  host + path regex (``matches``)
  10%  a domain + device posture: ``not(any(device_posture.checks.passed[*] in {...}))``
   6%  a domain + identity groups
   3%  redirects; ~1% allow rules with ``untrusted_cert`` settings
  and a few rules no host index can narrow (regexes over every URL, posture-, identity- and
  method-only), two rules about the benchmark host that do not match a ``GET /`` (a method and
  a path clause: a real host usually has a rule or two about it), one control rule that blocks
  ``ctl.bench.test`` (the benchmark checks that it is blocked: the rules are really enforced),
  and 5 Access applications (exact and wildcard) with 4 Access policies for other hosts.

Run alone:  .venv/bin/python bench/rulegen.py --rules 1000 -o /tmp/rules.yaml   (then
``gateway policy lint /tmp/rules.yaml``); ``bench/run`` calls :func:`write` and :func:`check`.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCH_HOST = "same.bench.test"
CONTROL_HOST = "ctl.bench.test"  # one rule blocks it: proof that the file is enforced
POSTURE = ["6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7", "0b7e4c1d-2a3f-4b5c-8d6e-7f8091a2b3c4"]
WORDS = (
    "mail",
    "files",
    "crm",
    "wiki",
    "chat",
    "video",
    "shop",
    "news",
    "ads",
    "cdn",
    "api",
    "auth",
    "games",
    "bet",
    "social",
    "drive",
    "photos",
    "music",
    "travel",
    "jobs",
    "dev",
    "status",
)
TLDS = ("com", "net", "org", "io", "example", "co.uk", "de", "fr")

# Rules no index can narrow: a real set holds a handful (each runs for every request).
UNINDEXED: list[dict[str, Any]] = [
    {
        "name": "Block executable downloads",
        "action": "block",
        "traffic": r'lower(http.request.uri.path) matches "\.(exe|msi|scr|bat)$"',
        "rule_settings": {
            "block_page_enabled": True,
            "block_reason": "Executables come from the software portal.",
        },
    },
    {
        "name": "Block WordPress admin probes",
        "action": "block",
        "traffic": 'http.request.uri.path matches "^/wp-(admin|login)"',
    },
    {
        "name": "Quarantined devices",
        "action": "block",
        "device_posture": f'any(device_posture.checks.failed[*] == "{POSTURE[1]}")',
    },
    {"name": "No TRACE", "action": "block", "traffic": 'http.request.method in {"TRACE" "TRACK"}'},
    {
        "name": "Contractors: no uploads anywhere",
        "action": "block",
        "traffic": 'http.request.method in {"POST" "PUT"}',
        "identity": 'any(identity.groups.name[*] == "contractors")',
    },
]


KINDS = ("host", "domains", "regex", "posture", "identity", "redirect", "untrusted")


def _host(rng: random.Random, i: int) -> str:
    return f"{rng.choice(WORDS)}{i}.{rng.choice(WORDS)}.{rng.choice(TLDS)}"


def _domain(rng: random.Random, i: int, j: int = 0) -> str:
    return f"{rng.choice(WORDS)}{i}x{j}.{rng.choice(TLDS)}"


def _set(items: list[str]) -> str:
    return "{" + " ".join(f'"{x}"' for x in items) + "}"


def make(count: int, seed: int = 1000) -> dict[str, Any]:
    """A policy file (as a mapping) with ``count`` Gateway rules in all."""
    rng = random.Random(seed)
    fixed: list[dict[str, Any]] = []
    n_off = max(2, count // 100)
    for k in range(n_off):
        if k % 2:
            fixed.append(
                {
                    "name": f"Do not inspect bank {k}",
                    "action": "off",
                    "traffic": f"any(http.conn.domains[*] in {_set([f'bank{k}.example', f'bank{k}.example.org'])})",
                }
            )
        else:
            fixed.append(
                {
                    "name": f"Do not inspect pinned app {k}",
                    "action": "off",
                    "traffic": f"net.sni.host in {_set([f'updates.pinned{k}.example', f'api.pinned{k}.example'])}",
                }
            )
    fixed.insert(
        0,
        {
            "name": "Inspect the bank's marketing site",
            "action": "on",
            "traffic": 'net.sni.host == "promo.bank1.example"',
        },
    )
    fixed += [dict(r) for r in UNINDEXED]
    fixed += [
        {
            "name": "Bench host: uploads need a managed device",
            "action": "block",
            "traffic": f'http.request.host == "{BENCH_HOST}" and http.request.method in {{"POST" "PUT" "DELETE"}}',
            "device_posture": f"not(any(device_posture.checks.passed[*] in {_set(POSTURE[:1])}))",
        },
        {
            "name": "Bench domain: no admin paths",
            "action": "block",
            "traffic": 'any(http.request.domains[*] == "bench.test") and http.request.uri.path matches "^/(admin|internal)/"',
        },
        {
            "name": "Control: block the control host",
            "action": "block",
            "traffic": f'http.request.host == "{CONTROL_HOST}"',
            "rule_settings": {"block_page_enabled": True, "block_reason": "bench control rule"},
        },
    ]
    rest = max(0, count - len(fixed))
    shares = list(zip(KINDS, (35, 30, 12, 10, 6, 3, 1), strict=True))
    weights = [s for _, s in shares]
    kinds = [rng.choices([k for k, _ in shares], weights)[0] for _ in range(rest)]
    bodies: list[dict[str, Any]] = []
    for i, kind in enumerate(kinds):
        host = _host(rng, i)
        body: dict[str, Any] = {"name": f"{kind} {i}", "action": rng.choice(["block", "block", "allow"])}
        if kind == "host":
            if i % 3 == 0:
                body["traffic"] = f'http.request.host == "{host}" and http.request.method in {{"POST" "PUT"}}'
            elif i % 3 == 1:
                body["traffic"] = (
                    f"http.request.host in {_set([host] + [_host(rng, i) for _ in range(rng.randint(1, 4))])}"
                )
            else:
                body["traffic"] = f'http.request.host == "{host}"'
        elif kind == "domains":
            domains = [_domain(rng, i, j) for j in range(rng.randint(2, 6))]
            body["traffic"] = f"any(http.request.domains[*] in {_set(domains)})"
        elif kind == "regex":
            body["traffic"] = (
                f'http.request.host == "{host}" and '
                f'http.request.uri.path matches "^/(api|v[0-9]+)/(users|admin|export)/[0-9]+{i}$"'
            )
        elif kind == "posture":
            body["action"] = "block"
            body["traffic"] = f'any(http.request.domains[*] == "{_domain(rng, i)}")'
            body["device_posture"] = f"not(any(device_posture.checks.passed[*] in {_set(POSTURE)}))"
        elif kind == "identity":
            body["action"] = "block"
            body["traffic"] = f"any(http.request.domains[*] in {_set([_domain(rng, i), _domain(rng, i, 1)])})"
            body["identity"] = 'not(any(identity.groups.name[*] in {"engineering" "sales" "marketing"}))'
        elif kind == "redirect":
            body["action"] = "redirect"
            body["traffic"] = f'http.request.host == "{host}"'
            body["rule_settings"] = {
                "redirect": {
                    "target_uri": f"https://new-{host}",
                    "preserve_path_and_query": True,
                    "include_context": False,
                }
            }
        else:
            body["action"] = "allow"
            body["traffic"] = f'any(http.request.domains[*] == "lab{i}.internal.example")'
            body["rule_settings"] = {"untrusted_cert": {"action": "pass_through"}}
        bodies.append(body)
    rng.shuffle(bodies)
    # Do Not Inspect first (the `on` exception before the `off` rules), then the rest, precedence by 10s
    ordered = fixed[: n_off + 1] + _interleave(fixed[n_off + 1 :], bodies, rng)
    rules = [{**body, "precedence": 10 * (p + 1)} for p, body in enumerate(ordered[:count])]

    policies = [
        {
            "id": "5a0e8c1f-0000-4000-8000-00000000b001",
            "name": "Employees on managed devices",
            "decision": "allow",
            "include": [{"email_domain": {"domain": "corp.example"}}],
            "require": [{"device_posture": {"integration_uid": POSTURE[0]}}],
            "exclude": [{"email": {"email": "former@corp.example"}}],
        },
        {
            "id": "5a0e8c1f-0000-4000-8000-00000000b002",
            "name": "Contractors",
            "decision": "deny",
            "include": [{"email_domain": {"domain": "contractor.example"}}],
        },
        {
            "id": "5a0e8c1f-0000-4000-8000-00000000b003",
            "name": "Health checks",
            "decision": "bypass",
            "include": [{"ip": {"ip": "10.40.0.0/16"}}],
        },
        {
            "id": "5a0e8c1f-0000-4000-8000-00000000b004",
            "name": "Robots",
            "decision": "non_identity",
            "include": [{"common_name": {"common_name": "ci.corp.example"}}],
            "require": [{"certificate": {}}],
        },
    ]
    apps = []
    for k, domain in enumerate(
        [
            "intranet.corp.example",
            "*.apps.corp.example",
            "git.corp.example",
            "health.intranet.corp.example",
            "*.admin.corp.example",
        ]
    ):
        apps.append(
            {
                "id": f"7d3b9e20-0000-4000-8000-00000000a00{k + 1}",
                "type": "self_hosted",
                "name": f"App {k + 1} ({domain})",
                "domain": domain,
                "policies": [p["id"] for p in policies[: 2 + k % 3]],
            }
        )
    return {"gateway_rules": rules, "access_policies": policies, "access_applications": apps}


def _interleave(
    few: list[dict[str, Any]], many: list[dict[str, Any]], rng: random.Random
) -> list[dict[str, Any]]:
    """``many`` with ``few`` spread at random places (real sets are not sorted by kind)."""
    out = list(many)
    for body in few:
        out.insert(rng.randrange(len(out) + 1), body)
    return out


def write(path: Path, count: int, seed: int = 1000) -> dict[str, Any]:
    data = make(count, seed)
    header = (
        f"# {count} Gateway rules for the proxy benchmark (bench/rulegen.py, seed {seed}); none matches "
        f"{BENCH_HOST}.\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=400, allow_unicode=True))
    kinds: dict[str, int] = {}
    for rule in data["gateway_rules"]:
        first = rule["name"].split(" ")[0]
        kind = rule["action"] if rule["action"] in ("off", "on") else first if first in KINDS else "other"
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "rules": len(data["gateway_rules"]),
        "access_applications": len(data["access_applications"]),
        "access_policies": len(data["access_policies"]),
        "bytes": path.stat().st_size,
        "kinds": kinds,
    }


def check(path: Path) -> dict[str, Any]:
    """Load the file as ``gateway run --policies`` does and decide the benchmark's request and the
    control request in-process: the first must be allowed with no Access application, the second
    blocked. Returns how many rules the benchmark's request evaluates, and load times."""
    import time

    from policies.facts import ConnectionFacts, RequestFacts
    from policies.yaml_io import load_files

    t0 = time.perf_counter()
    policy_set = load_files([path])
    t1 = time.perf_counter()
    gateway, access = policy_set.gateway_engine(), policy_set.access_engine()
    t2 = time.perf_counter()
    facts = RequestFacts.from_url(f"https://{BENCH_HOST}/", dst_ip="127.0.0.1")
    decision = gateway.decide(facts)
    if decision.action.value != "allow" or decision.rule is not None:
        raise RuntimeError(f"rule file: the benchmark request is not allowed by default: {decision}")
    if access.decide(facts) is not None:
        raise RuntimeError("rule file: an Access application covers the benchmark host")
    if (
        not gateway.decide_connection(ConnectionFacts(BENCH_HOST, facts.connection.src_ip)).action.value
        == "on"
    ):
        raise RuntimeError("rule file: the benchmark host is not inspected")
    control = gateway.decide(RequestFacts.from_url(f"https://{CONTROL_HOST}/", dst_ip="127.0.0.1"))
    if control.action.value != "block":
        raise RuntimeError(f"rule file: the control host is not blocked: {control}")
    return {
        "rules_loaded": len(policy_set.gateway_rules),
        "access_applications": len(policy_set.access_applications),
        "candidates_for_bench_host": len(gateway.candidates(BENCH_HOST, BENCH_HOST)),
        "load_s": round(t1 - t0, 2),
        "build_s": round(t2 - t1, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rules", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("-o", "--output", type=Path, required=True)
    a = p.parse_args(argv)
    print(write(a.output, a.rules, a.seed))
    print(check(a.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
