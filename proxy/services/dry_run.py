"""The dry run: one request in (a policy test case's inputs), the decision and its trace out.

The body is a test case of ``policies.testing`` without its name::

    {"request": {"method": "POST", "url": "https://files.example.net/upload", "src_ip": "10.1.2.3"},
     "identity": {"email": "ana@example.com", "groups": ["engineering"]},
     "posture": {"passed": [], "failed": ["<posture rule id>"]}}

``expect`` (as in a test case) is optional: with it the answer says whether the case passes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from policies.access import AccessDecision, AccessEngine
from policies.engine import GatewayEngine
from policies.rules import Action, FieldError
from policies.testing import PolicyTest, evaluate, run_test
from proxy.services.policy_state import InvalidPolicy, field_message

logger = logging.getLogger(__name__)

WHERE: Final = "request body"
# A placeholder expectation when the body has none: only the decision is reported then.
_NO_EXPECTATION: Final = {"action": Action.ALLOW.value}


def parse_case(body: Mapping[str, Any]) -> PolicyTest:
    case = {"name": "dry run", "expect": _NO_EXPECTATION, **body}
    try:
        return PolicyTest.from_api(case, where=WHERE)
    except FieldError as e:
        raise InvalidPolicy(field_message(e, where=WHERE)) from None


def dry_run(gateway: GatewayEngine, access: AccessEngine, body: Mapping[str, Any]) -> dict[str, Any]:
    case = parse_case(body)
    outcome = evaluate(gateway, access, case.facts(), explain=True)
    decision = outcome.decision
    rule = decision.rule
    result: dict[str, Any] = {
        "action": decision.action.value,
        "rule": {"id": rule.id, "name": rule.name, "precedence": rule.precedence} if rule else None,
        "stage": decision.stage.value,
        "access": _access(outcome.access),
        "summary": outcome.summary(),
        "trace": outcome.render(),
    }
    if body.get("expect") is not None:
        problems = run_test(case, gateway, access).problems
        result["passed"] = not problems
        result["problems"] = list(problems)
    return result


def _access(decision: AccessDecision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    app, policy = decision.application, decision.policy
    return {
        "application": {"id": app.id, "name": app.name, "domain": app.domain},
        "policy": {"id": policy.id, "name": policy.name, "decision": policy.decision.value}
        if policy
        else None,
        "allowed": decision.allowed,
    }
