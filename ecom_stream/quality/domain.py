"""Domain warnings at merge time (no GX): incoming rows compared with the stored silver rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.config import Settings
from ecom_stream.contract.schema import KEYS, STATUS_RANK
from ecom_stream.quality.verdicts import _EMPTY, _SAMPLE_ROWS, CheckResult, _json_value, _pct

__all__ = ["combine_domain_warnings", "domain_warnings"]


def domain_warnings(
    entity: str, incoming: pd.DataFrame, stored: pd.DataFrame, settings: Settings
) -> list[CheckResult]:
    """Warnings comparing the winning incoming rows with the stored silver rows of the same keys:
    an order status moving backwards, or a product price jumping by more than the factor."""
    key = KEYS[entity]
    incoming = incoming.reset_index(drop=True)
    old = stored.drop_duplicates(key, keep="last").set_index(key) if len(stored) else None
    if entity == "orders":
        column, name = "status", "orders_status_backwards"
    elif entity == "products":
        column, name = "price", "products_price_jump"
    else:
        raise ValueError(f"unknown entity {entity!r}")
    if old is None or incoming.empty:
        matched = np.zeros(len(incoming), dtype=bool)
        old_vals = pd.Series([None] * len(incoming), dtype=object)
    else:
        keys = incoming[key]
        matched = keys.isin(old.index).to_numpy()
        old_vals = old[column].reindex(keys.to_numpy()).reset_index(drop=True)
    new_vals = incoming[column] if len(incoming) else pd.Series([], dtype=object)
    if entity == "orders":
        new_rank = new_vals.map(STATUS_RANK).astype("float64").to_numpy()
        old_rank = old_vals.map(STATUS_RANK).astype("float64").to_numpy()
        bad = matched & (new_rank < old_rank)  # NaN (status outside the progression) -> False
        if bad.any() and old is not None and "_version_ts" in incoming and "_version_ts" in old:
            old_ts = old["_version_ts"].reindex(incoming[key].to_numpy()).to_numpy()
            bad &= incoming["_version_ts"].to_numpy() > old_ts
        what = "status moved backwards (pending < confirmed < shipped < delivered)"
        change = "{old} -> {new}"
    else:
        factor = settings.price_change_factor
        new_p = pd.to_numeric(new_vals, errors="coerce").astype("float64").to_numpy()
        old_p = pd.to_numeric(old_vals, errors="coerce").astype("float64").to_numpy()
        both = matched & (new_p > 0) & (old_p > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            bad = both & ((new_p / old_p > factor) | (old_p / new_p > factor))
        what = f"price changed by more than {factor:g}x"
        change = "{old:.2f} -> {new:.2f}"
    rows = np.flatnonzero(bad).astype(np.int64)
    n = int(matched.sum())
    # The examples are the smallest keys, not the first rows: row order depends on how files
    # were grouped into micro-batches, and the warning must not.
    by_key = rows[np.argsort(incoming[key].to_numpy()[rows], kind="stable")]
    sample = [
        {key: _json_value(incoming[key].iloc[p]), f"old_{column}": _json_value(old_vals.iloc[p]),
         f"new_{column}": _json_value(new_vals.iloc[p])}
        for p in by_key[:_SAMPLE_ROWS]
    ]
    return [_domain_result(entity, name, column, what, change, n, rows, sample)]


def combine_domain_warnings(
    entity: str, parts: Sequence[CheckResult], settings: Settings
) -> CheckResult:
    """One domain warning from those of the pieces of one file (each piece's keys are its
    own, compared with the state before the file): counts add up, samples are the smallest keys."""
    if entity == "orders":
        what = "status moved backwards (pending < confirmed < shipped < delivered)"
        change = "{old} -> {new}"
    else:
        what = f"price changed by more than {settings.price_change_factor:g}x"
        change = "{old:.2f} -> {new:.2f}"
    n = sum(int(c.element_count) for c in parts)
    k = sum(int(c.unexpected_count) for c in parts)
    key = KEYS[entity]
    sample = sorted((s for c in parts for s in c.sample), key=lambda s: s[key])[:_SAMPLE_ROWS]
    if k == 0:
        # Worded as the pipeline words a file without a finding.
        return dataclasses.replace(
            parts[0], success=True, unexpected_count=0, element_count=n,
            unexpected_percent=0.0 if n else None, failing_rows=_EMPTY, sample=[],
            observed=f"no finding in {n} updated rows",
        )
    return _domain_result(
        entity, parts[0].expectation, parts[0].column, what, change, n,
        np.zeros(k, np.int64), sample,
    )


def _domain_result(
    entity: str, name: str, column: str | None, what: str, change: str, n: int,
    rows: np.ndarray, sample: list[dict[str, Any]],
) -> CheckResult:
    key = KEYS[entity]
    k = len(rows)
    observed = f"{what}: {k} of {n} updated {entity} ({_pct(k, n)})"
    if k:
        observed += "; e.g. " + ", ".join(
            f"{key} {s[key]}: " + change.format(old=s[f"old_{column}"], new=s[f"new_{column}"])
            for s in sample[:3]
        )
    return CheckResult(
        expectation=name, column=column, policy="warn", success=k == 0, observed=observed,
        unexpected_count=k, element_count=n, unexpected_percent=100.0 * k / n if n else None,
        failing_rows=rows, sample=sample,
    )
