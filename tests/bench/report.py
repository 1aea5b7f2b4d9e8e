"""Figures from the runs of one bench: medians over the repeats, the goals with PASS/MISS, the table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.bench.procs import median

LABELS = {
    "enqueue.sdk": "jetqueue JobClient.enqueue_many",
    "enqueue.raw": "raw js.publish_async, same messages",
    "http.bulk": "HTTP POST /jobs/{q}/bulk (producer)",
    "http.single.producer": "HTTP POST /jobs/{q} (producer)",
    "http.single.bare": "HTTP POST /jobs/{q} (bare Litestar 202)",
    "e2e.jetqueue": "jetqueue end to end",
    "e2e.raw_push": "raw nats-py push + ack",
    "e2e.raw_pull": "raw nats-py pull fetch + ack",
    "peers.pgqueuer": "pgqueuer end to end",
    "peers.taskiq": "taskiq-nats end to end",
    "scale.jetqueue_small": "jetqueue end to end, small N",
    "scale.jetqueue_large": "jetqueue end to end, large N",
    "scale.raw_push_large": "raw nats-py push + ack, large N",
}


def category(group: str) -> str:
    if group.startswith(("worker", "consumer")):
        return "workers"
    if group in ("nats-server", "postgres", "postgres-aux"):
        return "broker"
    return group


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats; invalid if any repeat failed its checks (its problems are listed)."""
    ok = [r for r in runs if r.get("valid")]
    out: dict[str, Any] = {
        "system": next((r["system"] for r in runs if "system" in r), None),
        "n": runs[0].get("n") if runs else None,
        "runs": len(runs),
        "valid_runs": len(ok),
        "valid": bool(runs) and len(ok) == len(runs),
        "problems": [p for r in runs for p in r.get("problems", [])],
    }
    for key in ("per_s", "cpu_us_per_job", "requests_per_s", "server_cpu_us_per_request", "p50_ms", "p99_ms"):
        if any(key in r for r in ok):
            out[key] = median(r.get(key) for r in ok)
            out[f"{key}_all"] = [r.get(key) for r in runs]
    cpus = [r["cpu"] for r in ok if "cpu" in r]
    if cpus:
        n = out["n"] or 1
        split: dict[str, list[float]] = {}
        for c in cpus:
            per: dict[str, float] = {}
            for g, s in c["cpu_s"].items():
                per[category(g)] = per.get(category(g), 0.0) + s * 1e6 / n
            for k, v in per.items():
                split.setdefault(k, []).append(v)
        out["cpu_us_per_job_by_part"] = {k: round(median(v) or 0, 1) for k, v in split.items()}
        out["machine_busy_pct"] = median(c["machine_busy_pct"] for c in cpus)
        out["machine_other_pct_max"] = max((c["machine_other_pct"] or 0) for c in cpus)
    for key in ("rss_mb", "workers", "achieved_rate"):
        if ok and key in ok[-1]:
            out[key] = ok[-1][key]
    return out


# ------------------------------------------------------------------ goals
@dataclass
class Goal:
    name: str
    target: str
    source: str
    measure: Callable[[dict[str, Any]], tuple[float | None, str, bool]]  # value, text, valid
    ok: Callable[[float], bool] | None


def _fig(f: dict[str, Any], key: str, value: str = "per_s") -> tuple[float | None, bool]:
    x = f.get(key)
    if not x:
        return None, True
    return x.get(value), x["valid"]


def ratio(num: str, den: str, value: str = "per_s") -> Callable[[dict[str, Any]], tuple[float | None, str, bool]]:
    def get(f: dict[str, Any]) -> tuple[float | None, str, bool]:
        (a, va), (b, vb) = _fig(f, num, value), _fig(f, den, value)
        if not (va and vb):
            return None, "invalid: " + ", ".join(k for k, v in ((num, va), (den, vb)) if not v), False
        if a is None or not b:
            return None, "not measured", True
        return a / b, f"{100 * a / b:.1f} % ({a:,.0f} / {b:,.0f})", va and vb

    return get


def value(key: str, field: str, unit: str) -> Callable[[dict[str, Any]], tuple[float | None, str, bool]]:
    def get(f: dict[str, Any]) -> tuple[float | None, str, bool]:
        v, valid = _fig(f, key, field)
        return (None, "not measured", True) if v is None else (v, f"{v:,.1f} {unit}", valid)

    return get


def rss_ratio(f: dict[str, Any]) -> tuple[float | None, str, bool]:
    jq, raw = f.get("scale.jetqueue_large"), f.get("scale.raw_push_large")
    if not jq or not raw or not jq.get("rss_mb") or not raw.get("rss_mb"):
        return None, "not measured", True
    a = sum(jq["rss_mb"].values()) / len(jq["rss_mb"])
    b = sum(raw["rss_mb"].values()) / len(raw["rss_mb"])
    return a / b, f"{a:.0f} MB vs {b:.0f} MB per process ({a / b:.2f}x)", jq["valid"] and raw["valid"]


def latency(f: dict[str, Any]) -> tuple[float | None, str, bool]:
    jq, raw = f.get("latency.jetqueue"), f.get("latency.raw_push")
    if not jq or not raw:
        return None, "not measured", True
    a, b = jq.get("p99_ms"), raw.get("p99_ms")
    text = f"p50 {jq.get('p50_ms')} / p99 {a} ms vs raw push p50 {raw.get('p50_ms')} / p99 {b} ms"
    return (a / b if a is not None and b else None), text, jq["valid"] and raw["valid"]


def workers_scan(f: dict[str, Any]) -> tuple[float | None, str, bool]:
    keys = sorted(k for k in f if k.startswith("scale.workers_"))
    if not keys:
        return None, "not measured", True
    parts = [f"{k.rsplit('_', 1)[1]}w {f[k].get('per_s') or 0:,.0f}/s" for k in keys]
    return None, ", ".join(parts), all(f[k]["valid"] for k in keys)


GOALS = [
    Goal(
        "1 e2e jobs/s: jetqueue / raw push",
        ">= 60 %",
        "docs/benchmarks.md (b), PERF_FLOOR.md",
        ratio("e2e.jetqueue", "e2e.raw_push"),
        lambda x: x >= 0.60,
    ),
    Goal(
        "1 e2e jobs/s: jetqueue / pgqueuer",
        ">= 100 %",
        "the issue: not slower than pgqueuer",
        ratio("e2e.jetqueue", "peers.pgqueuer"),
        lambda x: x >= 1.0,
    ),
    Goal(
        "1 e2e jobs/s: jetqueue / taskiq-nats",
        "report only",
        "",
        ratio("e2e.jetqueue", "peers.taskiq"),
        None,
    ),
    Goal(
        "2 CPU per job, all processes (jetqueue e2e)",
        "<= 100 us",
        "the issue",
        value("e2e.jetqueue", "cpu_us_per_job", "us"),
        lambda x: x <= 100,
    ),
    Goal(
        "2 CPU per job: jetqueue / raw push",
        "report only",
        "",
        ratio("e2e.jetqueue", "e2e.raw_push", "cpu_us_per_job"),
        None,
    ),
    Goal(
        "2 CPU per job: jetqueue / pgqueuer",
        "report only",
        "",
        ratio("e2e.jetqueue", "peers.pgqueuer", "cpu_us_per_job"),
        None,
    ),
    Goal(
        "3 enqueue_many / raw publish_async",
        ">= 80 %",
        "the issue",
        ratio("enqueue.sdk", "enqueue.raw"),
        lambda x: x >= 0.80,
    ),
    Goal(
        "3 HTTP bulk / enqueue_many (jobs/s)",
        ">= 50 %",
        "the issue",
        ratio("http.bulk", "enqueue.sdk"),
        lambda x: x >= 0.50,
    ),
    Goal(
        "3 HTTP single / bare Litestar (req/s)",
        ">= 50 %",
        "the issue",
        ratio("http.single.producer", "http.single.bare", "requests_per_s"),
        lambda x: x >= 0.50,
    ),
    Goal("4 enqueue->start p99: jetqueue / raw push", "<= 200 %", "the issue", latency, lambda x: x <= 2.0),
    Goal(
        "5 CPU per job: large N / small N",
        "<= 115 %",
        "the issue: flat within 15 % (a cost that falls with N is start-up spread over more jobs)",
        ratio("scale.jetqueue_large", "scale.jetqueue_small", "cpu_us_per_job"),
        lambda x: x <= 1.15,
    ),
    Goal("5 worker RSS after large N / bare consumer", "<= 3x", "the issue", rss_ratio, lambda x: x <= 3.0),
    Goal("5 e2e jobs/s by worker processes", "report only", "", workers_scan, None),
]


def goals(figures: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for g in GOALS:
        v, text, valid = g.measure(figures)
        if not valid:
            verdict = "INVALID"
        elif v is None or g.ok is None:
            verdict = "-"
        else:
            verdict = "PASS" if g.ok(v) else "MISS"
        rows.append({"goal": g.name, "measured": text, "target": g.target, "source": g.source, "verdict": verdict})
    return rows


# ------------------------------------------------------------------ the table
def fmt(x: Any, spec: str = ",.0f") -> str:
    return "" if x is None else format(x, spec)


def table(r: dict[str, Any]) -> str:
    m, v = r["machine"], r["versions"]
    lines = [
        f"command: {r['command']}",
        f"machine: {m['nproc']} cpu ({m['cpu']}), load {m['loadavg_at_start']}, {m['platform']}",
        f"git {m['git_commit']} ({m['git_modified_files']} modified files under libs/ services/); "
        f"event loop: {r['event_loop']}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        f"{'figure (median of repeats)':<42}{'n':>9}{'per s':>10}{'CPU us/job':>11}"
        f"{'  producer/workers/broker':>26}{'busy (other max)':>18}  valid",
    ]
    figs = r["figures"]
    for key, f in figs.items():
        if key.startswith("latency."):
            continue
        label = LABELS.get(key) or (f"jetqueue e2e, {key.rsplit('_', 1)[1]} worker(s)" if "workers_" in key else key)
        parts = f.get("cpu_us_per_job_by_part", {})
        split = "/".join(fmt(parts.get(k), ".0f") or "-" for k in ("producer", "workers", "broker"))
        if key.startswith("http.single"):
            split = f"server {fmt(f.get('server_cpu_us_per_request'), '.0f')} us/req"
        elif key.startswith("http."):
            split = "server + nats-server"
        busy = f"{f['machine_busy_pct']:.0f}% ({f['machine_other_pct_max']:.0f}%)" if f.get("machine_busy_pct") else ""
        per_s = fmt(f.get("per_s")) if f["valid"] else f"INVALID {f['runs'] - f['valid_runs']}/{f['runs']}"
        if key.startswith("http.single"):
            per_s += " req"
        lines.append(
            f"{label:<42}{fmt(f.get('n')):>9}{per_s:>10}{fmt(f.get('cpu_us_per_job'), ',.1f'):>11}"
            f"{split:>26}{busy:>18}  {'yes' if f['valid'] else 'NO'}"
        )
    for key in ("latency.jetqueue", "latency.raw_push"):
        if key in figs:
            f = figs[key]
            lines.append(
                f"latency {f['system']}: p50 {f.get('p50_ms')} ms, p99 {f.get('p99_ms')} ms"
                f" at {f.get('achieved_rate')}/s"
                f"{'' if f['valid'] else '  INVALID'}"
            )
    lines += ["", f"{'goal':<46}{'measured':<70}{'target':<26}verdict"]
    for g in r["goals"]:
        lines.append(f"{g['goal']:<46}{g['measured']:<70}{g['target']:<26}{g['verdict']}")
    bad = {k: f["problems"] for k, f in figs.items() if f["problems"]}
    if bad:
        lines += ["", "problems found by the checks:"] + [f"  {k}: {p}" for k, p in bad.items()]
    return "\n".join(lines)
