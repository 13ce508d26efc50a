"""Records -> typed view: raw values parsed into typed columns plus the contract's flags.

Pure functions, no I/O; ``clean`` re-exports them (the row rules read the typed view).
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.config import Settings
from ecom_stream.contract.schema import FIELDS, KEYS
from ecom_stream.transform.parse import row_hashes

__all__ = [
    "created_in_window",
    "lines_valid",
    "parse_key",
    "parse_number",
    "parse_timestamp",
    "quantities_below",
    "records_frame",
    "typed_view",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_PLAIN_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def records_frame(entity: str, files: Sequence[Sequence[dict[str, Any]]]) -> pd.DataFrame:
    """One row per record of the given files: raw values (object), file index, row number,
    row hash and the unknown fields as JSON (``_rescued``)."""
    known = FIELDS[entity]
    records = [rec for recs in files for rec in recs]
    present = set().union(*map(dict.keys, records)) if records else set()
    if records and present == set(known) and all(len(r) == len(known) for r in records):
        # Every record has exactly the known fields (the common case): a C-level itemgetter
        # per field (4x faster than one itemgetter per record and a zip(*...) transpose).
        cols: dict[str, Any] = {
            f: pd.Series(list(map(operator.itemgetter(f), records)), dtype=object)
            for f in known
        }
    else:
        cols = {f: pd.Series([r.get(f) for r in records], dtype=object) for f in known}
    cols["_file"] = np.repeat(np.arange(len(files), dtype=np.int64), [len(r) for r in files])
    cols["_row_no"] = np.concatenate(
        [np.arange(len(r), dtype=np.int64) for r in files] or [np.empty(0, np.int64)]
    )
    cols["_row_hash"] = pd.Series(row_hashes(records), dtype=object)
    known_set = set(known)
    if present - known_set:
        cols["_rescued"] = pd.Series([_rescued(r, known_set) for r in records], dtype=object)
    else:
        cols["_rescued"] = pd.Series([None] * len(records), dtype=object)
    return pd.DataFrame(cols)


def _rescued(record: dict[str, Any], known: set[str]) -> str | None:
    extra = {k: v for k, v in record.items() if k not in known}
    return json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else None


def typed_view(
    entity: str,
    raw: pd.DataFrame,
    settings: Settings | None = None,
    received_at: Sequence[datetime] | None = None,
) -> pd.DataFrame:
    """Parse the raw values into typed columns (invalid values become null), keeping
    ``_file``, ``_row_no``, ``_row_hash``. Adds ``<col>_raw_missing`` flags for gates and
    the ``*_in_bounds`` / ``*_valid`` flags of the contract's bounds (from ``settings``).

    ``received_at`` is the received time of each file (indexed by ``_file``; default now):
    an order may be created at most ``max_days_ahead`` after its file was received. Not the
    clock of the run: ``rebuild`` passes the time kept with the raw copy, so it judges every
    row as the first run did.
    """
    bounds = settings if settings is not None else Settings()
    out = pd.DataFrame(
        {"_file": raw["_file"], "_row_no": raw["_row_no"], "_row_hash": raw["_row_hash"]}
    )
    key = KEYS[entity]
    out[key] = parse_key(raw[key])
    out["created_at"] = parse_timestamp(raw["created_at"])
    out["updated_at"] = parse_timestamp(raw["updated_at"])
    version = out["updated_at"].fillna(out["created_at"])
    out["_version_ts"] = version.fillna(EPOCH)
    if entity == "products":
        out["name"] = _text(raw["name"])
        out["category"] = _text(raw["category"])
        price = parse_number(raw["price"])
        out["price"] = price
        out["price_raw_missing"] = raw["price"].isna().to_numpy()
        # NaN (missing) is for the other rules; +inf (beyond double range) is out of bounds.
        out["price_in_bounds"] = ~(price >= bounds.max_price).to_numpy()
        out["rating"] = parse_number(raw["rating"])
        stock = parse_number(raw["stock"])
        out["stock"] = stock
        out["stock_valid"] = (
            raw["stock"].isna()
            | ((stock >= 0) & (stock == np.floor(stock)) & (stock < bounds.max_stock))
        ).to_numpy()
    else:
        out["customer_id"] = parse_key(raw["customer_id"])
        total = parse_number(raw["total"])
        out["total"] = total
        out["total_raw_missing"] = raw["total"].isna().to_numpy()
        out["total_in_bounds"] = ~(total >= bounds.max_total).to_numpy()
        out["status"] = _text(raw["status"])
        out["payment_method"] = _text(raw["payment_method"])
        out["shipping_city"] = _text(raw["shipping_city"])
        valid = lines_valid(raw["product_ids"], raw["quantities"])
        out["product_ids"] = raw["product_ids"].where(valid, None).astype(object)
        out["quantities"] = raw["quantities"].where(valid, None).astype(object)
        out["lines_valid"] = valid
        out["quantities_in_bounds"] = quantities_below(
            raw["quantities"], valid, bounds.max_quantity
        )
        out["created_at_in_window"] = created_in_window(
            out["created_at"], out["_file"].to_numpy(), received_at, bounds
        )
    return out


def created_in_window(
    created: pd.Series,
    files: np.ndarray,
    received_at: Sequence[datetime] | None,
    settings: Settings,
) -> np.ndarray:
    """Rows whose ``created_at`` is missing (another rule's business) or inside the window
    [``earliest_order_date``, its file's received time + ``max_days_ahead``]."""
    earliest = pd.Timestamp(settings.earliest_order_date, tz="UTC")
    if received_at is None:
        received = np.full(len(files), pd.Timestamp.now(tz="UTC").to_datetime64())
    else:
        per_file = pd.to_datetime(list(received_at), utc=True).tz_localize(None).to_numpy()
        received = per_file.astype("datetime64[us]")[files] if len(files) else per_file[:0]
    latest = received + np.timedelta64(round(settings.max_days_ahead * 86_400e6), "us")
    at = created.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    inside = (at >= earliest.tz_localize(None).to_datetime64()) & (at <= latest)
    return np.isnat(at) | inside


def _of_type(values: pd.Series | np.ndarray, kind: type) -> np.ndarray:
    """Elementwise ``type(v) is kind`` (exact: ``bool`` is not ``int``). A column of one type
    (the common case) is answered from the set of its types; mixed ones element by element,
    with C-level iteration (no Python frame per value)."""
    arr = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
    n = len(arr)
    kinds = set(map(type, arr))
    if kinds == {kind}:
        return np.ones(n, dtype=bool)
    if kind not in kinds:
        return np.zeros(n, dtype=bool)
    return np.fromiter(
        map(operator.is_, map(type, arr), itertools.repeat(kind, n)), dtype=bool, count=n
    )


def parse_key(values: pd.Series) -> pd.Series:
    """JSON integers within int64; anything else (strings, floats, booleans) becomes null."""
    arr = values.to_numpy(dtype=object)
    is_int = _of_type(arr, int)
    out = pd.Series(pd.NA, index=values.index, dtype="Int64")
    if is_int.any():
        ints = arr[is_int]
        try:
            out[is_int] = np.array(ints.tolist(), dtype=np.int64)
        except OverflowError:  # some integer outside int64: check one by one
            fits = np.array([INT64_MIN <= v <= INT64_MAX for v in ints], dtype=bool)
            positions = np.flatnonzero(is_int)[fits]
            out.iloc[positions] = np.array(ints[fits].tolist(), dtype=np.int64)
    return out


def parse_number(values: pd.Series) -> pd.Series:
    """A JSON number, or a string holding a plain decimal number; anything else is NaN."""
    arr = values.to_numpy(dtype=object)
    is_number = _of_type(arr, int) | _of_type(arr, float)
    nums = values.where(is_number)
    strs = values.where(_of_type(arr, str))
    plain = strs.notna()
    if plain.any():
        plain[plain] = strs[plain].astype(str).str.fullmatch(_PLAIN_NUMBER.pattern)
    merged = nums.where(~plain, strs)
    # +-inf stays (a literal beyond double range, e.g. 1e400): the bounds rules reject it.
    return pd.to_numeric(merged.where(is_number | plain), errors="coerce").astype("float64")


def parse_timestamp(values: pd.Series) -> pd.Series:
    """ISO-8601 strings; without a zone they are UTC. Anything else is NaT."""
    strs = values.where(_of_type(values, str))
    parsed = pd.to_datetime(strs, utc=True, errors="coerce", format="ISO8601")
    return parsed.astype("datetime64[us, UTC]")


def _text(values: pd.Series) -> pd.Series:
    return values.where(_of_type(values, str)).astype(object)


def lines_valid(pids: pd.Series, qtys: pd.Series) -> np.ndarray:
    """Rows whose ``product_ids`` and ``quantities`` are non-empty lists of equal length, of
    int64 product ids and integer quantities >= 1 (vectorised over the flattened lists)."""
    p, q = pids.to_numpy(dtype=object), qtys.to_numpy(dtype=object)
    is_list = _of_type(p, list) & _of_type(q, list)
    n_p = np.zeros(len(p), dtype=np.int64)
    n_q = np.zeros(len(q), dtype=np.int64)
    n_p[is_list] = np.fromiter(map(len, p[is_list]), np.int64, int(is_list.sum()))
    n_q[is_list] = np.fromiter(map(len, q[is_list]), np.int64, int(is_list.sum()))
    ok = is_list & (n_p > 0) & (n_p == n_q)
    rows = np.repeat(np.flatnonzero(ok), n_p[ok])
    if len(rows) == 0:
        return ok
    flat_p = _objects(itertools.chain.from_iterable(p[ok]), len(rows))
    flat_q = _objects(itertools.chain.from_iterable(q[ok]), len(rows))
    p_ok, q_ok = _int64_elements(flat_p), _int64_elements(flat_q)
    q_vals = np.zeros(len(rows), dtype=np.int64)
    q_vals[q_ok] = np.array(flat_q[q_ok].tolist(), dtype=np.int64)
    bad = ~p_ok | ~q_ok | (q_vals < 1)
    ok[np.unique(rows[bad])] = False
    return ok


def quantities_below(qtys: pd.Series, valid: np.ndarray, bound: int) -> np.ndarray:
    """Rows whose quantities are all below ``bound`` (rows with malformed lines pass: the
    well-formed rule rejects them)."""
    ok = np.ones(len(valid), dtype=bool)
    if not valid.any():
        return ok
    lists = qtys.to_numpy(dtype=object)[valid]
    n = np.fromiter(map(len, lists), np.int64, len(lists))
    flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(n.sum()))
    rows = np.repeat(np.flatnonzero(valid), n)
    ok[np.unique(rows[flat >= bound])] = False
    return ok


def _objects(values: Any, n: int) -> np.ndarray:
    arr = np.empty(n, dtype=object)
    arr[:] = list(values)
    return arr


def _int64_elements(arr: np.ndarray) -> np.ndarray:
    """Which elements of an object array are Python ints within int64 (booleans excluded)."""
    good = _of_type(arr, int)
    if good.any():
        try:
            np.array(arr[good].tolist(), dtype=np.int64)
        except OverflowError:
            good[good] = [INT64_MIN <= v <= INT64_MAX for v in arr[good]]
    return good
