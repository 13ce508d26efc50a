"""ecom-stream: incremental e-commerce pipeline (JSON -> Great Expectations -> Delta Lake).

The public API is re-exported here; ``ecom_stream.api`` imports its heavy modules lazily, so
importing this package stays fast.
"""

from ecom_stream.api import (
    PUBLIC_TABLES,
    ProcessSummary,
    backfill,
    open_lake,
    process_files,
    read_table,
    run_daemon,
)
from ecom_stream.config import Settings
from ecom_stream.contract.rules import Part, Rule
from ecom_stream.errors import (
    BatchError,
    BatchReadError,
    ConfigError,
    EcomStreamError,
    LakeCommitError,
    LakeDamagedError,
    LakeError,
    LockError,
    UsageError,
    ValidationSetupError,
)

__version__ = "0.1.0"
__all__ = [
    "PUBLIC_TABLES",
    "BatchError",
    "BatchReadError",
    "ConfigError",
    "EcomStreamError",
    "LakeCommitError",
    "LakeDamagedError",
    "LakeError",
    "LockError",
    "Part",
    "ProcessSummary",
    "Rule",
    "Settings",
    "UsageError",
    "ValidationSetupError",
    "__version__",
    "backfill",
    "open_lake",
    "process_files",
    "read_table",
    "run_daemon",
]
