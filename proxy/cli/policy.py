"""``gateway policy ...``: lint, test and explain policy files, with no server involved; export
and import a running gateway's policies through its admin API."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.cli.client import AdminClient, account_of, add_admin_options, connect
from proxy.cli.errors import CliError

if TYPE_CHECKING:  # the policy library is imported when a command runs: `gateway --help` stays fast
    from policies.yaml_io import PolicySet

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "policy",
        help="lint, test and explain Gateway and Access policy files",
        description="Work with policy files (YAML in the admin API's shapes: gateway_rules,\n"
        "access_applications, access_policies, tests) without a running gateway.\n"
        "A directory stands for its *.yaml and *.yml files; all files load as one set.",
        epilog="examples:\n  gateway policy lint policies/\n  gateway policy test policies/examples/*.yaml\n"
        "  gateway policy explain policies/ --url https://intranet.example.com/ --email ana@example.com\n"
        "  gateway policy export -o policies.yaml\n  gateway policy import policies.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    _add_lint(commands)
    _add_test(commands)
    _add_explain(commands)
    _add_export(commands)
    _add_import(commands)


def _add_lint(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lint = commands.add_parser(
        "lint",
        help="check rules, expressions and tests; print every error as file:line:col",
        description="Check policy files: YAML, shapes, expressions, duplicate precedence, policy\n"
        "references and the rules tests name. Prints each error as file:line:col with a caret;\n"
        "exits 1 when there is any.",
        epilog="example:\n  gateway policy lint policies/corp.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_files(lint)
    lint.set_defaults(func=_lint)


def _add_test(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    test = commands.add_parser(
        "test",
        help="run the test cases in the files' tests: key; exit 1 on any failure",
        description="Load every file as one policy set and run each test case: PASS or FAIL per case,\n"
        "the decision trace for each failure, then 'N passed, M failed'. Exits 1 on any failure.",
        epilog="example:\n  gateway policy test policies/examples/*.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_files(test)
    test.set_defaults(func=_test)


def _add_explain(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    explain = commands.add_parser(
        "explain",
        help="show how one request would be decided, rule by rule",
        description="Decide one request as the proxy would (Do Not Inspect at the ClientHello, then the\n"
        "HTTP rules, then Access) and print every rule looked at, the clause that decided it, the\n"
        "final action and the Access decision when an application covers the host.",
        epilog="example:\n  gateway policy explain policies/ --url https://files.example.net/upload --method POST \\\n"
        "      --email ana@example.com --group engineering --passed 0f1e2d3c-...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_files(explain)
    explain.add_argument("--url", required=True, help="the request's absolute URL (http:// or https://)")
    explain.add_argument("--method", default="GET", help="HTTP method (default: GET)")
    explain.add_argument(
        "--src-ip", default="127.0.0.1", metavar="IP", help="client address (default: 127.0.0.1)"
    )
    explain.add_argument(
        "--dst-ip",
        metavar="IP",
        help="server address (default: the host if it is an IP, else 0.0.0.0)",
    )
    explain.add_argument("--email", default="", help="the user's email (default: no identity)")
    explain.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME",
        help="a group of the user (repeatable)",
    )
    explain.add_argument(
        "--passed",
        action="append",
        default=[],
        metavar="ID",
        help="a posture rule id the device passes (repeatable)",
    )
    explain.add_argument(
        "--failed",
        action="append",
        default=[],
        metavar="ID",
        help="a posture rule id the device fails (repeatable)",
    )
    explain.add_argument(
        "--certificate-cn", metavar="CN", help="CN of a verified client certificate (default: none)"
    )
    explain.set_defaults(func=_explain)


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export",
        help="write a running gateway's rules, policies and applications as one policy file",
        description="Fetch every Gateway rule, Access policy and Access application of a running\n"
        "gateway (those of its --policies files too) as one policy file, through the admin API.\n"
        "The file loads with `gateway policy lint/test` and back with `gateway policy import`.",
        epilog="example:\n  gateway policy export -o policies.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: stdout)")
    _add_connection(export)
    export.set_defaults(func=_export)


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imported = commands.add_parser(
        "import",
        help="replace a running gateway's API-managed policies with those of policy files",
        description="Check the files as `gateway policy lint` does, then send them to a running gateway:\n"
        "its rules, Access policies and applications saved through the API are replaced by the\n"
        "files' in one step (nothing changes if the gateway refuses them). Objects that come from\n"
        "the gateway's own --policies files stay; test cases are not sent.",
        epilog="example:\n  gateway policy import policies/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_files(imported)
    _add_connection(imported)
    imported.set_defaults(func=_import)


def _add_connection(parser: argparse.ArgumentParser) -> None:
    add_admin_options(parser.add_argument_group("admin API options"))


def _add_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="policy files or directories")


def _load(files: Sequence[str]) -> PolicySet:
    from policies.yaml_io import PolicyFileError, expand, load_files

    missing = [str(p) for p in expand(files) if not p.exists()]
    if missing:
        raise CliError(f"no such file: {missing[0]}")
    try:
        return load_files(files)
    except PolicyFileError as e:
        for problem in e.problems:
            print(problem.render(), file=sys.stderr)
        count = len(e.problems)
        raise CliError(f"{count} problem{'s' if count != 1 else ''} in the policy files") from None


def _lint(args: argparse.Namespace) -> int:
    policy_set = _load(args.files)
    print(
        f"ok: {len(policy_set.gateway_rules)} gateway rules, {len(policy_set.access_applications)} "
        f"Access applications, {len(policy_set.access_policies)} Access policies, {len(policy_set.tests)} tests"
    )
    return 0


def _test(args: argparse.Namespace) -> int:
    from policies.testing import run_tests

    policy_set = _load(args.files)
    if not policy_set.tests:
        raise CliError("the files hold no test cases (add a tests: list)")
    gateway, access = policy_set.gateway_engine(), policy_set.access_engine()
    results = run_tests(policy_set.tests, gateway, access)
    for result in results:
        print(result.render())
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _explain(args: argparse.Namespace) -> int:
    from policies.facts import Identity, RequestFacts
    from policies.testing import evaluate

    policy_set = _load(args.files)
    try:
        for address in (args.src_ip, args.dst_ip):
            if address is not None:
                ipaddress.ip_address(address)
        identity = Identity.of(
            email=args.email,
            groups=args.group,
            passed=args.passed,
            failed=args.failed,
            verified_certificate_cn=args.certificate_cn,
        )
        facts = RequestFacts.from_url(
            args.url, method=args.method, src_ip=args.src_ip, dst_ip=args.dst_ip, identity=identity
        )
    except ValueError as e:
        raise CliError(str(e)) from None
    outcome = evaluate(policy_set.gateway_engine(), policy_set.access_engine(), facts, explain=True)
    print(outcome.render())
    return 0


def _connect(args: argparse.Namespace) -> tuple[AdminClient, str]:
    """The admin API client and the account path prefix (``/accounts/ID``)."""
    client = connect(args)
    account = account_of(client, args.account)
    return client, f"/accounts/{urllib.parse.quote(account, safe='')}"


def _export(args: argparse.Namespace) -> int:
    client, account = _connect(args)
    data = client.download(f"{account}/gateway/rules/export").body
    if args.output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        args.output.write_bytes(data)
    except OSError as e:
        raise CliError(f"cannot write {args.output}: {e.strerror or e}") from None
    print(f"wrote {args.output} ({len(data)} bytes)", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    from policies.yaml_io import PolicySet, dump

    policy_set = _load(args.files)
    sent = PolicySet(
        policy_set.gateway_rules,
        policy_set.access_applications,
        policy_set.access_policies,
        lists=policy_set.lists,
    )
    client, account = _connect(args)
    reply = client.post_text(f"{account}/gateway/rules/import", dump(sent), "application/yaml")
    counts = reply.result if isinstance(reply.result, dict) else {}
    kept = counts.get("left_to_policy_files", 0)
    print(
        f"imported: {counts.get('gateway_rules', 0)} gateway rules, "
        f"{counts.get('access_policies', 0)} Access policies, "
        f"{counts.get('access_applications', 0)} Access applications"
        + (f", {counts['lists']} Gateway lists" if counts.get("lists") else "")
        + (f" ({kept} objects left to the gateway's policy files)" if kept else "")
    )
    return 0
