import json

from mitmproxy.test import taddons, tflow, tutils

from addons.enforcement import DECISION, IDENTITY, DecisionRecord
from addons.request_log import RequestLog
from policies.facts import Identity, PostureNote, PostureState


def test_one_json_line_per_request_with_decision_and_ca() -> None:
    lines: list[str] = []
    log = RequestLog(lines.append, node_id="node-1", ca_fingerprint=lambda client_id: "AB:CD")
    flow = tflow.tflow(
        req=tutils.treq(host="casino.test", port=443, scheme=b"https", path=b"/spin?x=1"), resp=True
    )
    flow.request.headers["host"] = "casino.test"
    flow.metadata[DECISION] = DecisionRecord("block", "request", "rule-1", "Block gambling", "No gambling")
    with taddons.context(log):
        log.response(flow)
    (line,) = lines
    record = json.loads(line)
    assert record["node"] == "node-1" and record["host"] == "casino.test" and record["path"] == "/spin"
    assert record["action"] == "block" and record["rule_id"] == "rule-1" and record["reason"] == "No gambling"
    assert record["status"] == 200 and record["bytes"] == len(flow.response.raw_content)
    assert record["ca_fingerprint"] == "AB:CD" and record["time"].endswith("Z")
    assert record["user"] is None and record["device"] is None


def test_errors_are_logged_too() -> None:
    lines: list[str] = []
    log = RequestLog(lines.append)
    flow = tflow.tflow(err=True)
    with taddons.context(log):
        log.error(flow)
    record = json.loads(lines[0])
    assert record["action"] == "allow" and record["status"] is None and record["error"] == flow.error.msg


def test_the_line_names_the_rule_the_access_policy_and_the_posture_consulted() -> None:
    lines: list[str] = []
    log = RequestLog(lines.append)
    flow = tflow.tflow(resp=True)
    flow.metadata[IDENTITY] = Identity.of(
        device_id="dev-1",
        email="ana@corp.test",
        passed=["r1"],
        failed=["r2"],
        notes=[
            PostureNote("r1", "Client certificate", PostureState.PASSED, "found CN=ana"),
            PostureNote("r2", "Disk encryption", PostureState.FAILED, "not encrypted"),
        ],
    )
    flow.metadata[DECISION] = DecisionRecord(
        "allow",
        "request",
        "rule-9",
        "Allow staff",
        access_policy="Managed devices",
        posture=("r1", "r2", "r3"),
    )
    with taddons.context(log):
        log.response(flow)
    record = json.loads(lines[0])
    assert (record["rule_id"], record["rule"], record["access_policy"]) == (
        "rule-9",
        "Allow staff",
        "Managed devices",
    )
    assert (record["device"], record["user"]) == ("dev-1", "ana@corp.test")
    assert record["posture"] == [
        {"id": "r1", "name": "Client certificate", "state": "passed"},
        {"id": "r2", "name": "Disk encryption", "state": "failed", "reason": "not encrypted"},
        {"id": "r3", "name": "", "state": "no result"},
    ]
