"""The data-quality rule catalogue: every rule is written once, here.

Each :class:`Rule` names its policy key, entity, default policy, the Great Expectations
expectations that decide it (by tag, built in ``quality/validate.py``), the failure text used
in verdicts and rejected-row reasons, and a one-line description for the README table.
``config.default_policies()`` and the validator's check list are derived from :data:`RULES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ecom_stream.contract.schema import CATEGORIES, ORDER_STATUSES

__all__ = ["FILE_LEVEL", "RULES", "Rule", "default_policies", "readme_table", "rules_of"]

FILE_LEVEL = ("required_columns", "missing_share")
"""Name suffixes of the rules decided per file (a share or a column set), not per row."""


@dataclass(frozen=True)
class Rule:
    """One policy key: which GX expectations (by tag) decide it and how to describe failures."""

    name: str
    entity: str
    policy: str
    column: str | None
    parts: tuple[str, ...]
    what: str
    sample_columns: tuple[str, ...] = ()
    description: str = ""

    @property
    def kind(self) -> str:
        """``required_columns``, ``missing_share`` (file-level) or ``row``."""
        return next((k for k in FILE_LEVEL if self.name.endswith(k)), "row")


def _known(values: Iterable[str]) -> str:
    return ", ".join(values)


_Q, _D, _W = "quarantine-batch", "drop-row", "warn"

RULES: tuple[Rule, ...] = (
    # products
    Rule("products_required_columns", "products", _Q, None, (), "missing required column(s)",
         description="every required column is present in the file"),
    Rule("products_price_missing_share", "products", _Q, "price", ("price_not_null",),
         "price missing or unparseable", ("price", "price_raw_missing"),
         "share of rows without a usable price stays under the limit"),
    Rule("products_product_id_valid_key", "products", _D, "product_id",
         ("product_id_not_null",), "product_id missing or not a JSON integer", ("product_id",),
         "product_id is a JSON integer"),
    Rule("products_price_positive", "products", _D, "price", ("price_not_null", "price_positive"),
         "price missing, unparseable or not > 0", ("price",), "price is present and > 0"),
    Rule("products_price_below_max", "products", _D, "price", ("price_in_bounds",),
         "price not below {settings.max_price:g} (ECOM_MAX_PRICE)", ("price",),
         "price is below ECOM_MAX_PRICE"),
    Rule("products_stock_non_negative_integer", "products", _D, "stock", ("stock_valid",),
         "stock not a non-negative integer below {settings.max_stock:,} (ECOM_MAX_STOCK)",
         ("stock",), "stock is a non-negative integer below ECOM_MAX_STOCK"),
    Rule("products_rating_between_1_and_5", "products", _W, "rating", ("rating_1_to_5",),
         "rating outside 1..5", ("rating",), "rating is within 1..5"),
    Rule("products_category_known", "products", _W, "category",
         ("category_not_null", "category_known"),
         f"category missing or not one of {_known(CATEGORIES)}", ("category",),
         "category is one of the known categories"),
    # orders
    Rule("orders_required_columns", "orders", _Q, None, (), "missing required column(s)",
         description="every required column is present in the file"),
    Rule("orders_total_missing_share", "orders", _Q, "total", ("total_not_null",),
         "total missing or unparseable", ("total", "total_raw_missing"),
         "share of rows without a usable total stays under the limit"),
    Rule("orders_order_id_valid_key", "orders", _D, "order_id", ("order_id_not_null",),
         "order_id missing or not a JSON integer", ("order_id",), "order_id is a JSON integer"),
    Rule("orders_customer_id_present", "orders", _D, "customer_id", ("customer_id_not_null",),
         "customer_id missing or not a JSON integer", ("customer_id",),
         "customer_id is a JSON integer"),
    Rule("orders_total_non_negative", "orders", _D, "total",
         ("total_not_null", "total_non_negative"), "total missing, unparseable or negative",
         ("total",), "total is present and >= 0"),
    Rule("orders_total_below_max", "orders", _D, "total", ("total_in_bounds",),
         "total not below {settings.max_total:g} (ECOM_MAX_TOTAL)", ("total",),
         "total is below ECOM_MAX_TOTAL"),
    Rule("orders_lines_well_formed", "orders", _D, "product_ids", ("lines_valid",),
         "product_ids/quantities not equal-length non-empty integer lists (quantities >= 1)",
         description="product_ids and quantities are equal-length non-empty integer lists"),
    Rule("orders_quantities_below_max", "orders", _D, "quantities", ("quantities_in_bounds",),
         "a quantity not below {settings.max_quantity:,} (ECOM_MAX_QUANTITY)", ("quantities",),
         "every quantity is below ECOM_MAX_QUANTITY"),
    Rule("orders_created_at_parseable", "orders", _D, "created_at", ("created_at_not_null",),
         "created_at missing or not an ISO-8601 timestamp", ("created_at",),
         "created_at is an ISO-8601 timestamp"),
    Rule("orders_created_at_in_window", "orders", _D, "created_at", ("created_at_in_window",),
         "created_at before {settings.earliest_order_date} (ECOM_EARLIEST_ORDER_DATE) or "
         "more than {settings.max_days_ahead:g} day(s) after the file was received "
         "(ECOM_MAX_DAYS_AHEAD)", ("created_at",),
         "created_at is within ECOM_EARLIEST_ORDER_DATE .. receipt + ECOM_MAX_DAYS_AHEAD"),
    Rule("orders_status_known", "orders", _W, "status", ("status_not_null", "status_known"),
         f"status missing or not one of {_known(ORDER_STATUSES)}", ("status",),
         "status is one of the known statuses"),
    Rule("orders_updated_after_created", "orders", _W, "updated_at", ("updated_after_created",),
         "updated_at before created_at", ("created_at", "updated_at"),
         "updated_at is not before created_at"),
)


def rules_of(entity: str) -> tuple[Rule, ...]:
    """The rules of one entity, in catalogue order."""
    return tuple(r for r in RULES if r.entity == entity)


def default_policies() -> dict[str, str]:
    """The default policy of every rule, by name."""
    return {r.name: r.policy for r in RULES}


def readme_table() -> str:
    """The README's rule table (Markdown), generated from the catalogue."""
    lines = ["| Rule | Default policy | Checks |", "| --- | --- | --- |"]
    lines += [f"| `{r.name}` | {r.policy} | {r.description} |" for r in RULES]
    return "\n".join(lines)
