"""The shipped examples (policies/examples/) load, lint clean and pass all their tests, and
every rule and every Access policy in them is exercised by at least one test."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.testing import run_tests
from policies.yaml_io import PolicySet, load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"


@pytest.fixture(scope="module")
def examples() -> PolicySet:
    return load_files([EXAMPLES])


def test_examples_exist(examples: PolicySet) -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == ["corp-tests.yaml", "corp.yaml"]
    assert examples.gateway_rules and examples.access_applications and examples.tests


def test_every_example_test_passes(examples: PolicySet) -> None:
    results = run_tests(examples.tests, examples.gateway_engine(), examples.access_engine())
    failures = [r.render() for r in results if not r.passed]
    assert not failures, "\n".join(failures)


def test_every_rule_and_policy_is_exercised(examples: PolicySet) -> None:
    gateway, access = examples.gateway_engine(), examples.access_engine()
    results = run_tests(examples.tests, gateway, access)
    decided_rules = {r.outcome.decision.rule.name for r in results if r.outcome.decision.rule is not None}
    enabled = {r.name for r in examples.gateway_rules if r.enabled and r.action.value != "on"}
    assert enabled <= decided_rules, f"rules no test decides: {sorted(enabled - decided_rules)}"
    # the `on` exception shows by letting its host through inspection
    on_rules = [r for r in examples.gateway_rules if r.action.value == "on"]
    assert any(r.outcome.connection is not None and r.outcome.connection.rule in on_rules for r in results)
    decided_policies = {
        r.outcome.access.policy.id for r in results if r.outcome.access and r.outcome.access.policy
    }
    assert decided_policies == {p.id for p in examples.access_policies}
    assert {r.outcome.access.allowed for r in results if r.outcome.access} == {True, False}


DEMO = EXAMPLES / "demo"  # `gateway demo`'s policies: a set of its own (its own precedences)


def test_the_demo_examples_load_and_pass_their_tests() -> None:
    demo = load_files([DEMO])
    assert sorted(p.name for p in DEMO.glob("*.yaml")) == ["demo-tests.yaml", "demo.yaml"]
    results = run_tests(demo.tests, demo.gateway_engine(), demo.access_engine())
    assert len(results) >= 6
    failures = [r.render() for r in results if not r.passed]
    assert not failures, "\n".join(failures)
    decided = {r.outcome.decision.rule.name for r in results if r.outcome.decision.rule is not None}
    assert {r.name for r in demo.gateway_rules if r.enabled} <= decided
