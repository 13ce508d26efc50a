"""``anomalies`` and ``anomaly_recompute_range``: rolling z-scores of daily revenue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from ecom_stream.transform.gold.common import (
    SAFE,
    GoldConsistencyError,
    day_date,
    day_dates,
    day_number,
    day_numbers,
    require_columns,
)


# -- anomalies -------------------------------------------------------------------------------
def category_first_dates(daily: pd.DataFrame) -> dict[str, date]:
    """Each category's first ``order_date`` in a (whole) daily revenue table."""
    if daily.empty:
        return {}
    days = day_numbers(daily["order_date"])
    cats = daily["category"].astype(str).to_numpy()
    firsts = pd.Series(days).groupby(cats).min()
    return {str(c): day_date(d) for c, d in firsts.items()}


def newest_date(daily: pd.DataFrame) -> date | None:
    """The newest ``order_date`` of a (whole) daily revenue table, None when empty."""
    return None if daily.empty else day_date(int(day_numbers(daily["order_date"]).max()))


def anomalies(
    daily: pd.DataFrame,
    *,
    window: int = 30,
    min_history: int = 7,
    threshold: float = 2.0,
    start: date | None = None,
    end: date | None = None,
    first_dates: Mapping[str, date] | None = None,
    newest: date | None = None,
) -> pd.DataFrame:
    """Anomaly scores (``ANOMALIES_SCHEMA`` columns) of the days in [start, end] (None: open).

    Each category's series runs over calendar days from its first date to the newest date
    of the whole table (days without a row are 0). A day is scored against the mean and
    sample standard deviation of the ``window`` days before it (never itself), once at least
    ``min_history`` of them are in the series; it is an anomaly when
    |revenue - mean| > threshold x std. Unscored days and days with std 0 have null z-scores
    and are not flagged.

    ``daily`` may be the whole daily revenue table, or a slice of it holding at least every
    row with order_date in [start - window, end]; a slice needs ``first_dates`` (every
    category's first date in the whole table) and ``newest`` (its newest date), which are
    otherwise taken from ``daily``. A day's values depend only on its own window, so they are
    bit-identical whichever valid slice they are computed from.
    """
    if window < 1 or min_history < 1:
        raise ValueError("need window >= 1 and min_history >= 1")
    if min_history > window:
        raise ValueError("min_history > window: no day could ever be scored")
    require_columns(daily, ("order_date", "category"), "daily")
    days = day_numbers(daily["order_date"])
    cat_col = daily["category"].astype(str).to_numpy()
    if "revenue_cents" in daily.columns:
        cents = daily["revenue_cents"].to_numpy(dtype=np.int64)
    else:
        cents = np.rint(daily["revenue"].to_numpy(dtype=np.float64) * 100).astype(np.int64)
    span = _score_span(days, cat_col, first_dates, newest, start, end)
    if span is None:
        return _empty_anomalies()
    days, rows, cents = _window_rows(days, cat_col, cents, span, window)
    scorer = _Scorer(days, rows, cents, span.first, window, min_history, threshold)
    parts = [scorer.score(a, b) for a, b in _live_spans(days, window, span.lo, span.hi)]
    return _anomaly_rows(parts, span.cats)


@dataclass(frozen=True)
class _Span:
    """The categories (sorted) with their first days, the newest day, and the days lo..hi
    to score (day numbers)."""

    cats: list[str]
    first: np.ndarray
    top: int
    lo: int
    hi: int


def _score_span(
    days: np.ndarray,
    cat_col: np.ndarray,
    first_dates: Mapping[str, date] | None,
    newest: date | None,
    start: date | None,
    end: date | None,
) -> _Span | None:
    """What ``anomalies`` scores (None: nothing); first dates and the newest day are taken
    from the rows when not given."""
    firsts = dict(first_dates) if first_dates is not None else _first_days(days, cat_col)
    firsts = {str(c): d if isinstance(d, int) else day_number(d) for c, d in firsts.items()}
    if newest is not None:
        top = day_number(newest)
    elif len(days):
        top = int(days.max())
    else:
        return None
    unknown = set(np.unique(cat_col).tolist()) - set(firsts)
    if unknown:
        raise ValueError(f"first_dates lacks categories {sorted(unknown)}")
    if not firsts:
        return None
    cats = sorted(firsts)
    first = np.array([firsts[c] for c in cats], dtype=np.int64)
    lo = int(first.min()) if start is None else max(int(first.min()), day_number(start))
    hi = top if end is None else min(top, day_number(end))
    return _Span(cats, first, top, lo, hi) if lo <= hi else None


def _window_rows(
    days: np.ndarray, cat_col: np.ndarray, cents: np.ndarray, span: _Span, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days, category codes and cents of the rows that can reach the scored days, sorted by
    day (a slice's cost stays the slice's); raises on rows outside the series, duplicate
    rows and windows whose sum could leave int64."""
    lo, hi = span.lo, span.hi
    rows = pd.Categorical(cat_col, categories=span.cats).codes.astype(np.int64)
    if len(days) and ((days < span.first[rows]) | (days > span.top)).any():
        raise ValueError("daily has rows before their category's first date or after newest")
    near = (days >= lo - window) & (days <= hi)
    days, rows, cents = days[near], rows[near], cents[near]
    if len(np.unique(rows * (hi + 1 - (lo - window)) + (days - (lo - window)))) != len(days):
        raise ValueError("daily has duplicate (order_date, category) rows")
    if len(cents) and float(np.abs(cents).max()) * window >= SAFE:
        worst = int(np.argmax(np.abs(cents)))
        raise GoldConsistencyError(
            f"daily revenue of {day_date(days[worst])} ({int(cents[worst])} cents) is too large "
            f"to sum over a {window}-day window in int64; gold refuses to wrap around"
        )
    order = np.argsort(days, kind="stable")
    return days[order], rows[order], cents[order]


def _anomaly_rows(
    parts: list[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]], cats: list[str]
) -> pd.DataFrame:
    """The anomaly table of the scored runs (``_Scorer.score`` results), in run order."""
    if not parts:
        return _empty_anomalies()
    di = np.concatenate([p[0] for p in parts])
    ci = np.concatenate([p[1] for p in parts])
    stats = [np.concatenate([p[2][k] for p in parts]) for k in range(5)]
    return pd.DataFrame(
        {
            "order_date": day_dates(di),
            "category": pd.Series(np.array(cats, dtype=object)[ci], dtype=str),
            "revenue": stats[0] / 100,
            "rolling_mean": stats[1] / 100,
            "rolling_std": stats[2] / 100,
            "z_score": stats[3],
            "is_anomaly": stats[4].astype(bool),
        }
    )


def _live_spans(days: np.ndarray, window: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The runs of days in [lo, hi] that have a day holding data (``days``, sorted) among
    themselves and the ``window`` days before them.

    Any other day is 0 and so is its whole window: it would only ever be stored as an
    unflagged zero row, so it is left out. This bounds gold by the days that hold data
    (at most ``window + 1`` rows per category per such day), however far apart two dates
    are (an order of year 1 and one of year 9999 in silver).
    """
    d = np.unique(days)
    if not len(d):
        return []
    breaks = np.flatnonzero(d[1:] > d[:-1] + window + 1) + 1
    starts = d[np.r_[0, breaks]]
    ends = d[np.r_[breaks - 1, len(d) - 1]] + window
    return [
        (max(int(a), lo), min(int(b), hi))
        for a, b in zip(starts, ends, strict=True)
        if max(int(a), lo) <= min(int(b), hi)
    ]


@dataclass(frozen=True)
class _Scorer:
    """Scores runs of days of every category (rows sorted by day)."""

    days: np.ndarray
    rows: np.ndarray
    cents: np.ndarray
    first: np.ndarray
    window: int
    min_history: int
    threshold: float

    def score(
        self, lo: int, hi: int
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        """Days, category codes and (revenue, mean, std, z, flag) of days lo..hi, day-major."""
        window, first = self.window, self.first
        # Dense grid: categories x days [g0 - window, hi]; column j + window is day g0 + j.
        g0 = max(int(first.min()), lo - window)
        n = hi - g0 + 1
        grid = np.zeros((len(first), n + window), np.int64)
        i, j = np.searchsorted(self.days, [g0, hi + 1])
        flat = self.rows[i:j] * grid.shape[1] + (self.days[i:j] - g0 + window)
        grid.ravel()[flat] = self.cents[i:j]
        col_days = np.arange(g0 - window, hi + 1, dtype=np.int64)
        valid = col_days[None, :] >= first[:, None]

        # Windows of the output days only: days lo..hi are grid columns lo-g0+window ...
        j0 = lo - g0
        win = sliding_window_view(grid, window, axis=1)[:, j0 : j0 + hi - lo + 1]
        win_ok = sliding_window_view(valid, window, axis=1)[:, j0 : j0 + hi - lo + 1]
        x = grid[:, window + j0 : window + j0 + hi - lo + 1]
        exists = valid[:, window + j0 : window + j0 + hi - lo + 1]
        count = win_ok.sum(axis=-1)
        sums = np.where(win_ok, win, 0).sum(axis=-1)  # exact int64, order-free
        scored = exists & (count >= self.min_history)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(scored, sums / np.maximum(count, 1), np.nan)
            # Sum of squared deviations in a fixed order (window position 0..window-1): the
            # result depends only on the day's own window, never on where the grid starts.
            acc = np.zeros(mean.shape, np.float64)
            for k in range(window):
                dev = np.where(win_ok[..., k], win[..., k] - mean, 0.0)
                acc += dev * dev
            std = np.where(
                scored & (count >= 2), np.sqrt(acc / np.maximum(count - 1, 1)), np.nan
            )
            diff = x - mean
            usable = scored & (std > 0)
            z = np.where(usable, diff / np.where(usable, std, 1.0), np.nan)
            flag = usable & (np.abs(diff) > self.threshold * np.where(usable, std, 0.0))

        di, ci = np.nonzero(exists.T)  # day-major: sorted by order_date, then category name
        return lo + di, ci, (x[ci, di], mean[ci, di], std[ci, di], z[ci, di], flag[ci, di])


def _first_days(days: np.ndarray, cats: np.ndarray) -> dict[str, int]:
    if len(days) == 0:
        return {}
    firsts = pd.Series(days).groupby(cats).min()
    return {str(c): int(d) for c, d in firsts.items()}


def _empty_anomalies() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_date": pd.Series([], dtype=object),
            "category": pd.Series([], dtype=str),
            "revenue": pd.Series([], dtype=np.float64),
            "rolling_mean": pd.Series([], dtype=np.float64),
            "rolling_std": pd.Series([], dtype=np.float64),
            "z_score": pd.Series([], dtype=np.float64),
            "is_anomaly": pd.Series([], dtype=bool),
        }
    )



@dataclass(frozen=True)
class AnomalyRange:
    """What an incremental anomaly refresh must rewrite.

    Replace every stored anomaly row with ``start <= order_date <= delete_until`` by
    ``anomalies(new_daily, start=start, end=end, ...)``. ``end`` is never after the new newest
    date and may be before ``start`` (nothing to score, only rows to delete);
    ``delete_until >= end`` also covers rows that must disappear (the newest date moved back,
    a category vanished).
    """

    start: date
    end: date
    delete_until: date

    @property
    def delete_after(self) -> date | None:
        """Rows after this day (up to ``delete_until``) are deleted, not rescored."""
        return self.end if self.delete_until > self.end else None


def anomaly_recompute_range(
    affected: Iterable[date],
    old_newest: date | None,
    new_newest: date | None,
    old_first: Mapping[str, date],
    new_first: Mapping[str, date],
    window: int,
) -> AnomalyRange | None:
    """The smallest single range of days whose anomaly rows can differ, or None.

    ``affected``: the days whose daily revenue rows were recomputed; ``old_*`` / ``new_*``:
    newest date and per-category first dates of daily revenue before / after. Why each part:

    * a changed day ``a`` is the scored value of ``a`` and in the window of the ``window``
      days after it: [a, a + window];
    * a category's series starts at its first date: if it moved, the rows between old and
      new first date appear or disappear, and the history (count of prior days) of the
      ``window`` days after the later of the two changes: [min, max + window - 1];
    * a new category has rows (zeros included) up to the newest date: [first, new_newest];
      a vanished one loses all its rows: [first, old_newest];
    * when the newest date moves forward every category gains the days
      old_newest + 1 .. new_newest (zero days, not in ``affected``); when it moves back, the
      rows of new_newest + 1 .. old_newest must be deleted (``delete_until``).

    Rows after the newer of the two newest dates never exist, so everything is clipped there.
    """
    spans: list[tuple[int, int]] = [(day_number(a), day_number(a) + window) for a in affected]
    for cat in set(old_first) | set(new_first):
        o, n = old_first.get(cat), new_first.get(cat)
        if o == n:
            continue
        if o is None and n is not None:
            top = new_newest if new_newest is not None else n
            spans.append((day_number(n), day_number(top)))
        elif n is None and o is not None:
            top = old_newest if old_newest is not None else o
            spans.append((day_number(o), day_number(top)))
        elif o is not None and n is not None:
            a, b = sorted((day_number(o), day_number(n)))
            spans.append((a, b + window - 1))
    old_top = day_number(old_newest) if old_newest is not None else None
    new_top = day_number(new_newest) if new_newest is not None else None
    if new_top is not None and (old_top is None or new_top > old_top):
        spans.append(((old_top + 1) if old_top is not None else new_top, new_top))
    if old_top is not None and (new_top is None or new_top < old_top):
        spans.append(((new_top + 1) if new_top is not None else old_top, old_top))
    tops = [t for t in (old_top, new_top) if t is not None]
    if not spans or not tops:
        return None
    start = min(s for s, _ in spans)
    until = min(max(e for _, e in spans), max(tops))
    if start > until:
        return None
    end = min(until, new_top) if new_top is not None else start - 1
    return AnomalyRange(start=day_date(start), end=day_date(end), delete_until=day_date(until))
