"""In-process leaf issuance microbenchmark: certs.LeafIssuer vs mitmproxy's CertStore.get_cert.

Both sign with an EC P-256 CA. "new" = a name never asked before (a cache miss: build + sign one
certificate), "cached" = a name asked before and still in the cache. Times are wall-clock per
call in microseconds, measured one call at a time with perf_counter_ns.

mitmproxy's CertStore keeps at most STORE_CAP (100) generated leaves, FIFO; once full, every miss
also rebuilds its dict to evict one (that is mitmproxy's real behaviour, so it is included; the
median of the first 100 misses, below the cap, is reported as well).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pki import Authority

REPO = Path(__file__).resolve().parent.parent
WARMUP = 50


def summary(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {}
    s = sorted(samples_ns)

    def pick(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] / 1000

    return {
        "n": len(s),
        "median_us": statistics.median(s) / 1000,
        "p90_us": pick(0.90),
        "p99_us": pick(0.99),
        "mean_us": statistics.fmean(s) / 1000,
        "max_us": s[-1] / 1000,
    }


def _time_calls(fn: Callable[[str], Any], names: list[str]) -> list[int]:
    out = []
    for name in names:
        t0 = time.perf_counter_ns()
        fn(name)
        out.append(time.perf_counter_ns() - t0)
    return out


def _run(
    fn: Callable[[str], Any], n: int, cached_n: int, tag: str, reset: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    _time_calls(fn, [f"w{i:06d}.warm.{tag}.bench.test" for i in range(WARMUP)])
    reset()  # start the timed part with an empty cache (mitmproxy's fills at 100)
    names = [f"l{i:06d}.leaf.{tag}.bench.test" for i in range(n)]
    new = _time_calls(fn, names)
    recent = names[-min(100, n) :]  # within both caches (mitmproxy keeps 100)
    cached = _time_calls(fn, [recent[i % len(recent)] for i in range(cached_n)])
    return {"new": summary(new), "new_first100": summary(new[:100]), "cached": summary(cached)}


def bench_gateway(n: int, cached_n: int) -> dict[str, Any]:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from certs.authority import CertificateAuthority, KeyType
    from certs.issuer import LeafIssuer

    ca = CertificateAuthority.generate(
        common_name="Bench gateway CA", organization="Gateway bench", key_type=KeyType.EC_P256
    )
    issuer = LeafIssuer(ca)
    result = _run(lambda name: issuer.leaf_for([name]), n, cached_n, "gw")
    result["cache_info"] = repr(issuer.cache_info())
    leaf = issuer.leaf_for(["probe.bench.test"])
    result["leaf_key"] = type(leaf.private_key).__name__
    result["leaf_key_is_ca_key"] = leaf.certificate.public_key() == ca.certificate.public_key()
    result["floor"] = bench_floor(ca, issuer, n)
    return result


def bench_floor(ca: Any, issuer: Any, n: int) -> dict[str, Any]:
    """``cryptography``'s own cost for the same leaf: one ``CertificateBuilder`` with the same
    issuer, key, validity and extensions (built once), signed, timed alternately with
    ``leaf_for`` on new names, so both see the same machine. The gateway's issuance can not
    be cheaper than this without encoding the certificate outside ``cryptography``."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    leaf = issuer.leaf_for(["floor.bench.test"])
    shared = [e for e in leaf.certificate.extensions if e.oid != x509.SubjectAlternativeName.oid]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    later = now + dt.timedelta(days=47)

    def floor(name: str) -> None:
        san = x509.Extension(
            x509.SubjectAlternativeName.oid, True, x509.SubjectAlternativeName([x509.DNSName(name)])
        )
        x509.CertificateBuilder(
            issuer_name=ca.certificate.subject,
            subject_name=x509.Name([]),
            public_key=leaf.certificate.public_key(),
            serial_number=x509.random_serial_number(),
            not_valid_before=now,
            not_valid_after=later,
            extensions=[*shared, san],
        ).sign(ca.private_key, hashes.SHA256())

    ours: list[int] = []
    bare: list[int] = []
    for i in range(n):
        for fn, out, name in (
            (lambda nm: issuer.leaf_for([nm]), ours, f"p{i:06d}.pair.gw.bench.test"),
            (floor, bare, f"p{i:06d}.pair.floor.bench.test"),
        ):
            t0 = time.perf_counter_ns()
            fn(name)
            out.append(time.perf_counter_ns() - t0)
    a, b = summary(ours), summary(bare)
    return {
        "leaf_for": a,
        "cryptography": b,
        "ratio_median": a["median_us"] / b["median_us"] if b else None,
    }


def bench_mitmproxy(n: int, cached_n: int, workdir: Path) -> dict[str, Any]:
    from cryptography import x509
    from mitmproxy import certs

    workdir.mkdir(parents=True, exist_ok=True)
    ca = Authority.generate("Bench mitmproxy CA")
    ca_file = workdir / "mitmproxy-ca.pem"
    ca_file.write_bytes(ca.key_pem() + ca.cert_pem())
    store = certs.CertStore.from_files(ca_file, workdir / "mitmproxy-dhparam.pem")

    def reset() -> None:
        store.certs.clear()
        store.expire_queue.clear()

    result = _run(lambda name: store.get_cert(name, [x509.DNSName(name)]), n, cached_n, "mitm", reset)
    result["store_cap"] = certs.CertStore.STORE_CAP
    result["leaf_key_is_ca_key"] = True  # CertStore signs every leaf for the CA's own key pair
    return result


def run(n: int, cached_n: int, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"n_new": n, "n_cached": cached_n}
    out["mitmproxy"] = bench_mitmproxy(n, cached_n, workdir)
    try:
        out["gateway"] = bench_gateway(n, cached_n)
    except Exception as e:  # noqa: BLE001 - certs/ is being written concurrently: report, don't fail
        out["gateway"] = {"pending": f"{type(e).__name__}: {e}"[:300]}
    return out
