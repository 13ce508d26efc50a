"""The exception tree of ecom-stream.

    EcomStreamError                 root: every error we raise on purpose
    ├── ConfigError                 a bad setting, flag or environment variable
    │   └── UsageError              a bad command line (exit 2, like argparse's own errors)
    ├── BatchError                  terminal for one batch file: it is quarantined
    │   ├── BatchReadError          unreadable: not UTF-8, invalid JSON, bad shape, too big, ...
    │   └── BatchValidationError    readable, but failed a quarantine-batch expectation
    ├── LakeError                   the lake could not be read or written (transient: retried)
    │   └── LakeCommitError         a Delta commit conflicted or failed
    ├── LakeDamagedError            a table's log or data files are damaged, or a rebuild
    │                               did not finish (never retried: rebuild into a new lake)
    ├── LockError                   another daemon already owns this lake
    └── ValidationSetupError        Great Expectations itself failed (a bug, never bad data)

The CLI maps any ``EcomStreamError`` to a one-line message and exit code 1.
"""

from __future__ import annotations

__all__ = [
    "BatchError",
    "BatchReadError",
    "BatchValidationError",
    "ConfigError",
    "EcomStreamError",
    "LakeCommitError",
    "LakeDamagedError",
    "LakeError",
    "LockError",
    "UsageError",
    "ValidationSetupError",
]


class EcomStreamError(Exception):
    """Root of every error ecom-stream raises on purpose."""


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


class BatchValidationError(BatchError):
    """The batch failed an expectation whose policy is quarantine-batch."""


class LakeError(EcomStreamError):
    """Reading or writing a Delta table failed; callers may retry."""


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
