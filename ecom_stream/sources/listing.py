"""Listing the landing folder: what is waiting, in the order it is processed.

Kept apart from ``landing.py`` so that readers of the backlog (``status``, the dashboard,
``backfill``) do not import watchdog."""

from __future__ import annotations

from pathlib import Path

from ecom_stream.transform.parse import classify


def backlog(landing: Path) -> list[Path]:
    """Batch files waiting in landing (temporary names and folders excluded), in name order."""
    if not landing.is_dir():
        return []
    return sorted(
        p
        for p in landing.iterdir()
        if classify(p.name).action != "ignore" and (p.is_symlink() or not p.is_dir())
    )


def products_first(path: Path) -> tuple[bool, str]:
    """Sort key: product files before order files (orders price from products), then by name."""
    return (not path.name.lower().startswith("products"), path.name)
