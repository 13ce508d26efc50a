"""The simulated e-commerce source: a product catalogue and a stream of order batch files.

``generate`` writes ``products-000001.json`` ... first (unless ``options.catalogue`` is off), then
``orders-NNNNNN.json`` (numbered from ``options.start``), each a JSON array with one object per
line, written atomically.

- Timeline: order batch ``n`` covers the day ``start_date + (n - 1)`` (one batch per simulated
  day), by a daily hour profile; ~2% of new orders arrive 1-3 days late. The catalogue
  (and any product re-sends) is dated before the first order window of the run.
- Re-sends: ~10% of an order batch's rows advance an open order (pending, confirmed, shipped,
  created in the last 14 days) one status step, with an ``updated_at`` inside the batch window.
  With ``product_batches > 1``, files 2..K re-send ~5% of the catalogue with a new price.
- Sale days (~1 in 25, not in the first week, see ``sale_days``): one category gets about twice
  its usual order lines, as extra basket items, so its revenue spikes and the others do not dip.
- Mess, per emitted record: names upper-cased or padded, prices negative or "N/A", null
  categories, ratings and order totals. Order totals always use the true price.

Same options, same bytes: every draw comes from a numpy generator keyed on (seed, purpose,
number), and no wall-clock time reaches the content. Batch ``n`` depends only on the batches
before it, so a longer run starts with the same files as a shorter one.
"""


from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ecom_stream.errors import ConfigError
from ecom_stream.tools.generate_stream import Catalogue, OrderStream, sale_days

__all__ = ["GenerateOptions", "generate", "sale_days"]




@dataclass(frozen=True)
class GenerateOptions:
    """What to generate and where; see the module docstring for the timeline."""

    out: Path
    batches: int = 10  # number of order batch files
    orders_per_batch: int = 1000
    products: int = 500  # catalogue size
    product_batches: int = 1  # products split over K files
    seed: int = 42
    interval: float = 0.0  # seconds between order batches (drip, for the demo)
    start: int = 1  # number of the first order file (so a demo can continue a series)
    catalogue: bool = True  # write the product files (False: the lake holds them already)
    start_date: date = date(2026, 1, 1)


def generate(options: GenerateOptions, *, on_file: Callable[[Path], None] | None = None,
             stop: threading.Event | None = None) -> list[Path]:
    """Writes product files first, then order batches; returns written paths."""
    _check(options)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def emit(name: str, rows: list[dict[str, Any]]) -> None:
        path = out / name
        _write_json_atomic(path, rows)
        written.append(path)
        if on_file is not None:
            on_file(path)

    catalogue = Catalogue(options)  # built anyway: order totals use its prices
    for k in range(1, options.product_batches + 1 if options.catalogue else 1):
        emit(f"products-{k:06d}.json", catalogue.file_rows(k))
    stream = OrderStream(options, catalogue)
    for i, n in enumerate(range(options.start, options.start + options.batches)):
        if stop is not None and stop.is_set():
            break
        if i and options.interval > 0 and _stopped_while_waiting(options.interval, stop):
            break
        emit(f"orders-{n:06d}.json", stream.batch(n))
    return written


def _write_json_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write a JSON array, one object per line, via ``.<name>.tmp`` + fsync + ``os.replace``."""
    encode = json.JSONEncoder(separators=(",", ":")).encode
    text = "[\n" + ",\n".join(map(encode, rows)) + "\n]\n" if rows else "[]\n"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check(options: GenerateOptions) -> None:
    """Reject options that cannot describe a source."""
    minimums = {"batches": 0, "orders_per_batch": 1, "products": 1, "product_batches": 1,
                "start": 1}
    for name, low in minimums.items():
        if getattr(options, name) < low:
            raise ConfigError(f"generate: {name} must be at least {low}")
    if options.product_batches > options.products:
        raise ConfigError("generate: product_batches cannot exceed products")
    if not options.interval >= 0:
        raise ConfigError("generate: interval must be >= 0")


def _stopped_while_waiting(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep; True when ``stop`` was set meanwhile."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


