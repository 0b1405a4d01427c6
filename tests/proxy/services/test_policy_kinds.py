"""PolicyKind: what differs between rules, policies and applications on the service's one path
(finding, placing and removing an object in a state; defaults; what may be deleted)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from policies.access import AccessApplication, AccessPolicy, PolicyRef
from policies.lists import GatewayList, ListType
from policies.rules import Action, GatewayRule
from proxy.services.errors import NotFound, Refused
from proxy.services.policy_kinds import ACCESS_APPLICATIONS, ACCESS_POLICIES, GATEWAY_RULES, KINDS
from proxy.services.policy_state import Managed, PolicyState


def rule(ident: str, precedence: int, *, enabled: bool = True) -> GatewayRule:
    return GatewayRule(id=ident, name=ident, precedence=precedence, action=Action.ALLOW, enabled=enabled)


def policy(ident: str) -> AccessPolicy:
    return AccessPolicy.from_api(
        {"id": ident, "name": ident, "decision": "allow", "include": [{"everyone": {}}]}, where="t"
    )


def application(ident: str, *policy_ids: str) -> AccessApplication:
    return AccessApplication(
        id=ident, name=ident, domain=f"{ident}.lab", policies=tuple(PolicyRef(p) for p in policy_ids)
    )


STATE = PolicyState(
    lists=(
        Managed(GatewayList(id="l1", name="l1", type=ListType.DOMAIN)),
        Managed(GatewayList(id="l2", name="l2", type=ListType.IP)),
    ),
    rules=(Managed(rule("r1", 10)), Managed(rule("r2", 20, enabled=False)), Managed(rule("r3", 30))),
    policies=(Managed(policy("p1")), Managed(policy("p2"))),
    applications=(Managed(application("a1", "p1")), Managed(application("a2"), file="corp.yaml", line=3)),
)


def ids(managed: tuple[Managed[Any], ...]) -> list[str]:
    return [m.id for m in managed]


def test_the_kinds_are_written_lists_first_then_rules() -> None:
    """Lists first: a rule's $<id> must name a list that is already there."""
    assert [k.name for k in KINDS] == ["Gateway list", "gateway rule", "Access policy", "Access application"]
    assert [ids(k.items(STATE)) for k in KINDS] == [
        ["l1", "l2"], ["r1", "r2", "r3"], ["p1", "p2"], ["a1", "a2"],
    ]  # fmt: skip


def test_find_and_existing() -> None:
    assert ACCESS_POLICIES.find(STATE, "p2") == STATE.policies[1]
    assert GATEWAY_RULES.find(STATE, "p2") is None
    with pytest.raises(NotFound, match="no Access application with id 'p1'"):
        ACCESS_APPLICATIONS.existing(STATE, "p1")


def test_a_files_object_is_not_changeable() -> None:
    assert ACCESS_APPLICATIONS.changeable(STATE, "a1") == STATE.applications[0]
    with pytest.raises(
        Refused, match=r"^Access application 'a2' \(id a2\) is managed by file corp.yaml \(line 3\)"
    ):
        ACCESS_APPLICATIONS.changeable(STATE, "a2")


def test_a_rule_goes_by_precedence_after_the_others_of_its_own() -> None:
    moved = GATEWAY_RULES.with_item(STATE, rule("r3", 20))
    assert ids(moved.rules) == ["r1", "r2", "r3"]
    moved = GATEWAY_RULES.with_item(STATE, rule("r1", 20, enabled=False))
    assert ids(moved.rules) == ["r2", "r1", "r3"]
    added = GATEWAY_RULES.with_item(STATE, rule("r0", 5))
    assert ids(added.rules) == ["r0", "r1", "r2", "r3"] and added.policies == STATE.policies


def test_policies_and_applications_are_replaced_in_place_or_added_last() -> None:
    renamed = AccessPolicy.from_api(
        {"id": "p1", "name": "new", "decision": "deny", "include": [{"everyone": {}}]}, where="t"
    )
    replaced = ACCESS_POLICIES.with_item(STATE, renamed)
    assert ids(replaced.policies) == ["p1", "p2"] and replaced.policies[0].item.name == "new"
    added = ACCESS_APPLICATIONS.with_item(STATE, application("a0"))
    assert ids(added.applications) == ["a1", "a2", "a0"] and added.rules == STATE.rules


def test_without_leaves_the_other_kinds_alone() -> None:
    for kind in KINDS:
        first = kind.items(STATE)[0].id
        left = kind.without(STATE, first)
        assert ids(kind.items(left)) == ids(kind.items(STATE))[1:]
        for other in KINDS:
            if other is not kind:
                assert other.items(left) == other.items(STATE)


def test_only_a_rule_gets_a_default_precedence() -> None:
    step = iter([7]).__next__
    assert GATEWAY_RULES.complete({"name": "x"}, STATE, None, step) == {"name": "x", "precedence": 37}
    current = STATE.rules[1]
    assert GATEWAY_RULES.complete({"name": "x"}, STATE, current, step) == {"name": "x", "precedence": 20}
    assert GATEWAY_RULES.complete({"precedence": 3}, STATE, None, step) == {"precedence": 3}
    assert GATEWAY_RULES.complete({}, PolicyState(), None, step) == {"precedence": 1000}
    assert ACCESS_POLICIES.complete({"name": "x"}, STATE, None, step) == {"name": "x"}


def test_only_a_policy_in_use_is_refused_deletion() -> None:
    with pytest.raises(Refused, match=r"^Access policy 'p1' \(id p1\) is used by Access application 'a1'"):
        ACCESS_POLICIES.check_delete(STATE, STATE.policies[0])
    ACCESS_POLICIES.check_delete(STATE, STATE.policies[1])
    GATEWAY_RULES.check_delete(STATE, STATE.rules[0])
    ACCESS_APPLICATIONS.check_delete(STATE, STATE.applications[0])


def test_log_lines_describe_an_application_by_its_label() -> None:
    assert GATEWAY_RULES.describe(rule("r1", 1)) == "'r1'"
    assert ACCESS_APPLICATIONS.describe(application("a1")) == application("a1").label


def test_a_kind_must_name_a_field_of_the_state() -> None:
    with pytest.raises(ValueError, match="gateway rule: PolicyState has no field 'rule'"):
        dataclasses.replace(GATEWAY_RULES, field="rule")
