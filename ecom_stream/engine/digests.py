"""Compact sets of hex digests (batch ids, arrival ids) for a process that runs for months."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["DigestSet"]


class DigestSet:
    """Membership of hex digests by their first 64 bits (other strings: a 64-bit hash).

    About 8 bytes a member instead of ~150 for a ``set`` of ``str``: a daemon keeps one entry
    per file it ever handled. Two digests share a prefix with odds of about n / 2**64, so a hit
    means "probably": callers confirm hits where a wrong answer would cost data.
    """

    _MERGE_AT = 4096  # new members wait in a small set, then join the sorted array

    def __init__(self, digests: Iterable[str] = ()) -> None:
        self._sorted = np.unique(np.fromiter(map(_prefix, digests), dtype=np.uint64))
        self._recent: set[int] = set()

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and self._has(_prefix(digest))

    def _has(self, key: int) -> bool:
        if key in self._recent:
            return True
        i = int(np.searchsorted(self._sorted, np.uint64(key)))
        return i < len(self._sorted) and int(self._sorted[i]) == key

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def add(self, digest: str) -> None:
        key = _prefix(digest)
        if self._has(key):
            return
        self._recent.add(key)
        if len(self._recent) >= self._MERGE_AT:
            fresh = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            self._sorted = np.union1d(self._sorted, fresh)
            self._recent.clear()

    def discard(self, digest: str) -> None:
        key = _prefix(digest)
        self._recent.discard(key)
        i = int(np.searchsorted(self._sorted, np.uint64(key)))
        if i < len(self._sorted) and int(self._sorted[i]) == key:
            self._sorted = np.delete(self._sorted, i)


def _prefix(digest: str) -> int:
    """The first 64 bits of a hex digest; any other text is hashed to 64 bits."""
    try:
        return int(digest[:16], 16)
    except ValueError:
        return int.from_bytes(hashlib.blake2b(digest.encode(), digest_size=8).digest(), "big")
