"""``ecom-stream bench``: what a runner did, and the table and JSON reporting it."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("deltalake", "pandas", "pyarrow", "great_expectations")
REPO = Path(__file__).resolve().parents[2]


# -- results ------------------------------------------------------------------------------
@dataclass
class RunResult:
    """What one runner did; ``finished`` is False when it was stopped or failed."""

    name: str
    finished: bool = False
    files_done: int = 0
    files_total: int = 0
    orders: int = 0
    total_s: float | None = None
    work_s: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def status(self, timeout: float) -> str:
        if self.finished:
            return "ok"
        if self.error:
            return f"failed: {self.error}"
        return f"did not finish in {timeout:g} s ({self.files_done} files)"

    def to_json(self, timeout: float) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status(timeout)
        data["orders_per_s"] = _rate(self.orders, self.total_s)
        data["latency"] = latency_stats(self.latencies_ms) if self.name != "backfill" else None
        return data


def latency_stats(values: Sequence[float]) -> dict[str, float | None]:
    """p50 / p95 / max in ms, and growth: mean of the last tenth over mean of the first tenth."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None, "growth": None}
    ordered = sorted(values)
    tenth = max(1, len(values) // 10)
    first = sum(values[:tenth]) / tenth
    last = sum(values[-tenth:]) / tenth
    return {
        "p50_ms": _quantile(ordered, 0.50),
        "p95_ms": _quantile(ordered, 0.95),
        "max_ms": ordered[-1],
        "growth": last / first if first > 0 else None,
    }


def _quantile(ordered: Sequence[float], q: float) -> float:
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _rate(orders: int, seconds: float | None) -> float | None:
    return orders / seconds if seconds and orders else None


# -- the report ---------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU count, platform, Python and the versions of the libraries that matter."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None


def vs_backfill(result: RunResult, backfill: RunResult | None) -> tuple[str, float | None]:
    """The runner's time against backfill's: the table's text and the ratio (None: n/a)."""
    if result.name in ("backfill", "watch", "dashboard") or not backfill or not backfill.finished:
        return ("n/a (paced)" if result.name == "watch" else "n/a"), None
    if not result.total_s or not backfill.total_s:
        return "n/a", None
    ratio = result.total_s / backfill.total_s
    if result.name == "floor":
        # The floor is faster: say how far backfill is above it (the target is within 5x).
        return f"backfill/floor = {1 / ratio:.1f}x", ratio
    sign = "=" if result.finished else ">"
    return f"{result.name}/backfill {sign} {ratio:.1f}x", ratio


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or "n/a" for None."""
    return "n/a" if value is None else format(value, spec)


def render_table(results: list[RunResult], timeout: float) -> list[str]:
    """The comparison table, one runner a line."""
    backfill = next((r for r in results if r.name == "backfill"), None)
    head = (
        f"{'runner':<9}{'files':>11}{'orders':>10}{'total s':>9}{'orders/s':>10}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'growth':>8}{'peak MB':>9}  vs backfill"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        stats = (
            latency_stats(r.latencies_ms)
            if r.name != "backfill"
            else dict.fromkeys(("p50_ms", "p95_ms", "max_ms", "growth"))
        )
        lines.append(
            f"{r.name:<9}{f'{r.files_done}/{r.files_total}':>11}{r.orders:>10,}"
            f"{fmt(r.total_s, '.1f'):>9}{fmt(_rate(r.orders, r.total_s), ',.0f'):>10}"
            f"{fmt(stats['p50_ms'], '.0f'):>9}{fmt(stats['p95_ms'], '.0f'):>9}"
            f"{fmt(stats['max_ms'], '.0f'):>9}{fmt(stats['growth'], '.2f'):>8}"
            f"{fmt(r.peak_rss_mb, '.0f'):>9}  {vs_backfill(r, backfill)[0]}"
        )
    for r in results:
        if r.status(timeout) != "ok" or r.notes:
            lines.append(f"{r.name}: {'; '.join([r.status(timeout), *r.notes])}")
    return lines


def write_json(target: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, target)


