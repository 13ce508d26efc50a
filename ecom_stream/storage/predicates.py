"""SQL predicates that let Delta prune files: key ranges and month partitions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

__all__ = ["key_ranges", "key_ranges_predicate", "months_literal", "ranges_predicate"]

MAX_KEY_RANGES = 16


def key_ranges(keys: Iterable[int], max_ranges: int = MAX_KEY_RANGES) -> list[tuple[int, int]]:
    """At most ``max_ranges`` inclusive ranges covering ``keys`` (the widest gaps are cut)."""
    ordered = sorted(set(int(k) for k in keys))
    if not ordered:
        return []
    gaps = sorted(range(1, len(ordered)), key=lambda i: ordered[i] - ordered[i - 1], reverse=True)
    cuts = sorted(gaps[: max_ranges - 1])
    bounds, start = [], 0
    for cut in [*cuts, len(ordered)]:
        bounds.append((ordered[start], ordered[cut - 1]))
        start = cut
    return bounds


def ranges_predicate(column: str, bounds: Sequence[tuple[int, int]]) -> str:
    """``col BETWEEN a AND b OR ...`` (``false`` for no range)."""
    if not bounds:
        return "false"
    return " OR ".join(f"({column} BETWEEN {lo} AND {hi})" for lo, hi in bounds)


def key_ranges_predicate(column: str, keys: Sequence[int], max_ranges: int = MAX_KEY_RANGES) -> str:
    """``col BETWEEN a AND b OR ...`` covering ``keys`` with at most ``max_ranges`` ranges.

    Delta prunes files by min/max statistics with this; a long ``IN`` list is not pruned.
    """
    return ranges_predicate(column, key_ranges(keys, max_ranges))


def months_literal(dates: Iterable[date]) -> str:
    """``'2026-01', '2026-02'``: the month partitions holding ``dates``."""
    # Not strftime: glibc writes year 1 as "1", silver's partitions as "0001".
    return ", ".join(f"'{m}'" for m in sorted({f"{d.year:04d}-{d.month:02d}" for d in dates}))
