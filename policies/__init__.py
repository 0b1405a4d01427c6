"""Gateway and Access policies: a pure library (stdlib, pyyaml, google-re2).

The names below are importable from ``policies`` directly; each loads its module on first use,
so importing one submodule does not import them all::

    from policies import GatewayEngine, AccessEngine, RequestFacts, load_files

- ``GatewayRule.from_api(mapping, where=...)`` / ``.to_api()``; ``GatewayEngine.build(rules)``
  → ``decide_connection(ConnectionFacts)``, ``decide(RequestFacts)``, ``explain(RequestFacts)``
- ``AccessPolicy`` / ``AccessApplication`` ``.from_api`` / ``.to_api``;
  ``AccessEngine.build(apps, policies).decide(RequestFacts)`` → ``AccessDecision | None``
- ``load_files(paths)`` / ``load(text, file=...)`` → ``PolicySet``; ``dump(policy_set)``
- ``evaluate(gateway, access, facts, explain=...)`` → ``Outcome``; ``run_tests(...)``
- errors: ``PolicyError`` (base), ``FieldError`` (one field, with its path), ``ConflictError``
  (objects that cannot load together), ``PolicyFileError`` (problems with file:line:col)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policies.access import (
        AccessApplication,
        AccessDecision,
        AccessEngine,
        AccessPolicy,
        AccessRule,
        PolicyDecision,
        PolicyRef,
        RuleKind,
    )
    from policies.engine import Decision, GatewayEngine, RuleTrace, Stage
    from policies.errors import ExpressionError, PolicyError
    from policies.facts import (
        ConnectionFacts,
        Identity,
        RequestFacts,
        connection_context,
        request_context,
    )
    from policies.rules import (
        Action,
        CompiledRule,
        ConflictError,
        FieldError,
        GatewayRule,
        RedirectSettings,
        RuleSettings,
        UntrustedCertAction,
    )
    from policies.testing import Outcome, PolicyTest, PolicyTestResult, evaluate, run_tests
    from policies.yaml_io import PolicyFileError, PolicySet, Problem, dump, load, load_files

__all__ = [
    "AccessApplication",
    "AccessDecision",
    "AccessEngine",
    "AccessPolicy",
    "AccessRule",
    "Action",
    "CompiledRule",
    "ConflictError",
    "ConnectionFacts",
    "Decision",
    "ExpressionError",
    "FieldError",
    "GatewayEngine",
    "GatewayRule",
    "Identity",
    "Outcome",
    "PolicyDecision",
    "PolicyError",
    "PolicyFileError",
    "PolicyRef",
    "PolicySet",
    "PolicyTest",
    "PolicyTestResult",
    "Problem",
    "RedirectSettings",
    "RequestFacts",
    "RuleKind",
    "RuleSettings",
    "RuleTrace",
    "Stage",
    "UntrustedCertAction",
    "connection_context",
    "dump",
    "evaluate",
    "load",
    "load_files",
    "request_context",
    "run_tests",
]

_MODULES: dict[str, str] = {
    "AccessApplication": "policies.access",
    "AccessDecision": "policies.access",
    "AccessEngine": "policies.access",
    "AccessPolicy": "policies.access",
    "AccessRule": "policies.access",
    "Action": "policies.rules",
    "CompiledRule": "policies.rules",
    "ConflictError": "policies.rules",
    "ConnectionFacts": "policies.facts",
    "Decision": "policies.engine",
    "ExpressionError": "policies.errors",
    "FieldError": "policies.rules",
    "GatewayEngine": "policies.engine",
    "GatewayRule": "policies.rules",
    "Identity": "policies.facts",
    "Outcome": "policies.testing",
    "PolicyDecision": "policies.access",
    "PolicyError": "policies.errors",
    "PolicyFileError": "policies.yaml_io",
    "PolicyRef": "policies.access",
    "PolicySet": "policies.yaml_io",
    "PolicyTest": "policies.testing",
    "PolicyTestResult": "policies.testing",
    "Problem": "policies.yaml_io",
    "RedirectSettings": "policies.rules",
    "RequestFacts": "policies.facts",
    "RuleKind": "policies.access",
    "RuleSettings": "policies.rules",
    "RuleTrace": "policies.engine",
    "Stage": "policies.engine",
    "UntrustedCertAction": "policies.rules",
    "connection_context": "policies.facts",
    "dump": "policies.yaml_io",
    "evaluate": "policies.testing",
    "load": "policies.yaml_io",
    "load_files": "policies.yaml_io",
    "request_context": "policies.facts",
    "run_tests": "policies.testing",
}


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'policies' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
