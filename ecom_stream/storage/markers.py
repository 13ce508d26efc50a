"""Small JSON files under the lake that describe work in flight: the micro-batch's arrivals,
an orders / order-lines merge pair, the daemon's heartbeat, the versions a writer left.

Callers name a marker by its kind; only this module and ``layout`` know where it lives, so
the object-storage backend can swap the files for objects without touching the engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from ecom_stream.storage.blobs import atomic_write
from ecom_stream.storage.layout import Layout

MarkerKind = Literal["inflight", "lines_inflight", "heartbeat", "versions"]


class Markers:
    """Read, write (atomically) and remove the lake's marker files by kind."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, kind: MarkerKind) -> Path:
        """Where the marker lives (for messages and tests; callers never open it)."""
        paths = {
            "inflight": self.layout.inflight_path,
            "lines_inflight": self.layout.lines_inflight_path,
            "heartbeat": self.layout.heartbeat_path,
            "versions": self.layout.versions_path,
        }
        return paths[kind]

    def write(self, kind: MarkerKind, payload: dict[str, Any], *, durable: bool = True) -> None:
        """Replace the marker with ``payload``; readers see the old or the new one, whole."""
        atomic_write(self.path(kind), json.dumps(payload).encode(), durable=durable)

    def read(self, kind: MarkerKind) -> dict[str, Any] | None:
        """The marker's payload, or None when it is absent or unreadable (a torn write cannot
        happen, so unreadable means someone else wrote it; treat it as absent)."""
        try:
            payload = json.loads(self.path(kind).read_text())
        except (OSError, ValueError):
            return None
        return payload if isinstance(payload, dict) else None

    def exists(self, kind: MarkerKind) -> bool:
        return self.path(kind).exists()

    def remove(self, kind: MarkerKind) -> None:
        self.path(kind).unlink(missing_ok=True)
