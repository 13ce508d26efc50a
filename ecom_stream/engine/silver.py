"""The steps a micro-batch of whole files and a file merged in pieces share: why rows are
rejected, which rows win over silver (and their domain warnings), and the silver merges; and
``MergeParts``, the parts both merges work with."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.config import Settings
from ecom_stream.engine import refresh
from ecom_stream.engine.commit import Commits
from ecom_stream.engine.quarantine import Quarantine
from ecom_stream.engine.refresh import AFFECTED_KEY, GoldRefresher
from ecom_stream.engine.winners import file_steps, file_warnings
from ecom_stream.storage.lake import SILVER, Lake, months_literal
from ecom_stream.transform import clean

__all__ = ["MergeParts", "Silver", "failed_rules", "reject_reasons"]


def reject_reasons(
    entity: str, typed: pd.DataFrame, rejected: Mapping[int, str], settings: Settings
) -> np.ndarray:
    """Per row, why it is rejected (None: accepted): the validator's row verdicts
    (``rejected``, by position), then the row rules whose policy is not "warn"."""
    reason = np.full(len(typed), None, dtype=object)
    for pos, why in rejected.items():
        reason[pos] = why
    for name, mask in clean.row_rules(entity, typed).items():
        if settings.policies.get(name) != "warn":
            reason[(reason == None) & mask] = name  # noqa: E711
    return reason


def failed_rules(report: Any, reasons: np.ndarray) -> list[str]:
    """The expectations and row rules a file failed, whatever their policy: its report's
    failed checks and its rows' reject reasons (``reasons``, None: accepted)."""
    names = {c.expectation for c in report.checks if not c.success}
    names.update(r for r in reasons.tolist() if r is not None)
    return sorted(names)


class Silver:
    """Decides which rows win over silver and merges them (orders with their lines)."""

    def __init__(self, lake: Lake, settings: Settings, side: ThreadPoolExecutor) -> None:
        self.lake = lake
        self.settings = settings
        self._side = side

    def changes(
        self, entity: str, key: str, typed_ok: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[int, Any]]]:
        """The rows that win over silver, the stored versions they replace, and the domain
        warnings of the change as (file index, CheckResult)."""
        if typed_ok.empty:
            return pd.DataFrame(), pd.DataFrame(), []
        cleaned = (clean.clean_products if entity == "products" else clean.clean_orders)(typed_ok)
        cleaned["_file"] = typed_ok["_file"].to_numpy()
        batch = clean.newest_per_key(cleaned, key)
        stored = self.lake.queries.lookup(entity, batch[key].tolist())
        winners = clean.newer_than_stored(batch, stored, key)
        if winners.empty:
            # Nothing beats silver: no file's rows won at their turn either.
            return winners, stored, []
        stored_w = stored[stored[key].isin(winners[key])]
        steps, before = file_steps(cleaned, winners, stored, key)
        return winners, stored_w, file_warnings(entity, key, steps, before, self.settings)

    def merge(self, entity: str, winners: pd.DataFrame, stored: pd.DataFrame) -> None:
        """Merge the winning rows into silver (``stored``: the versions they replace)."""
        if winners.empty:
            return
        if entity == "orders":
            self._merge_orders(winners, stored)
        else:
            self._merge_products(winners, stored)

    def _merge_orders(self, winners: pd.DataFrame, stored: pd.DataFrame) -> None:
        old_dates = set(stored["order_date"])
        new_dates = set(winners["order_date"])
        affected = refresh.affected_dates_for_orders(
            winners, stored, self.settings.excluded_statuses
        )
        meta = {AFFECTED_KEY: json.dumps(sorted(d.isoformat() for d in affected))}
        lines = clean.order_lines(winners)
        deletes = clean.removed_lines(winners, stored)
        dates = old_dates | new_dates
        # The two merges touch different tables and spend their time in Delta's native code
        # (the GIL is released): running them side by side uses both cores. They are two
        # commits, so one can land without the other (disk full, a kill): the marker names
        # the orders involved, and refresh.heal_order_lines re-derives their lines from
        # silver/orders before anything reads silver again (the next micro-batch, gold, a
        # restart). The retry of the files then merges as usual.
        refresh.lines_merge_starting(self.lake, winners["order_id"].to_numpy())
        lines_done = self._side.submit(
            contextvars.copy_context().run,
            self.lake.tables.merge_lines, lines, deletes, dates=dates, metadata=meta,
        )
        try:
            self.lake.tables.merge_upsert(
                "silver_orders",
                winners,
                key="order_id",
                target_filter=f"t.order_month IN ({months_literal(dates)})",
                metadata=meta,
            )
        finally:
            lines_done.result()
        refresh.lines_merge_done(self.lake)

    def _merge_products(self, winners: pd.DataFrame, stored: pd.DataFrame) -> None:
        merged = winners.merge(
            stored[["product_id", "price", "category"]],
            on="product_id",
            how="left",
            suffixes=("", "_old"),
        )
        changed = merged[
            (merged["price"] != merged["price_old"])
            | (merged["category"] != merged["category_old"])
        ]
        affected = self.lake.queries.order_dates_of_products(changed["product_id"].tolist())
        meta = {AFFECTED_KEY: json.dumps(sorted(d.isoformat() for d in affected))}
        self.lake.tables.merge_upsert(SILVER["products"], winners, key="product_id", metadata=meta)


@dataclass(frozen=True)
class MergeParts:
    """What the merge of a micro-batch works with (built once by ``Pipeline``)."""

    settings: Settings
    lake: Lake
    validator: Callable[[], Any]  # waits for the Great Expectations build on first use
    settle_gc: Callable[[], None]  # called after each validation (see memory.LongLived)
    commits: Commits
    quarantine: Quarantine
    gold: GoldRefresher
    silver: Silver
