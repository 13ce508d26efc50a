"""ecom-stream: incremental e-commerce pipeline (JSON -> Great Expectations -> Delta Lake)."""

from ecom_stream.config import Settings
from ecom_stream.errors import EcomStreamError

__version__ = "0.1.0"
__all__ = ["EcomStreamError", "Settings", "__version__"]
