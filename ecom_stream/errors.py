"""The exception tree of ecom-stream.

    EcomStreamError                 root: every error we raise on purpose
    ├── ConfigError                 a bad setting, flag or environment variable
    │   └── UsageError              a bad command line (exit 2, like argparse's own errors)
    ├── BatchError                  terminal for one batch file: it is quarantined
    │   ├── BatchReadError          unreadable: not UTF-8, invalid JSON, bad shape, too big, ...
    ├── LakeError                   the lake could not be read or written (transient)
    │   └── LakeCommitError         a Delta commit conflicted or failed
    ├── LakeDamagedError            a table's log or data files are damaged, or a rebuild
    │                               did not finish (never retried: rebuild into a new lake)
    ├── LockError                   another daemon already owns this lake
    └── ValidationSetupError        Great Expectations itself failed (a bug, never bad data)

Every class says whether it is ``transient`` (the same work may succeed if retried: the
daemon and backfill retry it with backoff) or terminal (retrying cannot help: a batch is
quarantined, a damaged lake or a bad setting stops the run). :func:`is_transient` also
classifies errors we did not raise: ``OSError`` (disk full, I/O error, a file busy) and a
Delta commit conflict are transient; anything else is terminal.

The CLI maps any ``EcomStreamError`` to a one-line message and exit code 1.
"""

from __future__ import annotations

import random
from typing import ClassVar

__all__ = [
    "BatchError",
    "BatchReadError",
    "ConfigError",
    "EcomStreamError",
    "LakeCommitError",
    "LakeDamagedError",
    "LakeError",
    "LockError",
    "UsageError",
    "ValidationSetupError",
    "is_transient",
    "retry_delay",
]


class EcomStreamError(Exception):
    """Root of every error ecom-stream raises on purpose."""

    transient: ClassVar[bool] = False
    """Whether retrying the same work may succeed (see :func:`is_transient`)."""


class ConfigError(EcomStreamError):
    """A setting, flag or environment variable has an invalid value."""


class UsageError(ConfigError):
    """The command line is wrong in a way argparse cannot check (exit code 2)."""


class BatchError(EcomStreamError):
    """A batch file cannot be merged; it goes to quarantine with ``reason``."""

    def __init__(self, reason: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


class BatchReadError(BatchError):
    """The file is not a readable batch (encoding, JSON syntax, shape, size, name)."""


class LakeError(EcomStreamError):
    """Reading or writing a Delta table failed; callers may retry."""

    transient = True


class LakeCommitError(LakeError):
    """A Delta commit failed (for example a concurrent writer)."""


class LakeDamagedError(EcomStreamError):
    """The lake is not what its writer left: a table log went back, a data file is missing or
    unreadable, or a rebuild did not finish. Not a ``LakeError``: retrying, or writing on top,
    would build on the damage; the message names the table and the way out."""


class LockError(EcomStreamError):
    """Another daemon holds the lake's lock."""


class ValidationSetupError(EcomStreamError):
    """Great Expectations raised inside an expectation: a bug to surface, not bad data."""


# Delta's own commit conflict, matched by name: nothing outside storage/ imports deltalake
# (its Rust core names the module ``_internal``).
_TRANSIENT_FOREIGN = frozenset({
    ("deltalake.exceptions", "CommitFailedError"), ("_internal", "CommitFailedError"),
})


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the work that raised ``exc`` may succeed.

    Our errors say so themselves (``transient``); an ``OSError`` or a Delta commit conflict
    is transient; everything else (a bug, a bad batch, damage, a bad setting) is terminal.
    """
    if isinstance(exc, EcomStreamError):
        return exc.transient
    if isinstance(exc, OSError):
        return True
    return any((c.__module__, c.__name__) in _TRANSIENT_FOREIGN for c in type(exc).__mro__)


def retry_delay(base_seconds: float, attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): doubling, times 0.5-1.5 so that
    writers failing for one shared cause (a full disk, a busy store) do not retry in lockstep."""
    return base_seconds * 2**attempt * random.uniform(0.5, 1.5)
