"""``gateway token create|list|revoke``: admin tokens made in the data directory's store, with file
access to it instead of an old token (``proxy/cli/token.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certs.clock import utcnow
from proxy.cli.main import main
from proxy.services import accounts
from proxy.store import Store, TokenOrigin

FIRST = "first-start-token-0123456789abcdef"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory as `gateway run` leaves it: a store with an account and one admin token."""
    directory = tmp_path / "data"
    directory.mkdir()
    store = Store.open(directory / "gateway.db")
    try:
        accounts.create_account(store, "Gateway", utcnow)
        accounts.add_token(store, FIRST, TokenOrigin.GENERATED, utcnow, name="gateway run")
    finally:
        store.close()
    return directory


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    """The same store, opened beside the commands (as the running gateway has it open)."""
    opened = Store.open(data_dir / "gateway.db")
    yield opened
    opened.close()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_a_working_token_alone_and_stores_only_its_hash(
    data_dir: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "token", "create", "--data-dir", str(data_dir), "--name", "laptop")
    assert code == 0
    token = out.strip()
    assert out == token + "\n" and len(token) >= 32
    assert "shown once" in err and token not in err
    record = accounts.authenticate(store, token)
    assert record is not None and record.name == "laptop" and record.account_id is None
    assert record.origin is TokenOrigin.GENERATED
    assert accounts.authenticate(store, FIRST) is not None, "the other tokens must keep working"
    assert all(token.encode() not in line.encode() for line in store.dump())


def test_two_creates_make_two_different_tokens(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokens = {_run(capsys, "token", "create", "--data-dir", str(data_dir))[1] for _ in range(2)}
    assert len(tokens) == 2


def test_list_shows_ids_origins_and_names_never_a_token(
    data_dir: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    _, made, _ = _run(capsys, "token", "create", "--data-dir", str(data_dir), "--name", "ci")
    code, out, _ = _run(capsys, "token", "list", "--data-dir", str(data_dir))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "ORIGIN", "NAME", "CREATED", "SCOPE"]
    tokens = store.tokens.list()
    assert len(rows) == len(tokens) == 2
    for row, token in zip(rows, tokens, strict=True):
        assert row.startswith(f"{token.id}  generated  {token.name}") and row.endswith("all accounts")
    assert made.strip() not in out and FIRST not in out
    assert all(t.token_sha256.hex() not in out for t in store.tokens.list())


def test_revoke_by_a_prefix_stops_the_token_at_once(
    data_dir: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    (first,) = store.tokens.list()
    code, out, err = _run(capsys, "token", "revoke", first.id[:6], "--data-dir", str(data_dir))
    assert code == 0
    assert out == f"revoked admin token {first.id} (gateway run)\n"
    assert accounts.authenticate(store, FIRST) is None
    assert "no admin token is left; make one with `gateway token create`" in err


@pytest.mark.parametrize(
    ("wanted", "message"),
    [("ffffffffff", "no admin token 'ffffffffff' in "), ("", "no admin token '' in ")],
)
def test_revoke_refuses_an_unknown_id(
    data_dir: Path, store: Store, capsys: pytest.CaptureFixture[str], wanted: str, message: str
) -> None:
    code, _, err = _run(capsys, "token", "revoke", wanted, "--data-dir", str(data_dir))
    assert code == 1 and err.startswith(f"gateway: error: {message}") and err.count("\n") == 1
    assert accounts.authenticate(store, FIRST) is not None


def test_revoke_refuses_an_ambiguous_prefix(
    data_dir: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(20):  # 16 hex digits: 20 tokens share a first digit with another
        accounts.add_token(store, accounts.new_token(), TokenOrigin.GENERATED, utcnow)
    ids = [t.id for t in store.tokens.list()]
    shared = next(i[0] for i in ids if sum(j.startswith(i[0]) for j in ids) > 1)
    code, _, err = _run(capsys, "token", "revoke", shared, "--data-dir", str(data_dir))
    assert code == 1 and "is the start of" in err and "give more of it" in err
    assert len(store.tokens.list()) == len(ids)


def test_revoking_the_environment_token_says_it_comes_back(
    data_dir: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    env = accounts.add_token(store, "env-token-0123456789abcdef", TokenOrigin.ENV, utcnow)
    code, _, err = _run(capsys, "token", "revoke", env.id, "--data-dir", str(data_dir))
    assert code == 0 and "comes back at the next start while GATEWAY_ADMIN_TOKEN holds it" in err


@pytest.mark.parametrize("command", [["create"], ["list"], ["revoke", "abc"]])
def test_a_directory_without_a_store_is_named_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    empty = tmp_path / "nothing-here"
    code, out, err = _run(capsys, "token", *command, "--data-dir", str(empty))
    assert code == 1 and out == ""
    assert err == (
        f"gateway: error: no gateway store in {empty} (no gateway.db): start `gateway run --data-dir "
        f"{empty}` once to make one, or pass the --data-dir that `gateway run` uses\n"
    )
    assert not empty.exists()


def test_create_refuses_a_store_without_an_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Store.open(tmp_path / "gateway.db").close()
    code, out, err = _run(capsys, "token", "create", "--data-dir", str(tmp_path))
    assert code == 1 and out == "" and "has no account yet" in err


def test_create_refuses_an_unprintable_name(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "token", "create", "--data-dir", str(data_dir), "--name", "a\x1bb")
    assert code == 1 and out == "" and err == "gateway: error: --name: use at most 100 printable characters\n"


def test_create_with_account_scopes_the_token_to_it(
    data_dir: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    branch = accounts.create_account(store, "Branch", utcnow)
    for wanted in (branch.id, branch.id[:12], "branch"):
        code, out, err = _run(capsys, "token", "create", "--data-dir", str(data_dir), "--account", wanted)
        assert code == 0 and f"for account {branch.id} (Branch) only" in err
        record = accounts.authenticate(store, out.strip())
        assert record is not None and record.account_id == branch.id
    listed = _run(capsys, "token", "list", "--data-dir", str(data_dir))[1]
    assert listed.count(branch.id) == 3 and "all accounts" in listed


def test_create_refuses_an_unknown_account_and_makes_nothing(
    data_dir: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store.tokens.count()
    code, out, err = _run(capsys, "token", "create", "--data-dir", str(data_dir), "--account", "nowhere")
    assert code == 1 and out == ""
    assert "--account: no account 'nowhere'" in err and "gateway account list" in err
    assert store.tokens.count() == before


def test_tokens_of_a_store_on_postgresql(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--database: the commands act on that store, not on a data directory's."""
    store = Store.open(pg_url)
    try:
        accounts.create_account(store, "Gateway", utcnow)
        code, out, _ = _run(
            capsys, "token", "create", "--data-dir", str(tmp_path / "none"), "--database", pg_url
        )
        assert code == 0 and accounts.authenticate(store, out.strip()) is not None
        code, out, _ = _run(capsys, "token", "list", "--database", pg_url)
        assert code == 0 and len(out.strip().splitlines()) >= 1
    finally:
        store.close()
    assert main(["token", "list", "--database", "postgresql://gateway@127.0.0.1:1/none"]) == 2
    assert "the database is unreachable" in capsys.readouterr().err
