"""Where a large batch file is cut into pieces of at most so many rows, found by scanning
its bytes in blocks (through a ``Reader``: the file need not be in memory whole)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["BOM", "Reader", "array_chunks", "array_cuts", "line_chunks", "line_cuts"]

BOM = b"\xef\xbb\xbf"
# Reads ``length`` bytes of a file at ``offset`` (all of them unless the file ends first).
Reader = Callable[[int, int], bytes]
# Bytes a scan for cut points looks at a time (bounds its memory whatever the file's size).
_SCAN_BLOCK = 8 * 1024 * 1024
_SCAN_TABLE = np.zeros(256, dtype=bool)
_SCAN_TABLE[list(b'[]{}",')] = True


def _bytes_reader(data: bytes) -> Reader:
    return lambda offset, length: data[offset : offset + length]


def line_chunks(data: bytes, max_rows: int) -> list[tuple[int, int, int]]:
    """``line_cuts`` of bytes in memory."""
    return line_cuts(_bytes_reader(data), len(data), max_rows)


def line_cuts(read: Reader, size: int, max_rows: int) -> list[tuple[int, int, int]]:
    """A JSON Lines file of ``size`` bytes cut at line ends into pieces of at most
    ``max_rows`` lines, as (start, end, first line number); one piece when the file has no
    more lines than that. The newlines are found by a vectorised scan of 8 MB blocks read
    with ``read`` (no per-line objects, no whole file in memory)."""
    cuts = [0]
    seen, pos = 0, 0  # newlines before the block, the block's offset
    while pos < size:
        block = read(pos, min(_SCAN_BLOCK, size - pos))
        if not block:
            break
        ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
        # The file's newlines number max_rows, 2 * max_rows, ... (counted from 1).
        first = (-seen - 1) % max_rows
        cuts += [pos + int(e) + 1 for e in ends[first::max_rows] if pos + e + 1 < size]
        seen, pos = seen + len(ends), pos + len(block)
    bounds = [*cuts, size]
    return [(bounds[i], bounds[i + 1], i * max_rows + 1) for i in range(len(cuts))]


def array_chunks(data: bytes, max_rows: int) -> list[tuple[int, int, int]] | None:
    """``array_cuts`` of bytes in memory."""
    return array_cuts(_bytes_reader(data), len(data), max_rows)


def array_cuts(read: Reader, size: int, max_rows: int) -> list[tuple[int, int, int]] | None:
    """A JSON array of ``size`` bytes cut between top-level elements into pieces of at most
    ``max_rows`` elements, as (start, end, first element number): each piece parses as
    ``b"[" + data[start:end] + b"]"``. None when the file holds no more elements than that
    or is not one well-formed array (it is then parsed whole, which names its error).

    The top-level commas are found by a vectorised scan of 8 MB blocks read with ``read``
    (quotes, brackets and commas; escape pairs blanked out at equal length), so no
    per-element object is made and the file is never in memory whole.
    """
    n = size
    head = read(0, min(n, len(BOM) + 64))
    begin = len(BOM) if head.startswith(BOM) else 0
    head = head[begin : begin + 64]
    tail = read(max(0, n - 64), min(n, 64))
    if not head.lstrip().startswith(b"[") or not tail.rstrip().endswith(b"]"):
        return None
    commas: list[np.ndarray] = []
    inside, depth, pos = 0, 0, begin
    while pos < n:
        end = min(pos + _SCAN_BLOCK, n)
        block = read(pos, end - pos)
        while end < n and block[-1:] == b"\\":  # never split an escape pair
            block += read(end, 1)
            end += 1
        found = _top_level_commas(block, inside, depth, end >= n)
        if found is None:
            return None
        at, inside, depth = found
        commas.append(at + pos)
        pos = end
    if depth != 0 or inside:
        return None
    cuts = np.concatenate(commas) if commas else np.empty(0, np.int64)
    if len(cuts) < max_rows:
        return None
    bounds = cuts[max_rows - 1 :: max_rows].tolist()
    starts = [begin + head.index(b"[") + 1, *(c + 1 for c in bounds)]
    ends = [*bounds, n - len(tail) + tail.rindex(b"]")]
    return [(a, b, i * max_rows) for i, (a, b) in enumerate(zip(starts, ends, strict=True))]


def _top_level_commas(
    block: bytes, inside: int, depth: int, last: bool
) -> tuple[np.ndarray, int, int] | None:
    """One block's top-level commas (offsets in the block) and the string and nesting state
    after it; None when a bracket closes the array before the file's last one."""
    if b"\\" in block:
        block = block.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    arr = np.frombuffer(block, dtype=np.uint8)
    idx = np.flatnonzero(_SCAN_TABLE[arr])
    chars = arr[idx]
    quotes = chars == 0x22
    parity = (np.cumsum(quotes) + inside) % 2
    if len(parity):
        inside = int(parity[-1])
    outside = (parity == 0) & ~quotes
    idx, chars = idx[outside], chars[outside]
    step = np.where((chars == 0x5B) | (chars == 0x7B), 1, 0) - np.where(
        (chars == 0x5D) | (chars == 0x7D), 1, 0
    )
    levels = np.cumsum(step) + depth
    closed = np.flatnonzero(levels <= 0)
    # Only the file's last bracket may close the array.
    if len(closed) and not (last and closed.tolist() == [len(levels) - 1]):
        return None
    if len(levels):
        depth = int(levels[-1])
    return idx[(chars == 0x2C) & (levels == 1)], inside, depth
