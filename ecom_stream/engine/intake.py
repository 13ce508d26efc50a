"""The identity of a landed file: its batch and arrival ids, the hints of quarantine, its pieces."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ecom_stream.transform.parse import array_chunks, line_chunks


def file_stamp(path: Path) -> str:
    try:
        st = os.lstat(path)
    except OSError:
        return "gone"
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def arrival_id_of(batch_id: str, path: Path) -> str:
    """Identifies one arrival of a file (its bytes, name and inode), stable across restarts."""
    stamp = file_stamp(path)
    # fsencode: a name need not be valid UTF-8 (the same bytes as .encode() for one that is).
    key = f"{batch_id}:".encode() + os.fsencode(path.name) + f":{stamp}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


# What the reason file tells a person to do, by cause; each must be true (see requeue).
FIX_CONTENT = (
    "fix the file, then `ecom-stream requeue NAME` (or drop the fixed file into landing; "
    "the same bytes under any name are a duplicate until requeued)"
)
FIX_NAME = (
    "rename it: `ecom-stream requeue NAME --as NEW`, NEW starting with products or orders and "
    "ending in .json, .jsonl or .ndjson (or drop the file into landing under such a name)"
)
FIX_OUTSIDE = (
    "fix the cause the reason names (a setting, the permissions, a split), then "
    "`ecom-stream requeue NAME` (or drop the file into landing again)"
)
FIX_SPECIAL = (
    "only regular files are read: write the batch into landing as a regular file "
    "(`ecom-stream requeue NAME` would bring back the same entry, quarantined again)"
)
FIX_LINK = (
    "links are never followed: copy the file itself into landing "
    "(`ecom-stream requeue NAME` only removes the link)"
)


def unread_batch_id(data: bytes | None, path: Path, *extra: str) -> str:
    """The id of a batch recorded for its name or a cause outside its bytes: bytes and name
    (and ``extra``) together, so the same bytes under a fixed name are a new batch."""
    parts = [data or b"", os.fsencode(path.name), *(os.fsencode(e) for e in extra)]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def piece_arrival(arrival: str, k: int) -> str:
    """The arrival id under which piece ``k`` of a large file appends its rows."""
    return hashlib.sha256(f"{arrival}:piece:{k}".encode()).hexdigest()[:32]


def pieces_of(data: bytes, fmt: str, max_rows: int) -> list[tuple[int, int, int]] | None:
    """How to cut a file of more rows than a micro-batch holds (None: read it whole).
    A file of at most 40 bytes a row of the bound is read whole without a scan: its
    records are too small to weigh on memory whatever their count."""
    if len(data) <= max_rows * 40:
        return None
    if fmt == "lines":
        if data.count(b"\n") < max_rows:
            return None
        pieces = line_chunks(data, max_rows)
        return pieces if len(pieces) > 1 else None
    return array_chunks(data, max_rows)
