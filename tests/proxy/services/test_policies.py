"""PolicyService: CRUD over the store and the policy files, validated by building the engines
before anything is written; cached engines with a version; subscribers; import/export; dry run."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policies.engine import Stage
from policies.rules import Action
from policies.yaml_io import PolicySet, load, load_files
from proxy.services.errors import InvalidInput, NotFound, Refused
from proxy.services.policies import PolicyLoadError, PolicyService
from proxy.services.policy_kinds import ACCESS_APPLICATIONS, ACCESS_POLICIES, GATEWAY_RULES, PolicyKind
from proxy.services.policy_state import InvalidPolicy
from proxy.store import Store, StoredRule
from tests.support.clock import START, FakeClock
from tests.support.server import Gateway

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"
BLOCK = {
    "name": "Block casino",
    "action": "block",
    "traffic": 'http.request.host == "casino.example"',
}
FILES = """\
gateway_rules:
  - id: file-rule-1
    name: Block gambling (file)
    precedence: 10
    action: block
    traffic: any(http.request.domains[*] == "bets.example")
  - name: Allow the wiki (file, no id)
    precedence: 20
    action: allow
    traffic: http.request.host == "wiki.example"
access_policies:
  - id: file-policy-1
    name: Everyone (file)
    decision: allow
    include: [{everyone: {}}]
access_applications:
  - name: Wiki (file)
    domain: wiki.example
    policies: [file-policy-1]
"""


def steps(*values: int) -> Any:
    """A deterministic stand-in for the random precedence step."""
    queue = list(values)
    return lambda: queue.pop(0)


@pytest.fixture
def policies(gateway: Gateway) -> PolicyService:
    return PolicyService(gateway.store, gateway.clock, random_step=steps(7, 30, 99))


@pytest.fixture
def with_files(gateway: Gateway) -> PolicyService:
    return PolicyService(gateway.store, gateway.clock, files=load(FILES, file="corp/files.yaml"))


def unchanged(store: Store) -> Any:
    """Asserts, on exit, that the database is exactly as it was on entry."""

    class Check:
        def __enter__(self) -> None:
            self.before = store.dump()

        def __exit__(self, *exc: object) -> None:
            assert store.dump() == self.before

    return Check()


# --- gateway rules ----------------------------------------------------------------------------


def test_create_assigns_id_times_and_precedence(policies: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    first = policies.create(GATEWAY_RULES, a, BLOCK).item
    assert uuid.UUID(first.id).version == 4
    assert (first.precedence, first.created_at, first.updated_at) == (1000, START, START)
    second = policies.create(GATEWAY_RULES, a, {**BLOCK, "name": "second"}).item
    third = policies.create(GATEWAY_RULES, a, {**BLOCK, "name": "third", "precedence": 5}).item
    fourth = policies.create(GATEWAY_RULES, a, {**BLOCK, "name": "fourth"}).item
    assert (second.precedence, third.precedence, fourth.precedence) == (1007, 5, 1037)
    assert [m.item.name for m in policies.list(GATEWAY_RULES, a)] == [
        "third",
        "Block casino",
        "second",
        "fourth",
    ]
    assert not any(m.read_only for m in policies.list(GATEWAY_RULES, a))


def test_replace_is_a_full_replace_that_keeps_created_at(
    policies: PolicyService, gateway: Gateway, clock: FakeClock
) -> None:
    a = gateway.account_id
    created = policies.create(GATEWAY_RULES, a, {**BLOCK, "description": "old", "precedence": 40}).item
    later = clock.advance(minutes=5)
    replaced = policies.replace(GATEWAY_RULES, a, created.id, {"name": "Allow", "action": "allow"}).item
    assert replaced.id == created.id and replaced.precedence == 40  # kept when not given
    assert (replaced.created_at, replaced.updated_at) == (START, later)
    assert (replaced.description, replaced.traffic, replaced.action) == ("", "", Action.ALLOW)
    assert policies.get(GATEWAY_RULES, a, created.id).item == replaced
    with pytest.raises(InvalidPolicy, match=r"^request body: name: required$"):
        policies.replace(GATEWAY_RULES, a, created.id, {"action": "allow"})
    with pytest.raises(InvalidInput, match="does not match the id in the path"):
        policies.replace(GATEWAY_RULES, a, created.id, {**BLOCK, "id": "other"})


def test_delete_and_not_found(policies: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    created = policies.create(GATEWAY_RULES, a, BLOCK).item
    assert policies.delete(GATEWAY_RULES, a, created.id).item == created
    assert policies.list(GATEWAY_RULES, a) == []
    calls: tuple[Callable[[], object], ...] = (
        lambda: policies.get(GATEWAY_RULES, a, created.id),
        lambda: policies.delete(GATEWAY_RULES, a, created.id),
        lambda: policies.replace(GATEWAY_RULES, a, created.id, BLOCK),
    )
    for call in calls:
        with pytest.raises(NotFound, match=f"no gateway rule with id '{created.id}'"):
            call()
    with pytest.raises(NotFound, match="no account"):
        policies.list(GATEWAY_RULES, "0" * 32)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {**BLOCK, "traffic": 'http.request.host == "a" and'},
            "request body 'Block casino': traffic: line 1, column 29: expected a condition, "
            'found end of expression\n    http.request.host == "a" and\n' + " " * 32 + "^",
        ),
        (
            {**BLOCK, "traffc": "x"},
            "request body 'Block casino': unknown key 'traffc' (did you mean traffic?)",
        ),
        (
            {**BLOCK, "precedence": "ten"},
            "request body 'Block casino': precedence: must be an integer, got 'ten'",
        ),
        (
            {**BLOCK, "action": "deny"},
            "request body 'Block casino': action: unknown action 'deny' (one of: allow, block, off, on, redirect)",
        ),
        ({"action": "block"}, "request body: name: required"),
    ],
)
def test_invalid_rules_are_refused_with_the_field(
    policies: PolicyService, gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    with unchanged(gateway.store), pytest.raises(InvalidPolicy) as e:
        policies.create(GATEWAY_RULES, gateway.account_id, body)
    assert str(e.value) == message


def test_duplicate_precedence_is_refused_naming_both(policies: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    policies.create(GATEWAY_RULES, a, {**BLOCK, "precedence": 10})
    version = policies.engines(a).version
    with unchanged(gateway.store), pytest.raises(InvalidPolicy) as e:
        policies.create(GATEWAY_RULES, a, {**BLOCK, "name": "Other", "precedence": 10})
    assert str(e.value) == (
        "gateway rules 'Block casino' and 'Other' both have precedence 10; give each enabled rule its own"
    )
    assert policies.engines(a).version == version
    # a disabled rule may share it
    policies.create(GATEWAY_RULES, a, {**BLOCK, "name": "Off", "precedence": 10, "enabled": False})


# --- engines, versions, subscribers -----------------------------------------------------------


def test_engines_are_cached_until_a_change(policies: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    calls: list[int] = []
    policies.subscribe(lambda: calls.append(policies.engines(a).version))
    empty = policies.engines(a)
    assert policies.engines(a) is empty and empty.gateway.rules == ()
    rule = policies.create(GATEWAY_RULES, a, BLOCK).item
    engines = policies.engines(a)
    assert engines.version == empty.version + 1 and calls == [engines.version]
    assert [r.id for r in engines.gateway.rules] == [rule.id]
    with pytest.raises(InvalidPolicy):
        policies.create(GATEWAY_RULES, a, {**BLOCK, "traffic": "nope"})
    assert policies.engines(a) is engines and len(calls) == 1
    policies.delete(GATEWAY_RULES, a, rule.id)
    assert policies.engines(a).version == engines.version + 1 and len(calls) == 2


def test_a_failing_subscriber_does_not_stop_the_others(policies: PolicyService, gateway: Gateway) -> None:
    seen: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    policies.subscribe(broken)
    policies.subscribe(lambda: seen.append("told"))
    policies.create(GATEWAY_RULES, gateway.account_id, BLOCK)
    assert seen == ["told"]


def test_a_rolled_back_outer_transaction_changes_nothing(policies: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    before = policies.engines(a)
    told: list[bool] = []
    policies.subscribe(lambda: told.append(True))
    with (
        unchanged(gateway.store),
        pytest.raises(RuntimeError, match="rolled back"),
        gateway.store.transaction(),
    ):
        policies.create(GATEWAY_RULES, a, BLOCK)
        raise RuntimeError("rolled back")
    assert policies.engines(a) is before and told == []


def test_rules_survive_a_restart(gateway: Gateway, store_url: str, clock: FakeClock) -> None:
    a = gateway.account_id
    rule = PolicyService(gateway.store, clock).create(GATEWAY_RULES, a, BLOCK).item
    gateway.store.close()
    store = Store.open(store_url)
    try:
        again = PolicyService(store, clock)
        assert again.get(GATEWAY_RULES, a, rule.id).item == rule
        assert [r.id for r in again.engines(a).gateway.rules] == [rule.id]
    finally:
        store.close()


# --- Access -----------------------------------------------------------------------------------

EVERYONE = {"name": "Everyone", "decision": "allow", "include": [{"everyone": {}}]}


def test_access_policies_and_applications(policies: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    first = policies.create(ACCESS_POLICIES, a, EVERYONE).item
    second = policies.create(ACCESS_POLICIES, a, {**EVERYONE, "name": "Deny", "decision": "deny"}).item
    app = policies.create(
        ACCESS_APPLICATIONS, a,
        {"type": "self_hosted", "name": "Intranet", "domain": "intranet.lab",
         "policies": [second.id, {"id": first.id, "precedence": 1}]},
    ).item  # fmt: skip
    assert [(r.id, r.precedence) for r in app.policies] == [(second.id, None), (first.id, 1)]
    assert policies.get(ACCESS_APPLICATIONS, a, app.id).item == app
    decision = policies.engines(a).access.covers("intranet.lab")
    assert decision is not None and decision.id == app.id

    with unchanged(gateway.store), pytest.raises(Refused) as e:
        policies.delete(ACCESS_POLICIES, a, first.id)
    assert str(e.value) == (
        f"Access policy 'Everyone' (id {first.id}) is used by Access application 'Intranet' "
        f"(intranet.lab) (id {app.id}): remove it from the application's policies first"
    )
    policies.delete(ACCESS_APPLICATIONS, a, app.id)
    policies.delete(ACCESS_POLICIES, a, first.id)
    assert [m.id for m in policies.list(ACCESS_POLICIES, a)] == [second.id]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"name": "X", "domain": "x.lab", "policies": ["nope"]},
            (
                "request body 'X': policies[0]: no Access policy with id 'nope' in this account "
                "(create it under access/policies first)"
            ),
        ),
        (
            {"type": "saas", "name": "X", "domain": "x.lab"},
            "request body 'X': type: only 'self_hosted' applications are supported, got 'saas'",
        ),
        (
            {"name": "X", "domain": "https://x.lab/"},
            (
                "request body 'X': domain: is a host name such as intranet.example.com, without a "
                "scheme; got 'https://x.lab/'"
            ),
        ),
    ],
)
def test_invalid_applications_are_refused(
    policies: PolicyService, gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    with unchanged(gateway.store), pytest.raises(InvalidPolicy) as e:
        policies.create(ACCESS_APPLICATIONS, gateway.account_id, body)
    assert str(e.value) == message


def test_two_applications_for_one_domain_are_refused(policies: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    policies.create(ACCESS_APPLICATIONS, a, {"name": "One", "domain": "x.lab"})
    with unchanged(gateway.store), pytest.raises(InvalidPolicy, match="protect the same domain"):
        policies.create(ACCESS_APPLICATIONS, a, {"name": "Two", "domain": "x.lab"})


# --- policy files -----------------------------------------------------------------------------


def test_file_objects_are_merged_and_read_only(with_files: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    rules = with_files.list(GATEWAY_RULES, a)
    assert [(m.item.name, m.read_only, m.file) for m in rules] == [
        ("Block gambling (file)", True, "corp/files.yaml"),
        ("Allow the wiki (file, no id)", True, "corp/files.yaml"),
    ]
    assert rules[0].id == "file-rule-1" and uuid.UUID(rules[1].id)  # a stable id for id-less ones
    assert (
        PolicyService(gateway.store, gateway.clock, files=load(FILES, file="corp/files.yaml"))
        .list(GATEWAY_RULES, a)[1]
        .id
        == rules[1].id
    )
    assert rules[0].item.created_at == START  # dated when the files were loaded

    with unchanged(gateway.store), pytest.raises(Refused) as e:
        with_files.replace(GATEWAY_RULES, a, "file-rule-1", BLOCK)
    assert str(e.value) == (
        "gateway rule 'Block gambling (file)' (id file-rule-1) is managed by file corp/files.yaml "
        "(line 2); edit the file (the API cannot change or delete it)"
    )
    with pytest.raises(Refused, match="managed by file corp/files.yaml"):
        with_files.delete(ACCESS_POLICIES, a, "file-policy-1")
    with pytest.raises(Refused, match="managed by file corp/files.yaml"):
        with_files.delete(ACCESS_APPLICATIONS, a, with_files.list(ACCESS_APPLICATIONS, a)[0].id)

    # API objects may use the files' policies, and must not clash with their precedences
    app = with_files.create(
        ACCESS_APPLICATIONS, a, {"name": "Docs", "domain": "docs.example", "policies": ["file-policy-1"]}
    ).item
    assert app.policies[0].id == "file-policy-1"
    with pytest.raises(InvalidPolicy, match="both have precedence 10"):
        with_files.create(GATEWAY_RULES, a, {**BLOCK, "precedence": 10})
    new = with_files.create(GATEWAY_RULES, a, BLOCK).item
    assert new.precedence > 20


def test_files_that_clash_with_the_store_are_refused_at_start(gateway: Gateway) -> None:
    a = gateway.account_id
    PolicyService(gateway.store, gateway.clock).create(GATEWAY_RULES, a, {**BLOCK, "precedence": 10})
    with pytest.raises(
        PolicyLoadError, match=r"do not load together: gateway rules .* both have precedence 10"
    ):
        PolicyService(gateway.store, gateway.clock, files=load(FILES))


def test_an_id_in_the_files_and_the_store_is_refused_at_start(gateway: Gateway) -> None:
    a = gateway.account_id
    service = PolicyService(gateway.store, gateway.clock)
    rule = service.create(GATEWAY_RULES, a, BLOCK).item
    clash = load(f"gateway_rules: [{{id: {rule.id}, name: X, precedence: 1, action: allow}}]\n")
    with pytest.raises(
        PolicyLoadError, match=f"id {rule.id} names an object in the policy files and one saved"
    ):
        PolicyService(gateway.store, gateway.clock, files=clash)


# --- export and import ------------------------------------------------------------------------


def test_export_import_round_trip(with_files: PolicyService, gateway: Gateway, clock: FakeClock) -> None:
    a = gateway.account_id
    policy = with_files.create(ACCESS_POLICIES, a, EVERYONE).item
    with_files.create(
        ACCESS_APPLICATIONS, a, {"name": "Docs", "domain": "docs.example", "policies": [policy.id]}
    )
    with_files.create(GATEWAY_RULES, a, BLOCK)
    text = with_files.export(a)
    assert text.splitlines()[:3] == [
        f"# Gateway rules and Access policies of account {a}, exported 2026-03-01T12:00:00Z.",
        "# 4 of these objects come from policy files, read-only through the API (corp/files.yaml);",
        "# importing this file leaves those to their files.",
    ]
    exported = load(text)
    assert len(exported.gateway_rules) == 3 and len(exported.access_policies) == 2
    before = gateway.store.dump()
    clock.advance(hours=1)
    counts = with_files.import_policies(a, text)
    assert counts == {
        "gateway_rules": 1, "access_policies": 1, "access_applications": 1, "left_to_policy_files": 4,
    }  # fmt: skip
    assert gateway.store.dump() == before  # same ids, same timestamps
    assert load(with_files.export(a)) == exported


def test_import_replaces_what_the_api_saved(
    policies: PolicyService, gateway: Gateway, clock: FakeClock
) -> None:
    a = gateway.account_id
    old = policies.create(GATEWAY_RULES, a, BLOCK).item
    kept = policies.create(GATEWAY_RULES, a, {**BLOCK, "name": "Kept", "precedence": 3}).item
    clock.advance(minutes=1)
    text = (
        "gateway_rules:\n"
        f"  - {{id: {kept.id}, name: Kept, precedence: 3, action: block, "
        "traffic: 'http.request.host == \"casino.example\"'}\n"
        "  - {name: New, precedence: 4, action: allow}\n"
    )
    assert policies.import_policies(a, text)["gateway_rules"] == 2
    rules = policies.list(GATEWAY_RULES, a)
    assert [m.item.name for m in rules] == ["Kept", "New"]
    assert rules[0].item == kept  # unchanged: same timestamps
    assert rules[1].item.created_at == clock.now and uuid.UUID(rules[1].id)
    with pytest.raises(NotFound):
        policies.get(GATEWAY_RULES, a, old.id)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "- a\n- b\n",
            (
                "request body:1:1: a policy file is a mapping with any of: gateway_rules, "
                "access_applications, access_policies, tests, lists, not a list\n    - a\n    ^"
            ),
        ),
        (
            "gateway_rules:\n  - {name: A, precedence: 1, action: block, traffic: 'http.request.hots == \"a\"'}\n",
            (
                "request body:2:55: gateway_rules[0] 'A': traffic: unknown field 'http.request.hots' "
                "(did you mean http.request.host?)"
            ),
        ),
        (
            (
                "gateway_rules:\n  - {id: x, name: A, precedence: 1, action: block}\n"
                "  - {id: x, name: B, precedence: 2, action: block}\n"
            ),
            "request body: gateway_rules[1] 'B': id: 'x' is used by another gateway rule above",
        ),
        (
            "gateway_rules:\n  - {id: 'a b', name: A, precedence: 1, action: block}\n",
            (
                "request body: gateway_rules[0] 'A': id: must be 1-128 letters, digits, '.', '_', ':' "
                "or '-' (a UUID), got 'a b'"
            ),
        ),
    ],
)
def test_import_refusals_leave_the_store_alone(
    policies: PolicyService, gateway: Gateway, text: str, message: str
) -> None:
    policies.create(GATEWAY_RULES, gateway.account_id, BLOCK)
    with unchanged(gateway.store), pytest.raises(InvalidPolicy) as e:
        policies.import_policies(gateway.account_id, text)
    assert str(e.value).splitlines()[0] == message.splitlines()[0]
    if "\n" in message:
        assert str(e.value) == message


def test_import_refuses_a_changed_file_object(with_files: PolicyService, gateway: Gateway) -> None:
    text = "gateway_rules:\n  - {id: file-rule-1, name: Changed, precedence: 10, action: block}\n"
    with (
        unchanged(gateway.store),
        pytest.raises(Refused, match="id file-rule-1\\) is managed by file"),
    ):
        with_files.import_policies(gateway.account_id, text)


def test_import_conflicting_with_the_files_is_refused(with_files: PolicyService, gateway: Gateway) -> None:
    text = "gateway_rules:\n  - {name: Clash, precedence: 20, action: block}\n"
    with unchanged(gateway.store), pytest.raises(InvalidPolicy, match="both have precedence 20"):
        with_files.import_policies(gateway.account_id, text)


# --- dry run ----------------------------------------------------------------------------------


@pytest.fixture
def corp(gateway: Gateway) -> PolicyService:
    return PolicyService(gateway.store, gateway.clock, files=load_files([EXAMPLES / "corp.yaml"]))


def test_dry_run_reports_the_decision_and_its_trace(corp: PolicyService, gateway: Gateway) -> None:
    result = corp.dry_run(
        gateway.account_id,
        {"request": {"method": "POST", "url": "https://files.example.net/upload"},
         "identity": {"email": "ana@example.com"}, "posture": {"passed": [], "failed": []}},
    )  # fmt: skip
    assert result["action"] == "block" and result["stage"] == Stage.REQUEST.value
    assert result["rule"] == {
        "id": "0c1d6a52-59d1-4c39-9a5b-3e0f1a2b3c20",
        "name": "Block uploads to file sharing from unmanaged devices",
        "precedence": 200,
    }
    assert result["access"] is None and "passed" not in result
    assert result["trace"].startswith("request: POST https://files.example.net/upload from 127.0.0.1")
    assert "[200] 'Block uploads to file sharing from unmanaged devices' (block): MATCH" in result["trace"]


def test_dry_run_with_an_expectation_says_whether_it_passes(corp: PolicyService, gateway: Gateway) -> None:
    body = {"request": {"url": "https://intranet.example.com/"}, "identity": {"email": "pat@contractor.example"},
            "expect": {"action": "allow", "access": "allow"}}  # fmt: skip
    result = corp.dry_run(gateway.account_id, body)
    assert result["access"] == {
        "application": {"id": "7d3b9e20-0000-4000-8000-000000000001", "name": "Intranet", "domain": "intranet.example.com"},
        "policy": {"id": "5a0e8c1f-0000-4000-8000-000000000002", "name": "Contractors", "decision": "deny"},
        "allowed": False,
    }  # fmt: skip
    assert result["passed"] is False and result["problems"] == ["expected Access allow, got deny"]


def test_dry_run_refuses_a_bad_case(corp: PolicyService, gateway: Gateway) -> None:
    with pytest.raises(InvalidPolicy) as e:
        corp.dry_run(gateway.account_id, {"request": {"url": "ftp://x"}})
    assert str(e.value) == "request body: request.url: URL must start with http:// or https://, got 'ftp://x'"
    with pytest.raises(
        InvalidPolicy,
        match=re.escape("request body: unknown key 'identty' (did you mean identity?)"),
    ):
        corp.dry_run(gateway.account_id, {"request": {"url": "https://a.example/"}, "identty": {}})


def test_empty_files_change_nothing(gateway: Gateway) -> None:
    service = PolicyService(gateway.store, gateway.clock, files=PolicySet())
    assert service.list(GATEWAY_RULES, gateway.account_id) == [] and service.export(
        gateway.account_id
    ).endswith("{}\n")


def test_reads_inside_a_rolled_back_transaction_are_not_kept(
    policies: PolicyService, gateway: Gateway
) -> None:
    a = gateway.account_id
    assert policies.list(GATEWAY_RULES, a) == []
    with pytest.raises(RuntimeError, match="rolled back"), gateway.store.transaction():
        policies.create(GATEWAY_RULES, a, BLOCK)
        assert len(policies.list(GATEWAY_RULES, a)) == 1
        raise RuntimeError("rolled back")
    assert policies.list(GATEWAY_RULES, a) == []


async def test_export_and_import_off_the_event_loop(with_files: PolicyService, gateway: Gateway) -> None:
    a = gateway.account_id
    with_files.create(GATEWAY_RULES, a, BLOCK)
    text = await with_files.export_async(a)
    assert text == with_files.export(a)
    before = gateway.store.dump()
    assert (await with_files.import_policies_async(a, text))["gateway_rules"] == 1
    assert gateway.store.dump() == before


def test_a_stored_rule_this_version_refuses_stops_the_start(gateway: Gateway) -> None:
    record = StoredRule(gateway.account_id, "r1", 5, {"name": "Old", "action": "isolate"}, START, START)
    gateway.store.gateway_rules.save(record)
    with pytest.raises(PolicyLoadError) as e:
        PolicyService(gateway.store, gateway.clock)
    assert str(e.value) == (
        f"account {gateway.account_id}: the store holds stored gateway rule r1 'Old': action: "
        "unknown action 'isolate' (one of: allow, block, off, on, redirect)"
    )


# --- one path for every kind ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "changed"),
    [
        (GATEWAY_RULES, BLOCK, {**BLOCK, "name": "Changed"}),
        (ACCESS_POLICIES, EVERYONE, {**EVERYONE, "name": "Changed"}),
        (
            ACCESS_APPLICATIONS,
            {"name": "Docs", "domain": "docs.lab"},
            {"name": "Changed", "domain": "docs.lab"},
        ),
    ],
)
def test_every_kind_goes_through_one_lifecycle(
    policies: PolicyService,
    gateway: Gateway,
    clock: FakeClock,
    kind: PolicyKind[Any, Any],
    body: dict[str, Any],
    changed: dict[str, Any],
) -> None:
    a = gateway.account_id
    told: list[int] = []
    policies.subscribe(lambda: told.append(policies.engines(a).version))
    created = policies.create(kind, a, body)
    assert not created.read_only and (created.item.created_at, created.item.updated_at) == (START, START)
    assert policies.get(kind, a, created.id) == created and policies.list(kind, a) == [created]
    later = clock.advance(minutes=1)
    with unchanged(gateway.store), pytest.raises(InvalidInput, match="does not match the id in the path"):
        policies.replace(kind, a, created.id, {**changed, "id": "other"})
    replaced = policies.replace(kind, a, created.id, {**changed, "id": created.id}).item
    assert (replaced.id, replaced.name, replaced.created_at, replaced.updated_at) == (
        created.id,
        "Changed",
        START,
        later,
    )
    assert policies.delete(kind, a, created.id).item == replaced and policies.list(kind, a) == []
    with pytest.raises(NotFound, match=f"no {kind.name} with id '{created.id}'"):
        policies.get(kind, a, created.id)
    assert len(told) == 3 and told == sorted(set(told))  # told once per change, after each commit
