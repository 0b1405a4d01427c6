"""``bench/report.py``: the interleaved summary's preemption counts and the workers' scaling note."""

from __future__ import annotations

from typing import Any

from bench import report


def _slice(target: str, rnd: int, ok: int, cpu_s: float, preempted: int | None) -> dict[str, Any]:
    return {
        "target": target,
        "round": rnd,
        "ok": ok,
        "elapsed_s": 2.0,
        "rate": ok / 2.0,
        "proxy_cpu_s": cpu_s,
        "proxy_cpu_us_per_req": cpu_s / ok * 1e6,
        "proxy_preempted": preempted,
    }


def _scenarios(preempted: tuple[int | None, int | None]) -> dict[str, Any]:
    slices = [
        _slice("gateway-w1", 0, 2000, 1.0, preempted[0]),
        _slice("gateway-w2", 0, 3000, 1.8, preempted[1]),
    ]
    return {"keep-alive": {"summary": report.summarize_interleaved(slices, ["gateway-w1", "gateway-w2"])}}


def test_preemptions_are_counted_per_thousand_operations() -> None:
    per = _scenarios((30, 4500))["keep-alive"]["summary"]["per_proxy"]
    assert per["gateway-w1"]["preempted_per_kop"] == 15
    assert per["gateway-w2"]["preempted_per_kop"] == 1500
    older = _scenarios((None, None))["keep-alive"]["summary"]["per_proxy"]  # results before the count
    assert older["gateway-w1"]["preempted_per_kop"] is None


def test_a_machine_too_small_for_the_workers_says_so_and_gives_the_command() -> None:
    names = ["gateway-w1", "gateway-w2"]
    lines = report._worker_scaling(_scenarios((1, 2)), names, {"machine": {"cpus": 2}})
    assert lines[1] == "  keep-alive: 2 workers 1.50x"
    assert "cannot show how throughput scales" in lines[2] and "at least 4 cores" in lines[2]
    assert report.WORKERS_COMMAND in lines[2]
    roomy = report._worker_scaling(_scenarios((1, 2)), names, {"machine": {"cpus": 8}})
    assert roomy == lines[:2]
    assert report._worker_scaling(_scenarios((1, 2)), ["gateway", "mitmdump"], {}) == []
