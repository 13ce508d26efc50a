"""Per-file verdicts: the outcome of every rule on each file of a micro-batch, as CheckResults.

The failing rows of each rule over the whole micro-batch (from the GX run and the row masks)
are split by file; file-level rules (required columns, a missing share over a gate) are
decided here. The texts (observed values, samples) are those of the quality table and the
quarantine records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ecom_stream.config import Settings
from ecom_stream.contract.rules import Rule, rules_of
from ecom_stream.contract.schema import KEYS
from ecom_stream.quality.gx import split_by_file

if TYPE_CHECKING:
    from ecom_stream.quality.gx import _GxRun

__all__ = ["CheckResult", "FileValidation", "per_file"]

_SAMPLE_ROWS = 5
_EMPTY = np.empty(0, dtype=np.int64)
_Check = Rule


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one expectation on one file (or on one merge, for domain warnings)."""

    expectation: str
    column: str | None
    policy: str
    success: bool
    observed: str
    unexpected_count: int
    element_count: int
    unexpected_percent: float | None
    failing_rows: np.ndarray
    sample: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """Strict-JSON summary (failing rows are left out: the GX part lists them)."""
        return {
            "expectation": self.expectation,
            "column": self.column,
            "policy": self.policy,
            "success": bool(self.success),
            "observed": self.observed,
            "unexpected_count": int(self.unexpected_count),
            "element_count": int(self.element_count),
            "unexpected_percent": self.unexpected_percent,
            "sample": self.sample,
        }


@dataclass
class FileValidation:
    """All verdicts of one file of a micro-batch."""

    file_index: int
    element_count: int
    checks: list[CheckResult]
    entity: str = ""
    _gx: _GxRun | None = field(default=None, repr=False, compare=False)
    _gx_pieces: list[_GxRun] = field(default_factory=list, repr=False, compare=False)

    @property
    def quarantine_reasons(self) -> list[str]:
        """Observed texts of the failed quarantine-batch checks (empty: the file may merge)."""
        return [c.observed for c in self.checks if not c.success and c.policy == "quarantine-batch"]

    @property
    def rejected(self) -> dict[int, str]:
        """iloc position in ``typed`` -> the first failed drop-row expectation of that row."""
        out: dict[int, str] = {}
        for c in self.checks:
            if c.policy == "drop-row" and len(c.failing_rows):
                for pos in c.failing_rows.tolist():
                    out.setdefault(pos, c.expectation)
        return out

    def to_json(self) -> dict[str, Any]:
        """The GX result restricted to this file, plus our checks; strict JSON (no NaN)."""
        rejected = self.rejected
        out: dict[str, Any] = {
            "entity": self.entity,
            "file_index": self.file_index,
            "element_count": self.element_count,
            "success": not self.quarantine_reasons,
            "quarantine_reasons": self.quarantine_reasons,
            "rows_rejected": len(rejected),
            "checks": [c.to_json() for c in self.checks],
        }
        out["great_expectations"] = (
            {"pieces": [g.file_json(0) for g in self._gx_pieces]}
            if self._gx_pieces
            else self._gx.file_json(self.file_index)
            if self._gx is not None
            else {"skipped": "no rows in the micro-batch: Great Expectations was not run"}
        )
        return out


def _effective_policy(check: _Check, policies: Mapping[str, str]) -> str:
    policy = policies[check.name]
    if check.kind != "row" and policy == "drop-row":
        return "warn"  # a file-level check has no row to drop
    return policy


def _pct(count: int, n: int, decimals: int = 1) -> str:
    return f"{100.0 * count / n:.{decimals}f}%" if n else "n/a"


def _limit_text(gate: float) -> str:
    return f"{gate * 100:g}%"


def _gate_fails(count: int, n: int, gate: float) -> bool:
    """count / n > gate, in exact rational arithmetic (10.0% of 1,000 rows passes a 0.10 gate)."""
    g = Fraction(repr(float(gate)))
    return count * g.denominator > g.numerator * n


def per_file(
    entity: str,
    typed: pd.DataFrame,
    files: np.ndarray,
    n_files: int,
    present_columns: Sequence[set[str]],
    failing: Mapping[str, np.ndarray],
    policies: Mapping[str, str],
    settings: Settings,
    gx_run: _GxRun | None,
    counts: np.ndarray | None = None,
) -> list[FileValidation]:
    """Split the micro-batch's failing positions by file into one FileValidation per file
    (``counts``: rows per file, when ``typed`` holds only some of them; see FileChecks)."""
    if counts is None:
        counts = np.bincount(files, minlength=n_files) if n_files else np.zeros(0, np.int64)
    split = {name: split_by_file(pos, files, n_files) for name, pos in failing.items()}
    sampler = _Sampler(entity, typed)
    gate = settings.price_missing_gate if entity == "products" else settings.total_missing_gate
    rules = rules_of(entity, settings.extra_rules)
    reports: list[FileValidation] = []
    for i in range(n_files):
        n = int(counts[i])
        checks: list[CheckResult] = []
        for check in rules:
            policy = _effective_policy(check, policies)
            note = ""
            if policy != policies[check.name]:
                note = (f" (policy {policies[check.name]} cannot apply to a file-level check: "
                        "treated as warn)")
            if check.kind == "required_columns":
                checks.append(_required_check(entity, check, policy, present_columns[i], n, note))
                continue
            pos = split[check.name][i]
            checks.append(_check_result(check, policy, note, pos, n, gate, sampler, settings))
        reports.append(FileValidation(i, n, checks, entity=entity, _gx=gx_run))
    return reports


def _check_result(
    check: _Check, policy: str, note: str, pos: np.ndarray, n: int, gate: float,
    sampler: _Sampler, settings: Settings,
) -> CheckResult:
    """The verdict of a row rule or a missing-share gate on one file's ``n`` rows, ``pos``
    of them failing."""
    k = len(pos)
    if check.kind == "missing_share":
        ok = not _gate_fails(k, n, gate)
        observed = _gate_text(check, sampler, pos, n, gate, ok)
        rows = _EMPTY
    else:
        ok = k == 0
        what = check.what.format(settings=settings)
        observed = f"{what}: {k} of {n} rows ({_pct(k, n)})"
        if k:
            observed += f"; first row_no: {sampler.row_nos(pos)}"
        rows = pos
    return CheckResult(
        expectation=check.name,
        column=check.column,
        policy=policy,
        success=ok,
        observed=observed + note,
        unexpected_count=k,
        element_count=n,
        unexpected_percent=100.0 * k / n if n else None,
        failing_rows=rows,
        sample=sampler.sample(check, pos) if k else [],
    )


def _gate_text(
    check: _Check, sampler: _Sampler, pos: np.ndarray, n: int, gate: float, ok: bool
) -> str:
    """E.g. 'price missing or unparseable in 14.0% of 500 rows (70: 60 missing, 10
    unparseable), limit 10%'; more decimals when 1 decimal would hide a failure."""
    k = len(pos)
    pct = _pct(k, n)
    if not ok and n and round(100.0 * k / n, 1) <= gate * 100:
        pct = _pct(k, n, 4)
    detail = f" ({k}: {sampler.missing_breakdown(check, pos)})" if k else ""
    return f"{check.what} in {pct} of {n} rows{detail}, limit {_limit_text(gate)}"


def _required_check(
    entity: str, check: _Check, policy: str, present: set[str], n: int, note: str
) -> CheckResult:
    """Required fields present in the file's records (unexpected_count = missing columns);
    a file without records has nothing to check."""
    required = check.required
    missing = [c for c in required if c not in present] if n else []
    if missing:
        observed = f"missing required column(s): {', '.join(missing)}"
    elif n:
        observed = f"all required columns present: {', '.join(required)}"
    else:
        observed = "no records: no columns to check"
    sample = [{"missing_columns": missing, "present_columns": sorted(present)}] if missing else []
    return CheckResult(
        expectation=check.name, column=None, policy=policy, success=not missing,
        observed=observed + note, unexpected_count=len(missing), element_count=n,
        unexpected_percent=None, failing_rows=_EMPTY, sample=sample,
    )


class _Sampler:
    """Cheap access to a few rows of ``typed`` for samples and observed texts."""

    def __init__(self, entity: str, typed: pd.DataFrame) -> None:
        self.typed = typed
        self.key = KEYS[entity]
        self._arrays: dict[str, Any] = {}

    def _col(self, name: str) -> Any:
        if name not in self._arrays:
            self._arrays[name] = self.typed[name].array
        return self._arrays[name]

    def row_nos(self, pos: np.ndarray) -> str:
        first = ", ".join(str(int(v)) for v in self._col("_row_no")[pos[:_SAMPLE_ROWS]])
        return first + (", ..." if len(pos) > _SAMPLE_ROWS else "")

    def sample(self, check: _Check, pos: np.ndarray) -> list[dict[str, Any]]:
        cols = ["_row_no", self.key, *(c for c in check.sample_columns if c != self.key)]
        head = pos[:_SAMPLE_ROWS]
        values = {c: list(self._col(c)[head]) for c in cols}
        return [{c: _json_value(values[c][j]) for c in cols} for j in range(len(head))]

    def missing_breakdown(self, check: _Check, pos: np.ndarray) -> str:
        raw_missing = np.asarray(self._col(f"{check.column}_raw_missing"), dtype=bool)[pos]
        absent = int(raw_missing.sum())
        return f"{absent} missing, {len(pos) - absent} unparseable"


def _json_value(v: Any) -> Any:
    """A strict-JSON value (NaN/NaT/NA -> None, timestamps -> ISO text, numpy -> Python)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, str):
        return v
    if isinstance(v, (pd.Timestamp, datetime, date)):
        return None if pd.isna(v) else v.isoformat()
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else pd.Timestamp(v).isoformat()
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    return str(v)
