"""``gateway agent sync-ca`` (and the CA sync of ``run``) against the stand-in server, under a
temporary --root with a real NSS database and the system store directory: the table, --json,
exit statuses, the report POSTed equal to what the stores really hold, --save, enrolling again
keeps the records, an unprivileged user with only user stores, one-line errors, --help."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.state import load_state
from agent.trust_store import der_fingerprints, file_name_for, fp16, nickname_for
from agent.trust_system import SystemStore  # noqa: F401  imported before run_as drops privileges
from proxy.cli.main import main
from tests.agent.agent_standin import ServerThread, StandIn, serving
from tests.agent.agentlab import import_into_nssdb, make_nssdb, make_token, need_nss, rule_api, wire_rule
from tests.agent.test_trust import ANCHORS, BUNDLE, UPDATE, listed, nss_listing
from tests.support.pki import fingerprint, issue_leaf, make_ca

ROOT = Path(__file__).resolve().parents[2]
HOME = "/home/ann"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    need_nss()
    monkeypatch.setenv("HOME", HOME)  # under --root: DIR/home/ann/.pki/nssdb
    base = tmp_path / "root"
    (base / ANCHORS).mkdir(parents=True)
    make_nssdb(base / "home/ann/.pki/nssdb")
    return base


@pytest.fixture
def server() -> Iterator[tuple[StandIn, ServerThread]]:
    standin = StandIn()
    with serving(standin.app) as thread:
        yield standin, thread


def enroll(standin: StandIn, url: str, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = make_token(url, secret=standin.enroll_secret)
    assert main(["agent", "enroll", "--token", token, "--state", str(state), "--serial-number", "SN-1"]) == 0
    capsys.readouterr()


def present(root: Path) -> dict[str, list[str]]:
    """What the stores really hold, found independently: certutil -L and the rebuilt bundle (or the
    anchors when there is none)."""
    nssdb = root / "home/ann/.pki/nssdb"
    held = []
    for nickname in nss_listing(nssdb):
        out = subprocess.run(
            ["certutil", "-L", "-d", f"sql:{nssdb}", "-n", nickname, "-a"], check=True, capture_output=True
        ).stdout
        held += der_fingerprints(out)
    bundle = root / BUNDLE
    if bundle.exists():
        system = der_fingerprints(bundle.read_bytes())
    else:
        system = [fp for p in (root / ANCHORS).glob("*.crt") for fp in der_fingerprints(p.read_bytes())]
    return {"system": sorted(system), f"nss:{nssdb}": sorted(held)}


def table(out: str, first: str) -> dict[str, dict[str, str]]:
    """The table whose header starts with ``first``: row cells by column title, rows by first cell."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    header, rows = lines[start], []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line)
    titles = header.split()
    starts = [header.index(t) for t in titles]
    ends = [*starts[1:], None]
    parsed = [{t: line[a:b].strip() for t, a, b in zip(titles, starts, ends, strict=True)} for line in rows]
    return {row[titles[0]]: row for row in parsed}


def sync(state: Path, root: Path, *more: str) -> int:
    return main(["agent", "sync-ca", "--state", str(state), "--root", str(root), *more])


@pytest.mark.skipif(UPDATE is None, reason="needs Debian's update-ca-certificates")
def test_sync_ca_installs_removes_and_reports_what_is_present(
    sandbox: Path, server: tuple[StandIn, ServerThread], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin, thread = server
    state = tmp_path / "state.json"
    enroll(standin, thread.url, state, capsys)
    nssdb = sandbox / "home/ann/.pki/nssdb"
    hand = make_ca("Corp Root")
    import_into_nssdb(nssdb, hand, "corp root", with_key=False)
    a, b = make_ca("Gateway Root A"), make_ca("Gateway Root B")
    fa, fb = fingerprint(a.certificate), fingerprint(b.certificate)
    standin.roots = listed(a, b)

    assert sync(state, sandbox) == 0
    out = capsys.readouterr().out
    assert table(out, "CERTIFICATE") == {
        "cert-0": {
            "CERTIFICATE": "cert-0",
            "FINGERPRINT": fp16(fa),
            "STATUS": "available, in use",
            "CHECK": "ok",
        },
        "cert-1": {"CERTIFICATE": "cert-1", "FINGERPRINT": fp16(fb), "STATUS": "available", "CHECK": "ok"},
    }
    both = f"{fp16(fa)} {fp16(fb)}"
    stores = table(out, "STORE")
    assert stores["system"] == {
        "STORE": "system",
        "INSTALLED": both,
        "CHANGES": f"+{fp16(fa)} +{fp16(fb)}",
        "ERROR": "",
    }
    assert stores[f"nss:{nssdb}"]["INSTALLED"] == both and stores[f"nss:{nssdb}"]["ERROR"] == ""
    assert stores[f"nss:{sandbox}/etc/pki/nssdb"] == {"STORE": f"nss:{sandbox}/etc/pki/nssdb", "INSTALLED": "-",
                                                      "CHANGES": "", "ERROR": "no NSS database here"}  # fmt: skip
    assert out.splitlines()[-1] == "reported to the server: 3 stores, 4 installed"
    # the report sent is what the stores really hold (of the listed roots)
    sent = standin.latest_trust_report()
    really = present(sandbox)
    assert sorted(sent["system"]) == sorted(set(really["system"]) & {fa, fb}) == sorted([fa, fb])
    assert sorted(sent[f"nss:{nssdb}"]) == sorted(set(really[f"nss:{nssdb}"]) & {fa, fb}) == sorted([fa, fb])
    assert sent[f"nss:{sandbox}/etc/pki/nssdb"] == []
    errors = {e["store"]: e["error"] for e in standin.trust_reports[-1][1]["stores"]}
    assert errors == {
        "system": "",
        f"nss:{nssdb}": "",
        f"nss:{sandbox}/etc/pki/nssdb": "no NSS database here",
    }
    records = load_state(state).trust_installed
    assert sorted((r.store, r.name) for r in records) == sorted([
        (f"system:{sandbox / ANCHORS}", str(sandbox / ANCHORS / file_name_for(fa))),
        (f"system:{sandbox / ANCHORS}", str(sandbox / ANCHORS / file_name_for(fb))),
        (f"nss:{nssdb}", nickname_for(fa)), (f"nss:{nssdb}", nickname_for(fb)),
    ])  # fmt: skip

    # A goes back to inactive: removed from both stores; the hand-added root stays
    standin.roots = listed(b)
    assert sync(state, sandbox, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    by_store = {s["store"]: s for s in report["stores"]}
    assert by_store["system"]["removed"] == [fa] and by_store["system"]["installed"] == [fb]
    assert by_store[f"nss:{nssdb}"]["removed"] == [fa] and by_store[f"nss:{nssdb}"]["installed"] == [fb]
    assert report["server"] == {"stores": 3, "installed": 2}
    assert set(nss_listing(nssdb)) == {"corp root", nickname_for(fb)}
    assert fa not in present(sandbox)["system"] and fb in present(sandbox)["system"]
    assert standin.latest_trust_report()["system"] == [fb]


def test_a_refused_certificate_is_shown_and_exits_3(
    sandbox: Path, server: tuple[StandIn, ServerThread], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin, thread = server
    state = tmp_path / "state.json"
    enroll(standin, thread.url, state, capsys)
    good, leaf = make_ca("Good"), issue_leaf(make_ca("Issuer"), "leaf")
    standin.roots = [*listed(good), *listed(make_ca("Spoofed"), fingerprint_of=good), *listed(leaf)]
    standin.roots[1]["id"], standin.roots[2]["id"] = "spoofed", "leaf"
    standin.roots[1]["fingerprint"] = fingerprint(make_ca("Elsewhere").certificate)
    assert sync(state, sandbox, "--no-system") == 3
    certificates = table(capsys.readouterr().out, "CERTIFICATE")
    assert certificates["cert-0"]["CHECK"] == "ok"
    assert certificates["spoofed"]["CHECK"].startswith("refused: its SHA-256 fingerprint is ")
    assert certificates["leaf"]["FINGERPRINT"] == fp16(fingerprint(leaf.certificate))
    assert certificates["leaf"]["CHECK"] == "refused: not a CA: basicConstraints CA=false"
    assert set(nss_listing(sandbox / "home/ann/.pki/nssdb")) == {nickname_for(fingerprint(good.certificate))}
    assert "system" not in standin.latest_trust_report()  # switched off: not a store of this sync


def test_save_remembers_the_store_options_for_run(
    sandbox: Path, server: tuple[StandIn, ServerThread], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin, thread = server
    state = tmp_path / "state.json"
    enroll(standin, thread.url, state, capsys)
    extra = make_nssdb(sandbox / "opt/app/nssdb")
    ca = make_ca()
    standin.roots = listed(ca)
    assert sync(state, sandbox, "--no-system", "--no-nss", "--nss-db", "/opt/app/nssdb", "--save") == 0
    assert capsys.readouterr().out.endswith(f"store options saved to {state}\n")
    saved = json.loads(state.read_text())["trust_stores"]
    assert saved == {"system": False, "nss": False, "nss_databases": ["/opt/app/nssdb"]}
    assert set(standin.latest_trust_report()) == {f"nss:{extra}"}
    # run uses them: a rule round and a CA sync; the sync prints only what changed
    standin.rules = [wire_rule(rule_api("r1", name="corp cert", paths=("/nonexistent.pem",)), ca)]
    other = make_ca("Next Root")
    standin.roots = listed(ca, other)
    assert main(["agent", "run", "--state", str(state), "--root", str(sandbox), "--once"]) == 0
    out = capsys.readouterr().out
    assert f"CA sync: nss:{extra}: +{fp16(fingerprint(other.certificate))}" in out
    assert "corp cert: fail" in out
    assert set(nss_listing(extra)) == {
        nickname_for(fingerprint(ca.certificate)),
        nickname_for(fingerprint(other.certificate)),
    }
    assert set(standin.latest_trust_report()) == {f"nss:{extra}"}


def test_enrolling_again_keeps_the_records_and_options(
    sandbox: Path, server: tuple[StandIn, ServerThread], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin, thread = server
    state = tmp_path / "state.json"
    enroll(standin, thread.url, state, capsys)
    ca = make_ca()
    standin.roots = listed(ca)
    assert sync(state, sandbox, "--no-system", "--save") == 0
    before = load_state(state)
    token = make_token(thread.url, secret=standin.enroll_secret)
    assert main(["agent", "enroll", "--force", "--token", token, "--state", str(state)]) == 0
    after = load_state(state)
    assert after.device_id != before.device_id
    assert (after.trust_installed, after.trust_stores) == (before.trust_installed, before.trust_stores)
    standin.roots = []  # so the new enrollment can still take back what the old one installed
    capsys.readouterr()
    assert sync(state, sandbox) == 0
    assert nss_listing(sandbox / "home/ann/.pki/nssdb") == {}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--root", "{tmp}/nowhere"], "--root {tmp}/nowhere: no such directory"),
        (["--root", "{tmp}", "--no-system", "--no-nss"], "no trust store is enabled"),
        (
            ["--root", "{tmp}", "--nss-db", "relative/db"],
            "--nss-db relative/db: give the NSS database's absolute directory",
        ),
    ],
)
def test_errors_are_one_line(
    server: tuple[StandIn, ServerThread],
    tmp_path: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin, thread = server
    state = tmp_path / "state.json"
    enroll(standin, thread.url, state, capsys)
    assert (
        main(["agent", "sync-ca", "--state", str(state), *[a.replace("{tmp}", str(tmp_path)) for a in extra]])
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gateway: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in err


def test_a_removed_device_is_one_line_and_nothing_changes(
    sandbox: Path, server: tuple[StandIn, ServerThread], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin, thread = server
    state = tmp_path / "state.json"
    enroll(standin, thread.url, state, capsys)
    standin.roots = listed(make_ca())
    standin.devices.clear()
    assert sync(state, sandbox) == 1
    assert "(HTTP 401): was this device removed? enroll again" in capsys.readouterr().err
    assert nss_listing(sandbox / "home/ann/.pki/nssdb") == {} and not list((sandbox / ANCHORS).iterdir())


def test_sync_ca_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("sync-ca", "run"):
        with pytest.raises(SystemExit) as done:
            main(["agent", command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        for option in ("--root DIR", "--no-system", "--no-nss", "--nss-db DIR", "--state FILE", "example:"):
            assert option in out, (command, option)
    with pytest.raises(SystemExit) as done:
        main(["agent", "sync-ca", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "--save" in out and "Exit status 3" in out


def run_as(uid: int, argv: list[str], scratch: Path) -> tuple[int, str, str]:
    """``gateway <argv>`` in a forked child that dropped to ``uid`` (this interpreter lives under
    /root, 0700, so a fresh process as another user could not even start it)."""
    out_path, err_path = scratch / "out.txt", scratch / "err.txt"
    with out_path.open("wb") as out_file, err_path.open("wb") as err_file, warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # fork() beside the stand-in's thread: the child only runs main
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 99
            try:
                os.dup2(out_file.fileno(), 1)
                os.dup2(err_file.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                code = main(argv)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out_path.read_text(), err_path.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged user")
def test_an_unprivileged_user_syncs_its_own_stores_and_is_told_about_the_system_one(
    server: tuple[StandIn, ServerThread], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    need_nss()
    standin, thread = server
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="gateway-agent-user-", dir="/tmp"))  # pytest's tmp dirs are 0700 root
    try:
        base.chmod(0o755)
        root = base / "root"
        (root / ANCHORS).mkdir(parents=True)  # root's, 0755: not writable by the user
        nssdb = make_nssdb(root / "home/ann/.pki/nssdb")
        home_state = base / "state"
        monkeypatch.setenv("HOME", HOME)
        enroll(standin, thread.url, home_state / "state.json", capsys)
        for directory, _, files in os.walk(base):
            if Path(directory).is_relative_to(root / "home") or Path(directory).is_relative_to(home_state):
                os.chown(directory, nobody, nobody)
                for name in files:
                    os.chown(Path(directory) / name, nobody, nobody)
        os.chown(root / "home", 0, 0)
        ca = make_ca()
        standin.roots = listed(ca)
        argv = ["agent", "sync-ca", "--state", str(home_state / "state.json"), "--root", str(root)]

        code, out, err = run_as(nobody, argv, base)
        assert code == 3, out + err  # the system store has a problem: reported, not fatal
        assert "Traceback" not in err
        assert (f"{root / ANCHORS} is not writable by uid {nobody} (permission denied): the system store needs root; "
                "leave it out with --no-system") in out  # fmt: skip
        assert set(nss_listing(nssdb)) == {nickname_for(fingerprint(ca.certificate))}
        sent = {e["store"]: e for e in standin.trust_reports[-1][1]["stores"]}
        assert sent["system"]["installed"] == [] and "permission denied" in sent["system"]["error"]
        assert sent[f"nss:{nssdb}"] == {
            "store": f"nss:{nssdb}",
            "installed": [fingerprint(ca.certificate)],
            "error": "",
        }

        code, out, err = run_as(nobody, [*argv, "--no-system"], base)
        assert code == 0, out + err  # only user stores: all is well without root
        assert list((root / ANCHORS).iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _agent_process(program: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """The agent as a separate process (``python -m agent.cli`` is gateway-agent; ``proxy.cli.main
    agent`` is gateway agent), ended after 60 s whatever happens."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": HOME}
    return subprocess.run(
        [sys.executable, "-m", *program, *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


@pytest.mark.parametrize(
    ("program", "rounds"),
    [(["agent.cli"], ["--once"]), (["proxy.cli.main", "agent"], ["--max-rounds", "1"])],
)
def test_run_once_without_rules_syncs_the_cas_and_ends(
    server: tuple[StandIn, ServerThread],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    program: list[str],
    rounds: list[str],
) -> None:
    need_nss()
    standin, thread = server  # no posture rule for this device
    state = tmp_path / "state.json"
    enroll(standin, thread.url, state, capsys)
    root = tmp_path / "empty"
    root.mkdir()
    a = make_ca("Gateway Root A")
    standin.roots = listed(a)
    done = _agent_process(program, "run", *rounds, "--state", str(state), "--root", str(root), "--no-system")
    assert done.returncode == 0, done.stderr
    nssdb = root / "home/ann/.pki/nssdb"  # made in the sandbox, empty, then the root put in
    assert f" CA sync: nss:{nssdb}: +{fp16(fingerprint(a.certificate))}\n" in done.stdout
    assert done.stdout.endswith(" round 1: no posture rules apply to this device\n")
    assert standin.latest_trust_report()[f"nss:{nssdb}"] == [fingerprint(a.certificate)]
    assert standin.stored == []


@pytest.mark.skipif(UPDATE is None, reason="needs Debian's update-ca-certificates")
def test_sync_ca_under_an_empty_root_makes_the_folders_and_the_user_database(
    server: tuple[StandIn, ServerThread],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    need_nss()
    monkeypatch.setenv("HOME", HOME)
    standin, thread = server
    state = tmp_path / "state.json"
    enroll(standin, thread.url, state, capsys)
    root = tmp_path / "empty"
    root.mkdir()
    a = make_ca("Gateway Root A")
    fa = fingerprint(a.certificate)
    standin.roots = listed(a)

    assert sync(state, root) == 0, capsys.readouterr()
    stores = table(capsys.readouterr().out, "STORE")
    nssdb = f"nss:{root}/home/ann/.pki/nssdb"
    assert (stores["system"]["INSTALLED"], stores["system"]["ERROR"]) == (fp16(fa), "")
    assert (stores[nssdb]["INSTALLED"], stores[nssdb]["ERROR"]) == (fp16(fa), "")
    # the system NSS database is not made: its absence is reported, as on a real machine
    assert stores[f"nss:{root}/etc/pki/nssdb"]["ERROR"] == "no NSS database here"
    assert present(root) == {"system": [fa], nssdb: [fa]}
    assert (root / ANCHORS / file_name_for(fa)).is_file()


def test_the_help_says_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["agent", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:\n  0 " in out
    for line in (
        "  1    an error",
        "  2    the command line cannot be parsed",
        "  3    a rule failed (check, report)",
    ):
        assert line in out
    with pytest.raises(SystemExit) as done:
        main(["agent", "sync-ca", "--help"])
    assert done.value.code == 0
    assert "example:\n  mkdir /tmp/sandbox\n  gateway agent sync-ca --root /tmp/sandbox --no-system" in (
        capsys.readouterr().out
    )
