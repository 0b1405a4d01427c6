"""Policy files: YAML in the API shapes, round trips, and every error at file:line:col."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.access import PolicyDecision
from policies.rules import Action, GatewayRule
from policies.yaml_io import Location, PolicyFileError, PolicySet, dump, load, load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"


def problems(text: str, file: str = "p.yaml") -> list[str]:
    with pytest.raises(PolicyFileError) as caught:
        load(textwrap.dedent(text), file=file)
    return [str(p) for p in caught.value.problems]


def one(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


RULE = """\
gateway_rules:
  - name: block example
    precedence: 10
    action: block
    traffic: http.request.host == "example.com"
"""


def test_load_a_rule() -> None:
    policy_set = load(RULE, file="p.yaml")
    assert policy_set.gateway_rules == (
        GatewayRule(
            name="block example",
            action=Action.BLOCK,
            precedence=10,
            traffic='http.request.host == "example.com"',
        ),
    )
    assert policy_set.location_of(policy_set.gateway_rules[0]) == Location("p.yaml", 2, 5)


def test_unquoted_on_and_off_are_actions() -> None:
    text = """\
    gateway_rules:
      - {name: a, precedence: 1, action: off, traffic: 'net.sni.host == "a.example"'}
      - {name: b, precedence: 2, action: on, traffic: 'net.sni.host == "b.example"', enabled: true}
    """
    rules = load(textwrap.dedent(text)).gateway_rules
    assert [r.action for r in rules] == [Action.OFF, Action.ON]


def test_empty_mapping_and_null_sections_are_fine() -> None:
    assert load("{}") == PolicySet()
    assert load("gateway_rules:\ntests: []\n") == PolicySet()


def test_examples_round_trip() -> None:
    policy_set = load_files([EXAMPLES])
    again = load(dump(policy_set), file="dumped.yaml")
    assert again == policy_set
    assert dump(again) == dump(policy_set)


def test_round_trip_keeps_multi_line_expressions_and_timestamps() -> None:
    rule = GatewayRule.from_api(
        {
            "name": "multi",
            "precedence": 3,
            "action": "block",
            "traffic": 'http.request.host == "a.example"\nand http.request.method == "POST"',
            "created_at": "2025-01-31T12:00:00Z",
        },
        where="r",
    )
    policy_set = PolicySet(gateway_rules=(rule,))
    text = dump(policy_set)
    assert "traffic: |-" in text
    assert load(text) == policy_set


def test_unquoted_timestamps_are_read() -> None:
    text = RULE + "    created_at: 2025-01-31T12:00:00Z\n"
    assert load(text).gateway_rules[0].created_at is not None


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- a\n- b\n",
            "p.yaml:1:1: a policy file is a mapping with any of: gateway_rules, access_applications, access_policies, tests, lists, not a list",
        ),
        (
            "just text\n",
            "p.yaml:1:1: a policy file is a mapping with any of: gateway_rules, access_applications, access_policies, tests, lists, not the scalar 'just text'",
        ),
        (
            "",
            "p.yaml:1:1: the file is empty; a policy file is a mapping with any of: gateway_rules, access_applications, access_policies, tests, lists (write {} for none)",
        ),
        (
            "gateway_rules: [\n",
            "p.yaml:2:1: not valid YAML: expected the node content, but found '<stream end>'",
        ),
        ("a: b: c\n", "p.yaml:1:5: not valid YAML: mapping values are not allowed here"),
        (
            "gateway_rule: []\n",
            "p.yaml:1:1: unknown key 'gateway_rule' (did you mean gateway_rules?)",
        ),
        (
            "rules: []\n",
            "p.yaml:1:1: unknown key 'rules' (known: gateway_rules, access_applications, access_policies, tests, lists)",
        ),
        (
            "gateway_rules: {name: x}\n",
            "p.yaml:1:16: gateway_rules must be a list (items start with '- '), not a mapping",
        ),
        (
            "gateway_rules:\n  - 5\n",
            "p.yaml:2:5: gateway_rules[0]: must be a mapping of keys to values, got 5",
        ),
    ],
)
def test_file_level_errors(text: str, expected: str) -> None:
    assert one(text) == expected


def test_wrong_value_points_at_the_value() -> None:
    assert one(RULE.replace("precedence: 10", "precedence: ten")) == (
        "p.yaml:3:17: gateway_rules[0] 'block example': precedence: must be an integer, got 'ten'"
    )


def test_yes_is_not_a_boolean() -> None:
    assert one(RULE + "    enabled: yes\n") == (
        "p.yaml:6:14: gateway_rules[0] 'block example': enabled: must be true or false, got 'yes'"
    )


def test_unknown_key_points_at_the_key() -> None:
    assert one(RULE + "    precedance: 3\n") == (
        "p.yaml:6:5: gateway_rules[0] 'block example': unknown key 'precedance' (did you mean precedence?)"
    )


def test_missing_key_points_at_the_object() -> None:
    assert (
        one("gateway_rules:\n  - name: a\n    action: block\n")
        == "p.yaml:2:5: gateway_rules[0] 'a': precedence: required"
    )


def test_nested_errors_point_inside() -> None:
    text = (
        RULE.replace("action: block", "action: redirect")
        + "    rule_settings:\n      redirect: {target_uri: wiki}\n"
    )
    assert one(text) == (
        "p.yaml:7:30: gateway_rules[0] 'block example': rule_settings.redirect.target_uri: "
        "must be an absolute http:// or https:// URL, got 'wiki'"
    )


def test_duplicate_keys_are_refused() -> None:
    assert (
        one(RULE + "    precedence: 11\n")
        == "p.yaml:6:5: duplicate key 'precedence' (the second one would win silently)"
    )


def test_every_problem_is_reported() -> None:
    text = """\
    gateway_rules:
      - {name: a, precedence: x, action: block}
      - {name: b, precedence: 2, action: nope}
    access_policies:
      - {name: p, decision: allow, include: [{email: {email: nobody}}]}
    bogus: 1
    """
    assert problems(text) == [
        "p.yaml:2:27: gateway_rules[0] 'a': precedence: must be an integer, got 'x'",
        "p.yaml:3:38: gateway_rules[1] 'b': action: unknown action 'nope' (one of: allow, block, off, on, redirect)",
        "p.yaml:5:58: access_policies[0] 'p': include[0].email.email: must be an email address, got 'nobody'",
        "p.yaml:6:1: unknown key 'bogus' (known: gateway_rules, access_applications, access_policies, tests, lists)",
    ]


# --- expression errors at the exact column -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ('    traffic: http.request.hots == "a"\n', 14),
        ("    traffic: 'http.request.hots == \"a\"'\n", 15),
        ('    traffic: "http.request.hots == \\"a\\""\n', 15),
        (
            '    traffic: "any(http.request.domains[*] == \\"a\\") and http.request.hots == \\"b\\""\n',
            57,
        ),
        ("    traffic: 'http.request.host == \"it''s\" and http.request.hots == \"b\"'\n", 48),
        ('    traffic: "http.request.host == \\"\\x41\\" and http.request.hots == \\"b\\""\n', 49),
    ],
)
def test_expression_error_points_at_the_character(line: str, column: int) -> None:
    text = "gateway_rules:\n  - name: a\n    precedence: 1\n    action: block\n" + line
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(
        f"p.yaml:5:{column}: gateway_rules[0] 'a': traffic: unknown field 'http.request.hots'"
    )
    assert line[column - 1 :].startswith("http.request.hots")


def test_expression_error_in_a_block_scalar() -> None:
    text = textwrap.dedent(
        """\
        gateway_rules:
          - name: a
            precedence: 1
            action: block
            traffic: |
              http.request.host == "a.example"
              and http.request.methd == "POST"
        """
    )
    with pytest.raises(PolicyFileError) as caught:
        load(text, file="p.yaml")
    problem = caught.value.problems[0]
    assert str(problem).startswith(
        "p.yaml:7:11: gateway_rules[0] 'a': traffic: unknown field 'http.request.methd'"
    )
    assert problem.render().splitlines()[1:] == [
        '          and http.request.methd == "POST"',
        "              ^",
    ]


def test_expression_error_in_a_folded_scalar_points_at_the_value() -> None:
    text = 'gateway_rules:\n  - name: a\n    precedence: 1\n    action: block\n    traffic: >\n      http.request.hots\n      == "a"\n'
    found = one(text)
    assert found.startswith("p.yaml:5:14: gateway_rules[0] 'a': traffic: unknown field 'http.request.hots'")
    assert found.endswith("(line 1, column 1 of the expression)")


def test_render_shows_the_line_and_a_caret() -> None:
    with pytest.raises(PolicyFileError) as caught:
        load(RULE.replace("precedence: 10", "precedence: ten"), file="p.yaml")
    assert caught.value.problems[0].render().splitlines()[1:] == [
        "        precedence: ten",
        "                    ^",
    ]
    assert (
        str(caught.value)
        == "p.yaml:3:17: gateway_rules[0] 'block example': precedence: must be an integer, got 'ten'"
    )


# --- sets of files ------------------------------------------------------------------------------------


def test_duplicate_precedence_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(RULE)
    (tmp_path / "b.yaml").write_text("# second\n" + RULE.replace("block example", "another"))
    with pytest.raises(PolicyFileError) as caught:
        load_files([tmp_path])
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yaml'}:3:5: gateway rules 'block example' and 'another' both have precedence 10; give each enabled rule its own"
    ]


def test_reference_and_test_problems() -> None:
    text = """\
    access_applications:
      - {name: intranet, domain: intranet.example.com, policies: [missing]}
    tests:
      - name: t
        request: {url: "https://a.example/"}
        expect: {action: block, rule: blok example}
    """
    assert problems(RULE + textwrap.dedent(text)) == [
        "p.yaml:7:5: Access application 'intranet' (intranet.example.com) refers to policy id 'missing', which does not exist (known: none)",
        "p.yaml:9:5: test 't' expects rule 'blok example', which no loaded rule is named or has as id (did you mean 'block example'?)",
    ]


def test_load_files_reads_directories_and_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(RULE)
    (tmp_path / "notes.txt").write_text("not policy")
    (tmp_path / "b.yml").write_text(
        "access_policies:\n  - {id: p, name: p, decision: deny, include: [{everyone: {}}]}\n"
    )
    loaded = load_files([tmp_path])
    assert len(loaded.gateway_rules) == 1 and loaded.access_policies[0].decision is PolicyDecision.DENY
    with pytest.raises(PolicyFileError, match=r"missing.yaml:1:1: cannot read: No such file or directory"):
        load_files([tmp_path / "missing.yaml"])
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyFileError, match=r"bad.yaml:1:1: cannot read: 'utf-8' codec can't decode"):
        load_files([tmp_path / "bad.yaml"])


# --- hostile input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "gateway_rules: !!python/object/apply:os.system [echo hi]\n",
            "p.yaml:1:16: not valid here: could not determine a constructor",
        ),
        ("? [a, b]\n: 1\n", "p.yaml:1:3: not valid here: found unhashable key"),
        ("a: &x [*x]\n", "p.yaml:1:1: unknown key 'a'"),
        ("[" * 5000 + "]" * 5000, "p.yaml:1:1: not valid YAML: nested too deeply"),
    ],
)
def test_hostile_yaml_is_a_problem_not_a_crash(text: str, expected: str) -> None:
    assert one(text).startswith(expected)


def test_alias_bombs_are_cheap() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    found = problems("\n".join(lines) + "\n")
    assert len(found) == 9 and all("unknown key" in p for p in found)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("gateway_rules:-[]{}'\"\\ \n#&*!|>?,.0123456789ntfo")),
        max_size=120,
    )
)
def test_random_text_loads_or_reports(text: str) -> None:
    try:
        load(text, file="fuzz.yaml")
    except PolicyFileError as e:
        assert all(str(p).startswith("fuzz.yaml:") for p in e.problems)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["name", "action", "precedence", "traffic", "include", "x"]),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_random_shapes_load_or_report(value: object) -> None:
    import yaml

    for section in ("gateway_rules", "access_applications", "access_policies", "tests"):
        try:
            load(yaml.safe_dump({section: [value]}), file="fuzz.yaml")
        except PolicyFileError as e:
            assert all(str(p).startswith("fuzz.yaml:") for p in e.problems)


@settings(max_examples=400, deadline=None)
@given(
    name=st.text(min_size=1).filter(lambda s: s.strip() != ""),
    description=st.text(),
)
def test_export_then_import_keeps_every_string(name: str, description: str) -> None:
    """U+0085 (NEL) in a name was folded to a space by a plain scalar: now any text reads back."""
    rule = GatewayRule.from_api(
        {"name": name, "description": description, "precedence": 1, "action": "block", "traffic": ""},
        where="r",
    )
    policy_set = PolicySet(gateway_rules=(rule,))
    again = load(dump(policy_set))
    assert again.gateway_rules[0].name == rule.name
    assert again.gateway_rules[0].description == rule.description
    assert again == policy_set


@pytest.mark.parametrize("text", ["a\x85b", "x\u2028y", "tab\there", "line\r\nend", "  lead\nx", "é\x85\n"])
def test_export_then_import_keeps_line_breaks_yaml_would_fold(text: str) -> None:
    rule = GatewayRule.from_api({"name": text, "precedence": 1, "action": "allow"}, where="r")
    assert load(dump(PolicySet(gateway_rules=(rule,)))).gateway_rules[0].name == text
