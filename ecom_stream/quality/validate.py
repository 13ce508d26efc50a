"""Data-quality verdicts per batch file: the Validator and its piece-by-piece FileChecks.

One Great Expectations run (``quality/gx.py``) covers every row of a micro-batch (all files of
one entity), with the suite built from the rule catalogue and the settings' extra rules; the
failing rows of each rule are then split by file (``quality/verdicts.py``). Domain warnings
at merge time are in ``quality/domain.py``; all are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ecom_stream.config import Settings
from ecom_stream.contract.rules import Rule, default_policies, row_masks, rules_of
from ecom_stream.contract.schema import ENTITIES
from ecom_stream.quality.domain import combine_domain_warnings, domain_warnings
from ecom_stream.quality.gx import GX_LOCK, _engine, _GxRun, run_gx
from ecom_stream.quality.verdicts import _EMPTY, CheckResult, FileValidation, per_file

__all__ = [
    "CheckResult",
    "FileChecks",
    "FileValidation",
    "Validator",
    "combine_domain_warnings",
    "domain_warnings",
]

log = logging.getLogger(__name__)

_CHECKS: dict[str, tuple[Rule, ...]] = {e: rules_of(e) for e in ENTITIES}
"""The built-in checks of each entity (a Validator adds its settings' extra rules)."""


class Validator:
    """Validates micro-batches of one entity at a time; build once and reuse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        extra = settings.extra_rules
        self.policies: dict[str, str] = {**default_policies(extra), **settings.policies}
        self.rules = {e: rules_of(e, extra) for e in ENTITIES}
        self.extra = {e: tuple(r for r in extra if r.entity == e) for e in ENTITIES}
        self._lock = GX_LOCK  # GX state is process-wide, so is the lock

    def prepare(self) -> None:
        """Import and build Great Expectations now (seconds) rather than on the first batch."""
        with self._lock:
            engine = _engine()
            for entity, extra in self.extra.items():
                if extra:
                    engine.suite(entity, extra)

    def validate(
        self, entity: str, typed: pd.DataFrame, present_columns: Sequence[set[str]]
    ) -> list[FileValidation]:
        """Verdicts for every file ``0..len(present_columns)-1`` of the micro-batch ``typed``."""
        if entity not in ENTITIES:
            raise ValueError(f"unknown entity {entity!r}")
        n_files = len(present_columns)
        files = typed["_file"].to_numpy(dtype=np.int64)
        if len(files) and (files.min() < 0 or files.max() >= n_files):
            raise ValueError(f"typed has _file values outside 0..{n_files - 1}")
        gx_run, failing = self._run(entity, typed, n_files)
        return per_file(entity, typed, files, n_files, present_columns, failing,
                        self.policies, self.settings, gx_run)

    def _run(
        self, entity: str, typed: pd.DataFrame, n_files: int
    ) -> tuple[_GxRun | None, dict[str, np.ndarray]]:
        """The GX run over ``typed`` (None without rows) and each rule's failing positions."""
        if not len(typed):
            return None, self._failing_rows(entity, {}, {})
        masks = row_masks(self.rules[entity], typed)
        with self._lock:
            gx_run = run_gx(entity, typed, n_files, self.extra[entity], masks)
        per_part = {p.tag: p.positions for p in gx_run.parts}
        return gx_run, self._failing_rows(entity, per_part, masks)

    def _failing_rows(
        self, entity: str, per_part: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Failing positions of each row-level check: the union of its GX parts, cross-checked
        against its row mask (``clean.row_rules`` for the built-in rules) so validation never
        lets through a row cleaning would drop."""
        out: dict[str, np.ndarray] = {}
        for check in self.rules[entity]:
            if check.kind == "required_columns":
                continue
            pos = _EMPTY
            for tag in check.parts:
                pos = np.union1d(pos, per_part.get(tag, _EMPTY))
            out[check.name] = pos.astype(np.int64, copy=False)
        for name, mask in masks.items():
            extra = np.setdiff1d(np.flatnonzero(mask), out[name], assume_unique=True)
            if len(extra):
                log.error(
                    "validation and cleaning disagree on %s: %d row(s) fail clean.row_rules "
                    "but passed Great Expectations; rejecting them too", name, len(extra),
                )
                out[name] = np.union1d(out[name], extra)
        return out


class FileChecks:
    """Validates one large file piece by piece and gives the file's verdict over all its rows.

    Only the rows some check fails are kept (for the samples and observed texts), and the
    failing positions of each check: the verdict, counts and texts are those of validating
    the whole file at once, without holding all its rows.
    """

    def __init__(self, validator: Validator, entity: str) -> None:
        self.validator, self.entity = validator, entity
        self._kept: list[pd.DataFrame] = []
        self._failing: dict[str, list[np.ndarray]] = {}
        self._runs: list[_GxRun] = []
        self._present: set[str] = set()
        self._rows = 0
        self._kept_rows = 0
        self._last = pd.DataFrame()

    def add(self, typed: pd.DataFrame, present: set[str]) -> dict[int, str]:
        """Validate one piece (``_file`` 0, ``_row_no`` counted over the file); returns its
        rejected rows as ``FileValidation.rejected`` does (positions in ``typed``)."""
        v = self.validator
        gx_run, failing = v._run(self.entity, typed, 1)
        if gx_run is not None:
            self._runs.append(gx_run)
        files = np.zeros(len(typed), np.int64)
        piece = per_file(self.entity, typed, files, 1, [present], failing, v.policies,
                         v.settings, gx_run)[0]
        union = _EMPTY
        for pos in failing.values():
            union = np.union1d(union, pos)
        union = union.astype(np.int64, copy=False)
        if len(union):
            self._kept.append(typed.iloc[union])
        for name, pos in failing.items():
            self._failing.setdefault(name, []).append(
                np.searchsorted(union, pos).astype(np.int64) + self._kept_rows
            )
        self._kept_rows += len(union)
        self._rows += len(typed)
        self._present |= present
        self._last = typed.iloc[:0].copy()  # a view would keep the piece alive
        return piece.rejected

    def report(self) -> FileValidation:
        """The file's verdicts (as ``Validator.validate`` gives for the whole file)."""
        kept = (pd.concat(self._kept, ignore_index=True) if self._kept
                else self._last.reset_index(drop=True))
        failing = {name: np.concatenate(parts) for name, parts in self._failing.items()}
        v = self.validator
        report = per_file(self.entity, kept, np.zeros(len(kept), np.int64), 1,
                          [self._present], failing, v.policies, v.settings, None,
                          counts=np.array([self._rows], np.int64))[0]
        report._gx_pieces = self._runs
        return report
