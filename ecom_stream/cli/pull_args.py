"""The arguments of ``pull`` and ``serve-api`` (the REST source), apart from ``main.py``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Add = Callable[[str, str], argparse.ArgumentParser]
"""Adds one subcommand (name, help) and returns its parser."""


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``6h`` or ``3d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:])
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        message = f"{text!r} is not a duration (90, 90s, 15m, 6h, 3d)"
        raise argparse.ArgumentTypeError(message) from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration is 0 or more")
    return seconds


def add_pull_commands(add: Add) -> None:
    """``pull`` (a REST API into landing) and ``serve-api`` (the simulated source as one)."""
    p = add("pull", "pull products and orders from a REST API into landing as batch files")
    p.add_argument("--url", help="the API's base URL (env ECOM_PULL_URL)")
    p.add_argument("--once", action="store_true", help="pull what is new once and exit")
    p.add_argument(
        "--every", type=duration, metavar="SECONDS", help="seconds between pulls (default 30)"
    )
    p.add_argument("--page-size", type=int, metavar="N", help="records per page (default 1000)")
    p.add_argument(
        "--lag",
        type=duration,
        metavar="DURATION",
        help="re-read updates this much older than the newest seen (90s, 15m, 3d; default 0)",
    )
    p.add_argument("--create", action="store_true", help="create the landing folder if missing")

    p = add("serve-api", "serve the simulated source as a REST API on 127.0.0.1 (for pull)")
    p.add_argument(
        "--port", dest="api_port", type=int, default=8600, help="port (default 8600; 0: any)"
    )
    p.add_argument("--products", type=int, default=500, help="catalogue size (default 500)")
    p.add_argument("--batches", type=int, default=10, help="days of orders served at start")
    p.add_argument(
        "--orders-per-batch", type=int, default=1000, help="orders per day (default 1000)"
    )
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument(
        "--interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="add one more day of orders every SECONDS (default 0: a fixed set)",
    )
