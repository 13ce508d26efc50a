"""Data-quality verdicts per batch file; the only module that imports great_expectations.

One Great Expectations run covers every row of a micro-batch (all files of one entity); the
per-row unexpected indices GX returns are then split by ``_file`` so each file gets its own
verdicts. Great Expectations is imported lazily on the first :meth:`Validator.validate` call
(the import takes seconds) and its context, suites and validation definitions are built once
per process. GX is not thread-safe: every run holds one process-wide lock.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.config import Settings, default_policies
from ecom_stream.contract.rules import FILE_LEVEL, Rule, rules_of
from ecom_stream.contract.schema import (
    CATEGORIES,
    ENTITIES,
    KEYS,
    ORDER_STATUSES,
    REQUIRED_FIELDS,
    STATUS_RANK,
)
from ecom_stream.errors import ValidationSetupError
from ecom_stream.transform import clean

__all__ = ["CheckResult", "FileValidation", "Validator", "domain_warnings"]

log = logging.getLogger(__name__)

_POS = "_pos"
"""Name of the GX frame's index: the iloc position of the row in ``typed``."""
_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [_POS],
    # Index-only output: GX otherwise looks up every failing value with DataFrame.at (~25 us a row).
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}
_SAMPLE_ROWS = 5
_PARTIAL_ROWS = 20
_FILE_LEVEL = FILE_LEVEL
_EMPTY = np.empty(0, dtype=np.int64)


# -- public results ---------------------------------------------------------------------------
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


# -- check catalogue (defined once in contract/rules.py) ----------------------------------------
_Check = Rule
_CHECKS: dict[str, tuple[Rule, ...]] = {e: rules_of(e) for e in ("products", "orders")}


def _gx_expectations(gx: Any, entity: str) -> list[tuple[str, Any]]:
    """The GX expectations of an entity as (tag, expectation); checks refer to the tags."""
    E = gx.expectations
    if entity == "products":
        return [
            ("product_id_not_null", E.ExpectColumnValuesToNotBeNull(column="product_id")),
            ("price_not_null", E.ExpectColumnValuesToNotBeNull(column="price")),
            ("price_positive",
             E.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True)),
            ("price_in_bounds",
             E.ExpectColumnValuesToBeInSet(column="price_in_bounds", value_set=[True])),
            ("stock_valid", E.ExpectColumnValuesToBeInSet(column="stock_valid", value_set=[True])),
            ("rating_1_to_5",
             E.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5)),
            ("category_not_null", E.ExpectColumnValuesToNotBeNull(column="category_clean")),
            ("category_known",
             E.ExpectColumnValuesToBeInSet(column="category_clean", value_set=list(CATEGORIES))),
        ]
    return [
        ("order_id_not_null", E.ExpectColumnValuesToNotBeNull(column="order_id")),
        ("customer_id_not_null", E.ExpectColumnValuesToNotBeNull(column="customer_id")),
        ("total_not_null", E.ExpectColumnValuesToNotBeNull(column="total")),
        ("total_non_negative", E.ExpectColumnValuesToBeBetween(column="total", min_value=0)),
        ("total_in_bounds",
         E.ExpectColumnValuesToBeInSet(column="total_in_bounds", value_set=[True])),
        ("lines_valid", E.ExpectColumnValuesToBeInSet(column="lines_valid", value_set=[True])),
        ("quantities_in_bounds",
         E.ExpectColumnValuesToBeInSet(column="quantities_in_bounds", value_set=[True])),
        ("created_at_not_null", E.ExpectColumnValuesToNotBeNull(column="created_at")),
        ("created_at_in_window",
         E.ExpectColumnValuesToBeInSet(column="created_at_in_window", value_set=[True])),
        ("status_not_null", E.ExpectColumnValuesToNotBeNull(column="status_clean")),
        ("status_known",
         E.ExpectColumnValuesToBeInSet(column="status_clean", value_set=list(ORDER_STATUSES))),
        ("updated_after_created", E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="updated_at", column_B="created_at", or_equal=True,
            ignore_row_if="either_value_is_missing")),
    ]


def _gx_frame(entity: str, typed: pd.DataFrame) -> pd.DataFrame:
    """The columns GX checks (plus derived ones), indexed by iloc position named ``_pos``."""
    if entity == "products":
        cols = {
            "product_id": typed["product_id"].array,
            "price": typed["price"].to_numpy(dtype=np.float64),
            "price_in_bounds": typed["price_in_bounds"].to_numpy(dtype=bool),
            "stock_valid": typed["stock_valid"].to_numpy(dtype=bool),
            "rating": typed["rating"].to_numpy(dtype=np.float64),
            "category_clean": _normalise(typed["category"], clean.title_case),
        }
    else:
        cols = {
            "order_id": typed["order_id"].array,
            "customer_id": typed["customer_id"].array,
            "total": typed["total"].to_numpy(dtype=np.float64),
            "total_in_bounds": typed["total_in_bounds"].to_numpy(dtype=bool),
            "lines_valid": typed["lines_valid"].to_numpy(dtype=bool),
            "quantities_in_bounds": typed["quantities_in_bounds"].to_numpy(dtype=bool),
            "created_at_in_window": typed["created_at_in_window"].to_numpy(dtype=bool),
            # naive UTC: GX's pair metric calls Series.values, deprecated for tz-aware columns
            "created_at": _naive_utc(typed["created_at"]),
            "updated_at": _naive_utc(typed["updated_at"]),
            "status_clean": _normalise(typed["status"], lambda s: s.strip().lower()),
        }
    return pd.DataFrame(cols, index=pd.RangeIndex(len(typed), name=_POS))


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


# -- Great Expectations engine (built once per process) ----------------------------------------
_GX_LOCK = threading.RLock()
_ENGINE: _Engine | None = None


@dataclass
class _Suite:
    """Batch definition and suite of one entity, with the tag of each expectation."""

    batch_definition: Any
    suite: Any
    validation_definition: Any
    tags: list[str]


class _Engine:
    """The ephemeral GX context with one suite and validation definition per entity."""

    def __init__(self) -> None:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        _defer_import("scipy", "stats")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.version = str(gx.__version__)
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = ctx.data_sources.add_pandas("ecom_stream")
        self.suites: dict[str, _Suite] = {}
        for entity in ENTITIES:
            asset = source.add_dataframe_asset(entity)
            bd = asset.add_batch_definition_whole_dataframe("micro_batch")
            tagged = _gx_expectations(gx, entity)
            for tag, exp in tagged:
                exp.meta = {**(exp.meta or {}), "ecom_stream_part": tag}
            suite = ctx.suites.add(
                gx.ExpectationSuite(
                    name=f"ecom_stream_{entity}", expectations=[e for _, e in tagged]
                )
            )
            vd = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"ecom_stream_{entity}", data=bd, suite=suite)
            )
            self.suites[entity] = _Suite(bd, suite, vd, [t for t, _ in tagged])
        self.context = ctx

    def run(self, entity: str, frame: pd.DataFrame) -> Any:
        """Validate ``frame`` against the entity's suite (caller holds the lock).

        ``ValidationDefinition.run`` is not used on purpose: it also stores every result in the
        context's in-memory results store (unbounded growth in a daemon) and is ~2x slower.
        """
        s = self.suites[entity]
        batch = s.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(s.suite, result_format=_RESULT_FORMAT)


def _defer_import(package: str, name: str) -> None:
    """Install ``package.name`` as a module that loads on its first attribute access.

    GX imports ``scipy.stats`` at import time (``from scipy import stats``) for two
    distribution expectations we do not use; loading it eagerly is ~0.5 s of the ~1.4 s GX
    import, and that time holds the GIL the pipeline needs. Setting the attribute on the
    package matters: ``from scipy import stats`` then never goes through the import system
    (which, on Python 3.11, would touch ``__spec__`` and load the module anyway).
    """
    full = f"{package}.{name}"
    if full in sys.modules:
        return
    try:
        parent = importlib.import_module(package)
        spec = importlib.util.find_spec(full)
    except ImportError:
        return  # GX will report its own missing dependency
    if spec is None or spec.loader is None:
        return
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    loader.exec_module(module)
    setattr(parent, name, module)


def _engine() -> _Engine:
    """The process-wide engine, built on first use (caller holds ``_GX_LOCK``)."""
    global _ENGINE
    if _ENGINE is None:
        try:
            _ENGINE = _Engine()
        except Exception as exc:  # a broken GX install or suite is a setup bug
            raise ValidationSetupError(f"could not set up Great Expectations: {exc}") from exc
    return _ENGINE


@dataclass
class _Part:
    """One GX expectation's outcome over the whole micro-batch."""

    tag: str
    config: dict[str, Any]
    positions: np.ndarray
    missing: np.ndarray | None
    """Per-row null mask for GX checks that ignore nulls (reported as missing_count)."""


@dataclass
class _GxRun:
    """What one GX run returned, kept to derive each file's GX JSON on demand."""

    entity: str
    version: str
    suite_name: str
    parts: list[_Part]
    files: np.ndarray
    row_no: np.ndarray
    n_files: int
    _split: list[tuple[list[np.ndarray], np.ndarray | None]] | None = None

    def _per_file(self) -> list[tuple[list[np.ndarray], np.ndarray | None]]:
        """Per part: failing positions of each file, and per-file null counts (computed once)."""
        if self._split is None:
            self._split = [
                (
                    _split_by_file(p.positions, self.files, self.n_files),
                    None if p.missing is None
                    else np.bincount(self.files[p.missing], minlength=self.n_files),
                )
                for p in self.parts
            ]
        return self._split

    def file_json(self, file_index: int) -> dict[str, Any]:
        """The GX suite result restricted to one file, positions shown as the file's ``_row_no``."""
        n = int(np.count_nonzero(self.files == file_index))
        results = []
        for p, (by_file, missing) in zip(self.parts, self._per_file(), strict=True):
            pos = by_file[file_index]
            k = len(pos)
            rows = self.row_no[pos].tolist()
            res: dict[str, Any] = {
                "element_count": n,
                "unexpected_count": k,
                "unexpected_percent": 100.0 * k / n if n else None,
                "unexpected_index_column_names": ["_row_no"],
                "partial_unexpected_index_list": [{"_row_no": rows[:_PARTIAL_ROWS]}] if k else [],
                "unexpected_index_list": [{"_row_no": rows}] if k else [],
            }
            if missing is not None:
                m = int(missing[file_index])
                nonmissing = n - m
                res.update(
                    missing_count=m,
                    missing_percent=100.0 * m / n if n else None,
                    unexpected_percent_total=res["unexpected_percent"],
                    unexpected_percent_nonmissing=100.0 * k / nonmissing if nonmissing else None,
                )
                res["unexpected_percent"] = res["unexpected_percent_nonmissing"]
            results.append(
                {
                    "success": k == 0,
                    "expectation_config": p.config,
                    "result": res,
                    "exception_info": {"raised_exception": False, "exception_message": None,
                                       "exception_traceback": None},
                }
            )
        good = sum(r["success"] for r in results)
        return {
            "suite_name": self.suite_name,
            "success": good == len(results),
            "statistics": {
                "evaluated_expectations": len(results),
                "successful_expectations": good,
                "unsuccessful_expectations": len(results) - good,
                "success_percent": 100.0 * good / len(results) if results else None,
            },
            "results": results,
            "meta": {"great_expectations_version": self.version, "entity": self.entity,
                     "restricted_to_file_index": file_index},
        }


def _exception_message(info: Any) -> str | None:
    """The message of a raised exception inside GX's (possibly nested) exception_info."""
    if info is None:
        return None
    if isinstance(info, Mapping):
        if "raised_exception" in info:
            if info.get("raised_exception"):
                return str(info.get("exception_message") or "unknown error")
            return None
        for value in info.values():
            msg = _exception_message(value)
            if msg:
                return msg
        return None
    if isinstance(info, (list, tuple, set, frozenset)):
        for value in info:
            msg = _exception_message(value)
            if msg:
                return msg
    return None


def _positions(result: Mapping[str, Any], n_rows: int) -> np.ndarray:
    """Failing iloc positions from a COMPLETE result with index-only ``unexpected_index_list``."""
    count = int(result.get("unexpected_count") or 0)
    if count == 0:
        return _EMPTY
    idx = result.get("unexpected_index_list")
    if not idx:
        raise ValueError("no unexpected_index_list in a failing result")
    values: list[Any] = []
    for entry in idx:
        v = entry[_POS] if isinstance(entry, Mapping) else entry
        values.extend(v if isinstance(v, list) else [v])
    pos = np.unique(np.asarray(values, dtype=np.int64))
    if len(pos) != count or (len(pos) and (pos[0] < 0 or pos[-1] >= n_rows)):
        raise ValueError(f"{len(pos)} unexpected indices for unexpected_count {count}")
    return pos


def _run_gx(entity: str, typed: pd.DataFrame, n_files: int) -> _GxRun:
    """One GX run over all rows; raises ValidationSetupError when any expectation errored."""
    frame = _gx_frame(entity, typed)
    engine = _engine()
    try:
        res = engine.run(entity, frame)
    except Exception as exc:
        raise ValidationSetupError(f"Great Expectations failed validating {entity}: {exc}") from exc
    suite = engine.suites[entity]
    users = {t: [c.name for c in _CHECKS[entity] if t in c.parts] for t in suite.tags}
    parts: list[_Part] = []
    for r in res.results:
        cfg = r.expectation_config
        tag = (cfg.meta or {}).get("ecom_stream_part", "?")
        label = f"{'/'.join(users.get(tag, [])) or tag} ({cfg.type} {dict(cfg.kwargs)})"
        msg = _exception_message(r.exception_info)
        if msg:
            raise ValidationSetupError(f"Great Expectations errored on {label}: {msg}")
        try:
            pos = _positions(r.result, len(frame))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationSetupError(
                f"unusable Great Expectations result for {label}: {exc}"
            ) from exc
        missing = None
        if "missing_count" in r.result:
            domain = [cfg.kwargs[k] for k in ("column", "column_A", "column_B") if k in cfg.kwargs]
            missing = frame[domain].isna().any(axis=1).to_numpy()
        config = cfg.to_json_dict()
        config["kwargs"].pop("batch_id", None)
        parts.append(_Part(tag, config, pos, missing))
    got = [p.tag for p in parts]
    if sorted(got) != sorted(suite.tags):
        raise ValidationSetupError(
            f"Great Expectations returned results for {got}, expected {suite.tags}"
        )
    return _GxRun(
        entity=entity,
        version=engine.version,
        suite_name=str(suite.suite.name),
        parts=parts,
        files=typed["_file"].to_numpy(dtype=np.int64),
        row_no=typed["_row_no"].to_numpy(dtype=np.int64),
        n_files=n_files,
    )


# -- the validator ----------------------------------------------------------------------------
class Validator:
    """Validates micro-batches of one entity at a time; build once and reuse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policies: dict[str, str] = {**default_policies(), **settings.policies}
        self._lock = _GX_LOCK  # GX state is process-wide, so is the lock

    def prepare(self) -> None:
        """Import and build Great Expectations now (seconds) rather than on the first batch."""
        with self._lock:
            _engine()

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
        gx_run: _GxRun | None = None
        per_part: dict[str, np.ndarray] = {}
        if len(typed):
            with self._lock:
                gx_run = _run_gx(entity, typed, n_files)
            per_part = {p.tag: p.positions for p in gx_run.parts}
        failing = self._failing_rows(entity, typed, per_part)
        return _per_file(entity, typed, files, n_files, present_columns, failing,
                         self.policies, self.settings, gx_run)

    @staticmethod
    def _failing_rows(
        entity: str, typed: pd.DataFrame, per_part: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Failing positions of each row-level check: the union of its GX parts, cross-checked
        against ``clean.row_rules`` so validation never lets through a row cleaning would drop."""
        out: dict[str, np.ndarray] = {}
        for check in _CHECKS[entity]:
            if check.kind == "required_columns":
                continue
            pos = _EMPTY
            for tag in check.parts:
                pos = np.union1d(pos, per_part.get(tag, _EMPTY))
            out[check.name] = pos.astype(np.int64, copy=False)
        if len(typed):
            for name, mask in clean.row_rules(entity, typed).items():
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
        gx_run: _GxRun | None = None
        per_part: dict[str, np.ndarray] = {}
        if len(typed):
            with v._lock:
                gx_run = _run_gx(self.entity, typed, 1)
            per_part = {p.tag: p.positions for p in gx_run.parts}
            self._runs.append(gx_run)
        failing = v._failing_rows(self.entity, typed, per_part)
        files = np.zeros(len(typed), np.int64)
        piece = _per_file(self.entity, typed, files, 1, [present], failing, v.policies,
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
        report = _per_file(self.entity, kept, np.zeros(len(kept), np.int64), 1,
                           [self._present], failing, v.policies, v.settings, None,
                           counts=np.array([self._rows], np.int64))[0]
        report._gx_pieces = self._runs
        return report


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


def _per_file(
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
    split = {name: _split_by_file(pos, files, n_files) for name, pos in failing.items()}
    sampler = _Sampler(entity, typed)
    gate = settings.price_missing_gate if entity == "products" else settings.total_missing_gate
    reports: list[FileValidation] = []
    for i in range(n_files):
        n = int(counts[i])
        checks: list[CheckResult] = []
        for check in _CHECKS[entity]:
            policy = _effective_policy(check, policies)
            note = ""
            if policy != policies[check.name]:
                note = (f" (policy {policies[check.name]} cannot apply to a file-level check: "
                        "treated as warn)")
            if check.kind == "required_columns":
                checks.append(_required_check(entity, check, policy, present_columns[i], n, note))
                continue
            pos = split[check.name][i]
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
            checks.append(
                CheckResult(
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
            )
        reports.append(FileValidation(i, n, checks, entity=entity, _gx=gx_run))
    return reports


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
    required = REQUIRED_FIELDS[entity]
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


def _split_by_file(pos: np.ndarray, files: np.ndarray, n_files: int) -> list[np.ndarray]:
    """Sorted positions -> one sorted array per file index."""
    if len(pos) == 0:
        return [_EMPTY] * n_files
    fidx = files[pos]
    order = np.argsort(fidx, kind="stable")
    bounds = np.searchsorted(fidx[order], np.arange(n_files + 1))
    ordered = pos[order]
    return [ordered[bounds[i]:bounds[i + 1]] for i in range(n_files)]


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


# -- domain warnings (merge time, no GX) -------------------------------------------------------
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
    sample = [
        {key: _json_value(incoming[key].iloc[p]), f"old_{column}": _json_value(old_vals.iloc[p]),
         f"new_{column}": _json_value(new_vals.iloc[p])}
        for p in rows[:_SAMPLE_ROWS]
    ]
    return [_domain_result(entity, name, column, what, change, n, rows, sample)]


def combine_domain_warnings(
    entity: str, parts: Sequence[CheckResult], settings: Settings
) -> CheckResult:
    """One domain warning from those of the pieces of one file (each piece's keys are its
    own, compared with the state before the file): counts add up, samples are the first."""
    if entity == "orders":
        what = "status moved backwards (pending < confirmed < shipped < delivered)"
        change = "{old} -> {new}"
    else:
        what = f"price changed by more than {settings.price_change_factor:g}x"
        change = "{old:.2f} -> {new:.2f}"
    n = sum(int(c.element_count) for c in parts)
    k = sum(int(c.unexpected_count) for c in parts)
    sample = [s for c in parts for s in c.sample][:_SAMPLE_ROWS]
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
