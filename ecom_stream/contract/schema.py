"""The data contract: entities, fields, keys, known values and the Arrow schema of each table."""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "ANOMALIES_SCHEMA",
    "CATEGORIES",
    "DAILY_REVENUE_SCHEMA",
    "ENTITIES",
    "KEYS",
    "LEDGER_SCHEMA",
    "ORDER_FIELDS",
    "ORDER_LINES_SCHEMA",
    "ORDER_STATUSES",
    "PRODUCT_FIELDS",
    "QUALITY_SCHEMA",
    "QUARANTINE_SCHEMA",
    "REJECTED_SCHEMA",
    "SILVER_ORDERS_SCHEMA",
    "SILVER_PRODUCTS_SCHEMA",
    "SOURCES_SCHEMA",
    "STATUS_RANK",
    "bronze_schema",
]

ENTITIES = ("products", "orders")
KEYS = {"products": "product_id", "orders": "order_id"}

PRODUCT_FIELDS = (
    "product_id",
    "name",
    "category",
    "price",
    "rating",
    "stock",
    "created_at",
    "updated_at",
)
ORDER_FIELDS = (
    "order_id",
    "customer_id",
    "product_ids",
    "quantities",
    "total",
    "status",
    "payment_method",
    "shipping_city",
    "created_at",
    "updated_at",
)
FIELDS = {"products": PRODUCT_FIELDS, "orders": ORDER_FIELDS}
CATEGORIES = ("Electronics", "Clothing", "Home", "Books", "Sports")
UNKNOWN_CATEGORY = "Unknown"
ALL_CATEGORIES = "All"
ORDER_STATUSES = ("pending", "confirmed", "shipped", "delivered", "cancelled")
UNKNOWN_STATUS = "unknown"
# Forward progress of an order; "cancelled" and "unknown" are outside the progression.
STATUS_RANK = {"pending": 0, "confirmed": 1, "shipped": 2, "delivered": 3}
PAYMENT_METHODS = ("credit_card", "paypal", "debit_card", "crypto")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PRICE_TIERS = ((25.0, "Budget"), (100.0, "Mid-Range"), (500.0, "Premium"), (float("inf"), "Luxury"))

TS = pa.timestamp("us", tz="UTC")


def __getattr__(name: str) -> object:
    # REQUIRED_FIELDS is derived from the rule catalogue (which imports this module).
    if name == "REQUIRED_FIELDS":
        from ecom_stream.contract.rules import REQUIRED_FIELDS

        return REQUIRED_FIELDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bronze_schema(entity: str) -> pa.Schema:
    """Bronze keeps every field as received, loosened to text (JSON text for non-strings)."""
    return pa.schema(
        [pa.field(name, pa.string()) for name in FIELDS[entity]]
        + [
            pa.field("_rescued", pa.string()),
            pa.field("_batch_id", pa.string(), nullable=False),
            pa.field("_source_file", pa.string(), nullable=False),
            pa.field("_row_no", pa.int64(), nullable=False),
            pa.field("_ingested_at", TS, nullable=False),
            pa.field("_row_hash", pa.string(), nullable=False),
            # Which arrival of the file wrote the row: read only to recover from a crash.
            pa.field("_arrival_id", pa.string()),
        ]
    )


SILVER_PRODUCTS_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("category", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("price_tier", pa.string()),
        pa.field("rating", pa.float64()),
        pa.field("stock", pa.int64()),
        pa.field("created_at", TS),
        pa.field("updated_at", TS),
        pa.field("_version_ts", TS, nullable=False),
        pa.field("_row_hash", pa.string(), nullable=False),
    ]
)

SILVER_ORDERS_SCHEMA = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        pa.field("customer_id", pa.int64()),
        pa.field("product_ids", pa.list_(pa.int64())),
        pa.field("quantities", pa.list_(pa.int64())),
        pa.field("total", pa.float64()),
        pa.field("status", pa.string()),
        pa.field("payment_method", pa.string()),
        pa.field("shipping_city", pa.string()),
        pa.field("created_at", TS),
        pa.field("updated_at", TS),
        pa.field("order_date", pa.date32(), nullable=False),
        pa.field("order_month", pa.string()),
        pa.field("order_dow", pa.string()),
        pa.field("order_hour", pa.int64()),
        pa.field("n_items", pa.int64()),
        pa.field("_version_ts", TS, nullable=False),
        pa.field("_row_hash", pa.string(), nullable=False),
    ]
)

ORDER_LINES_SCHEMA = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),
        pa.field("product_id", pa.int64()),
        pa.field("quantity", pa.int64()),
        pa.field("order_date", pa.date32(), nullable=False),
        pa.field("order_month", pa.string(), nullable=False),
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("entity", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("row_no", pa.int64()),
        pa.field("key", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("rejected_at", TS),
        pa.field("arrival_id", pa.string()),
    ]
)

QUALITY_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("entity", pa.string()),
        pa.field("expectation", pa.string()),
        pa.field("column", pa.string()),
        pa.field("policy", pa.string()),
        pa.field("success", pa.bool_()),
        pa.field("observed_value", pa.string()),
        pa.field("unexpected_count", pa.int64()),
        pa.field("unexpected_percent", pa.float64()),
        pa.field("element_count", pa.int64()),
        pa.field("validated_at", TS),
        pa.field("arrival_id", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("quarantined_as", pa.string()),
        pa.field("entity", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("details", pa.string()),
        pa.field("quarantined_at", TS),
        pa.field("arrival_id", pa.string()),
    ]
)

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("arrival_id", pa.string(), nullable=False),
        pa.field("file_name", pa.string()),
        pa.field("entity", pa.string()),
        pa.field("outcome", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("rows_in", pa.int64()),
        pa.field("rows_merged", pa.int64()),
        pa.field("rows_rejected", pa.int64()),
        pa.field("rows_rescued", pa.int64()),
        pa.field("table_versions", pa.string()),
        pa.field("received_at", TS),
        pa.field("finished_at", TS),
        # When gold reflected the file: what the dashboard waits for (None: gold untouched).
        pa.field("gold_committed_at", TS),
        pa.field("read_ms", pa.float64()),
        pa.field("validate_ms", pa.float64()),
        pa.field("merge_ms", pa.float64()),
        pa.field("gold_ms", pa.float64()),
        pa.field("micro_batch_files", pa.int64()),
    ]
)

DAILY_REVENUE_SCHEMA = pa.schema(
    [
        pa.field("order_date", pa.date32(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("revenue", pa.float64()),
        pa.field("revenue_cents", pa.int64()),
        pa.field("orders", pa.int64()),
        pa.field("units", pa.int64()),
    ]
)

ANOMALIES_SCHEMA = pa.schema(
    [
        pa.field("order_date", pa.date32(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("revenue", pa.float64()),
        pa.field("rolling_mean", pa.float64()),
        pa.field("rolling_std", pa.float64()),
        pa.field("z_score", pa.float64()),
        pa.field("is_anomaly", pa.bool_()),
    ]
)

# One row per endpoint per pull of a REST source (``ecom-stream pull``): what the source said
# it had against what landed; what was merged is looked up in the ledger by file name.
SOURCES_SCHEMA = pa.schema(
    [
        pa.field("pull_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("endpoint", pa.string()),
        pa.field("started_at", TS),
        pa.field("finished_at", TS),
        pa.field("updated_since", pa.string()),
        pa.field("reported_total", pa.int64()),
        pa.field("records_landed", pa.int64()),
        # Served again at the previous pull's newest instant, already landed: not written.
        pa.field("records_skipped", pa.int64()),
        # Went on with the traversal of a pull that failed or was stopped.
        pa.field("resumed", pa.bool_()),
        pa.field("distinct_keys", pa.int64()),
        pa.field("pages", pa.int64()),
        pa.field("files", pa.list_(pa.string())),
        pa.field("outcome", pa.string()),
        pa.field("error", pa.string()),
    ]
)
