"""A pytest plugin (entry point ``pytest11: ecom_stream``): fixtures for a temporary lake.

Fixtures: ``ecom_settings`` (Settings over ``tmp_path/landing`` and ``tmp_path/lake``),
``ecom_lake`` (that lake, opened), ``drop_batch`` (write a batch file into landing) and
``run_pipeline`` (process what landing holds once, returns a ``ProcessSummary``).
``ecom_rules`` (rules of one's own) and ``ecom_policies`` (policy overrides) feed
``ecom_settings``: override or parametrize them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ecom_stream.config import Settings, default_policies
from ecom_stream.contract.rules import Rule

if TYPE_CHECKING:
    from ecom_stream.api import ProcessSummary
    from ecom_stream.storage.lake import Lake

__all__ = [
    "drop_batch",
    "ecom_lake",
    "ecom_policies",
    "ecom_rules",
    "ecom_settings",
    "run_pipeline",
]

# Longest name written through a temporary name: atomic_write's ``.<name>.<pid>.tmp`` must
# still fit in 255 bytes; longer names (tests of odd names) are written in place.
_MAX_ATOMIC_NAME_BYTES = 230


@pytest.fixture
def ecom_rules() -> Sequence[Rule]:
    """Rules of your own (``ecom_stream.Rule``) that ``ecom_settings`` checks besides the
    built-in ones: none here; override this fixture, or parametrize it, to return yours."""
    return ()


@pytest.fixture
def ecom_policies() -> Mapping[str, str]:
    """Policies by rule name that ``ecom_settings`` sets over the defaults (built-in rules and
    ``ecom_rules`` alike): none here; override or parametrize it."""
    return {}


@pytest.fixture
def ecom_settings(
    tmp_path: Path, ecom_rules: Sequence[Rule], ecom_policies: Mapping[str, str]
) -> Settings:
    """Default settings (no ``ECOM_*`` variables) over a fresh landing folder and lake path,
    with ``ecom_rules`` and ``ecom_policies``."""
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    return Settings(
        landing_dir=landing, lake_dir=lake, extra_rules=tuple(ecom_rules),
        policies={**default_policies(), **ecom_policies},
    )


@pytest.fixture
def ecom_lake(ecom_settings: Settings) -> Lake:
    """The temporary lake of ``ecom_settings``, created empty."""
    from ecom_stream.api import open_lake

    return open_lake(ecom_settings.lake_dir, ecom_settings)


@pytest.fixture
def drop_batch(ecom_settings: Settings) -> Callable[..., Path]:
    """``drop_batch(name, records, *, folder=None, lines=False) -> Path``.

    Writes ``records`` (a list of dicts) as a JSON array, or JSON lines when ``lines``, into
    landing (or ``folder``), atomically, so a running daemon never reads half a file. ``name``
    is a file name (``"orders-001.json"``) or just ``"orders"`` / ``"products"``, which gets a
    fresh numbered name.
    """
    numbers = count(1)

    def drop(
        name: str,
        records: Sequence[dict[str, Any]],
        *,
        folder: Path | None = None,
        lines: bool = False,
    ) -> Path:
        from ecom_stream.storage.lake import atomic_write

        if name in ("orders", "products"):
            name = f"{name}-{next(numbers):04d}.{'jsonl' if lines else 'json'}"
        target = (folder or ecom_settings.landing_dir) / name
        if lines:
            text = "\n".join(json.dumps(r) for r in records) + "\n"
        else:
            text = json.dumps(list(records))
        data = text.encode()
        if len(os.fsencode(name)) > _MAX_ATOMIC_NAME_BYTES:
            target.write_bytes(data)
        else:
            atomic_write(target, data, durable=False)
        return target

    return drop


@pytest.fixture
def run_pipeline(ecom_settings: Settings) -> Callable[..., ProcessSummary]:
    """``run_pipeline(keep=False) -> ProcessSummary``: process every batch file in landing once
    into the lake (as ``ecom-stream backfill`` does)."""

    def run(*, keep: bool = False) -> ProcessSummary:
        from ecom_stream.api import process_files
        from ecom_stream.service.status import backlog

        files = backlog(ecom_settings.landing_dir)
        return process_files(ecom_settings.lake_dir, files, ecom_settings, keep=keep)

    return run
