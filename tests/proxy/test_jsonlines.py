import json
import stat

from proxy.jsonlines import JsonLinesFile


def test_lines_reach_the_file_on_flush_and_close(tmp_path) -> None:
    log = JsonLinesFile(tmp_path / "requests.jsonl")
    log.write(json.dumps({"n": 1}))
    assert (tmp_path / "requests.jsonl").read_text() == ""  # buffered: the request path only appends
    log.flush()
    log.write(json.dumps({"n": 2}))
    log.close()
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [1, 2]
    assert stat.S_IMODE((tmp_path / "requests.jsonl").stat().st_mode) == 0o600


def test_rotation_keeps_the_newest_backups(tmp_path) -> None:
    log = JsonLinesFile(tmp_path / "r.jsonl", max_bytes=100, backups=2)
    for n in range(12):
        log.write(json.dumps({"n": n, "pad": "x" * 40}))
        log.flush()
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]

    def numbers(name: str) -> list[int]:
        return [json.loads(x)["n"] for x in (tmp_path / name).read_text().splitlines()]

    # Each line is ~55 bytes: every second line passes 100 bytes and rotates.
    assert numbers("r.jsonl.1") == [10, 11] and numbers("r.jsonl.2") == [8, 9]
    assert numbers("r.jsonl") == []


def test_a_full_buffer_is_written_without_waiting(tmp_path) -> None:
    log = JsonLinesFile(tmp_path / "r.jsonl", max_pending=3)
    for n in range(3):
        log.write(str(n))
    assert (tmp_path / "r.jsonl").read_text().splitlines() == ["0", "1", "2"]
    log.close()
