"""The Great Expectations engine: suites built from the rule catalogue, one run per micro-batch.

The only module that imports great_expectations. One run covers every row of a micro-batch
(all files of one entity); the per-row unexpected indices GX returns are kept in a
:class:`_GxRun`, which splits them by ``_file`` for each file's GX JSON. Great Expectations is
imported lazily on the first run (the import takes seconds) and its context and suites are
built once per process (a suite per entity, and one per set of extra rules). GX is not
thread-safe: every run holds one process-wide lock.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.contract.rules import Rule, rules_of
from ecom_stream.contract.schema import ENTITIES
from ecom_stream.errors import ValidationSetupError
from ecom_stream.quality.frame import POS as _POS
from ecom_stream.quality.frame import gx_frame as _gx_frame

__all__ = ["GX_LOCK", "run_gx", "split_by_file"]

_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [_POS],
    # Index-only output: GX otherwise looks up every failing value with DataFrame.at (~25 us a row).
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}
_PARTIAL_ROWS = 20
_EMPTY = np.empty(0, dtype=np.int64)
_SUITES_KEPT = 8
"""Suites with extra rules kept per process (a test session builds one per set of rules)."""


def _gx_expectations(gx: Any, entity: str, extra: Sequence[Rule] = ()) -> list[tuple[str, Any]]:
    """The GX expectations of an entity as (tag, expectation), from the rule catalogue (and
    the ``extra`` rules) in catalogue order; checks refer to the tags."""
    E = gx.expectations
    return [(p.tag, p.build(E)) for r in rules_of(entity, extra) for p in r.expectations]


# -- Great Expectations engine (built once per process) ----------------------------------------
GX_LOCK = threading.RLock()
_ENGINE: _Engine | None = None


@dataclass
class _Suite:
    """Batch definition and suite of one entity, with the tag of each expectation."""

    batch_definition: Any
    suite: Any
    tags: list[str]


class _Engine:
    """The ephemeral GX context with a suite per entity (and per set of extra rules)."""

    def __init__(self) -> None:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        _defer_import("scipy", "stats")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.version = str(gx.__version__)
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = ctx.data_sources.add_pandas("ecom_stream")
        self.batch_definitions = {
            e: source.add_dataframe_asset(e).add_batch_definition_whole_dataframe("micro_batch")
            for e in ENTITIES
        }
        self.context = ctx
        self.suites: dict[Any, _Suite] = {}
        for entity in ENTITIES:
            self.suite(entity)

    def suite(self, entity: str, extra: tuple[Rule, ...] = ()) -> _Suite:
        """The suite of ``entity`` with the ``extra`` rules of it, built on first use."""
        key: Any = entity if not extra else (entity, extra)
        if key in self.suites:
            return self.suites[key]
        name = f"ecom_stream_{entity}" + "".join(f"+{r.name}" for r in extra)
        for old in [k for k, s in self.suites.items() if s.suite.name == name]:
            self._drop(old)  # same rule names, other rules (e.g. from another test)
        extras = [k for k in self.suites if isinstance(k, tuple)]
        if extra and len(extras) >= _SUITES_KEPT:
            self._drop(extras[0])
        tagged = _gx_expectations(self.gx, entity, extra)
        for tag, exp in tagged:
            exp.meta = {**(exp.meta or {}), "ecom_stream_part": tag}
        suite = self.context.suites.add(
            self.gx.ExpectationSuite(name=name, expectations=[e for _, e in tagged])
        )
        self.suites[key] = _Suite(self.batch_definitions[entity], suite, [t for t, _ in tagged])
        return self.suites[key]

    def _drop(self, key: Any) -> None:
        self.context.suites.delete(self.suites.pop(key).suite.name)

    def run(self, entity: str, frame: pd.DataFrame, extra: tuple[Rule, ...] = ()) -> Any:
        """Validate ``frame`` against the entity's suite (caller holds the lock).

        ``ValidationDefinition.run`` is not used on purpose: it also stores every result in the
        context's in-memory results store (unbounded growth in a daemon) and is ~2x slower.
        """
        s = self.suite(entity, extra)
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
    """The process-wide engine, built on first use (caller holds ``GX_LOCK``)."""
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
                    split_by_file(p.positions, self.files, self.n_files),
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


def run_gx(
    entity: str,
    typed: pd.DataFrame,
    n_files: int,
    extra: tuple[Rule, ...] = (),
    masks: Mapping[str, np.ndarray] | None = None,
) -> _GxRun:
    """One GX run over all rows (caller holds ``GX_LOCK``); raises ValidationSetupError when
    any expectation errored. ``masks``: the failing rows of the rules with a mask."""
    frame = _gx_frame(entity, typed, extra, masks or {})
    engine = _engine()
    try:
        res = engine.run(entity, frame, extra)
    except Exception as exc:
        raise ValidationSetupError(f"Great Expectations failed validating {entity}: {exc}") from exc
    suite = engine.suite(entity, extra)
    rules = rules_of(entity, extra)
    users = {t: [c.name for c in rules if t in c.parts] for t in suite.tags}
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



def split_by_file(pos: np.ndarray, files: np.ndarray, n_files: int) -> list[np.ndarray]:
    """Sorted positions -> one sorted array per file index."""
    if len(pos) == 0:
        return [_EMPTY] * n_files
    fidx = files[pos]
    order = np.argsort(fidx, kind="stable")
    bounds = np.searchsorted(fidx[order], np.arange(n_files + 1))
    ordered = pos[order]
    return [ordered[bounds[i]:bounds[i + 1]] for i in range(n_files)]
