"""The frame Great Expectations validates: the typed view's columns each GX part reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.contract.rules import Rule, rules_of
from ecom_stream.transform import clean

__all__ = ["POS", "gx_frame"]

POS = "_pos"
"""Name of the GX frame's index: the iloc position of the row in ``typed``."""


def gx_frame(
    entity: str, typed: pd.DataFrame, extra: Sequence[Rule], masks: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """The columns GX checks (plus derived ones), indexed by iloc position named ``_pos``;
    ``masks``: the failing rows of the rules whose part checks their mask (kind ``passes``)."""
    cols: dict[str, Any] = {}
    for rule in rules_of(entity, extra):
        for part in rule.expectations:
            for name, source, kind in part.columns:
                if name not in cols:
                    cols[name] = (~masks[source] if kind == "passes"
                                  else _frame_column(typed[source], kind))
    return pd.DataFrame(cols, index=pd.RangeIndex(len(typed), name=POS))


def _frame_column(values: pd.Series, kind: str) -> Any:
    """One typed column as GX reads it (see ``contract.rules.FRAME_KINDS``)."""
    if kind == "float":
        return values.to_numpy(dtype=np.float64)
    if kind == "bool":
        return values.to_numpy(dtype=bool)
    if kind == "naive_utc":
        return _naive_utc(values)
    if kind == "title":
        return _normalise(values, clean.title_case)
    if kind == "lower":
        return _normalise(values, _lower)
    return values.array


def _lower(text: str) -> str:
    return text.strip().lower()


def _naive_utc(values: pd.Series) -> np.ndarray:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[us]")


def _normalise(values: pd.Series, fn: Callable[[str], str]) -> np.ndarray:
    """Apply ``fn`` to every distinct non-null string (few distinct values: cheap); else None."""
    codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=True)
    cleaned = [fn(u) if isinstance(u, str) else None for u in uniques]
    mapped = np.array([*cleaned, None], dtype=object)
    return mapped[codes]  # code -1 (null) picks the trailing None
