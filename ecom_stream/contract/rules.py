"""The data-quality rule catalogue: every rule is written once, here.

Each :class:`Rule` names its policy key, entity, default policy, the Great Expectations
expectations that decide it (its :class:`Part` s), the vectorised mask of failing rows that
row-level decisions cross-check, the failure text used in verdicts (the rejected-row reason is
the rule's name) and a one-line description for the README table. Derived from :data:`RULES`:
``config.default_policies()``, the validator's checks, the GX suites (``quality/gx.py``),
``clean.row_rules``, :data:`REQUIRED_FIELDS` and the README table. A rule of one's own is a
:class:`Rule` passed in ``Settings(extra_rules=...)`` (see ``contract/user_rules.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ecom_stream.contract.schema import CATEGORIES, ORDER_STATUSES

__all__ = [
    "FILE_LEVEL",
    "REQUIRED_FIELDS",
    "RULES",
    "Part",
    "Rule",
    "default_policies",
    "readme_table",
    "row_masks",
    "rules_of",
]

FILE_LEVEL = ("required_columns", "missing_share")
"""Name suffixes of the rules decided per file (a share or a column set), not per row."""

FRAME_KINDS = ("array", "float", "bool", "naive_utc", "title", "lower", "passes")
"""How a GX-frame column is computed from its source (see ``quality/gx.py``): the typed
column as is, as float64 / bool / naive UTC datetimes, title-cased / stripped lower-case
text, or (``passes``) the negated row mask of the rule named by the source."""


@dataclass(frozen=True)
class Part:
    """One expectation of an entity's GX suite and the GX-frame columns it reads.

    ``build`` gets the ``great_expectations.expectations`` module and returns the expectation;
    ``columns`` are ``(frame column, source, kind)`` triples, ``kind`` one of FRAME_KINDS.
    """

    tag: str
    build: Callable[[Any], Any]
    columns: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class Rule:
    """One policy key: the GX parts and row mask that decide it and how to describe failures.

    ``expectations`` are the parts this rule adds to the suite; ``uses`` tags of parts added
    by other rules that it also reads (a missing-share gate reads the not-null part). ``fails``
    maps the typed view to a boolean array of failing rows (None: GX alone decides).
    """

    name: str
    entity: str
    what: str
    policy: str = "drop-row"
    column: str | None = None
    expectations: tuple[Part, ...] = ()
    uses: tuple[str, ...] = ()
    fails: Callable[[Any], Any] | None = None
    sample_columns: tuple[str, ...] = ()
    description: str = ""
    required: tuple[str, ...] = ()
    """The columns a ``*_required_columns`` rule requires."""

    @property
    def kind(self) -> str:
        """``required_columns``, ``missing_share`` (file-level) or ``row``."""
        return next((k for k in FILE_LEVEL if self.name.endswith(k)), "row")

    @property
    def parts(self) -> tuple[str, ...]:
        """Tags of every GX part whose failing rows are this rule's."""
        return tuple(p.tag for p in self.expectations) + self.uses

    @property
    def reason(self) -> str:
        """What a rejected row's ``reason`` says: the rule's name."""
        return self.name


def _known(values: Iterable[str]) -> str:
    return ", ".join(values)


def _not_null(tag: str, column: str, source: str | None = None, kind: str = "array") -> Part:
    return Part(tag, lambda E: E.ExpectColumnValuesToNotBeNull(column=column),
                ((column, source or column, kind),))


def _flag(column: str) -> Part:
    """The typed view's boolean flag ``column`` (True: the row passes) is all True."""
    return Part(column, lambda E: E.ExpectColumnValuesToBeInSet(column=column, value_set=[True]),
                ((column, column, "bool"),))


def _unflagged(column: str) -> Callable[[Any], Any]:
    return lambda t: ~t[column].to_numpy()


def _null(column: str) -> Callable[[Any], Any]:
    return lambda t: t[column].isna().to_numpy()


_Q, _D, _W = "quarantine-batch", "drop-row", "warn"
_PRICE_NOT_NULL = _not_null("price_not_null", "price", kind="float")
_TOTAL_NOT_NULL = _not_null("total_not_null", "total", kind="float")

RULES: tuple[Rule, ...] = (
    # products
    Rule("products_required_columns", "products", "missing required column(s)", _Q,
         required=("product_id", "name", "price"),
         description="every required column is present in the file"),
    Rule("products_price_missing_share", "products", "price missing or unparseable", _Q, "price",
         uses=("price_not_null",), sample_columns=("price", "price_raw_missing"),
         description="share of rows without a usable price stays under the limit"),
    Rule("products_product_id_valid_key", "products", "product_id missing or not a JSON integer",
         _D, "product_id", (_not_null("product_id_not_null", "product_id"),),
         fails=_null("product_id"), sample_columns=("product_id",),
         description="product_id is a JSON integer"),
    Rule("products_price_positive", "products", "price missing, unparseable or not > 0", _D,
         "price", (_PRICE_NOT_NULL, Part(
             "price_positive", lambda E: E.ExpectColumnValuesToBeBetween(
                 column="price", min_value=0, strict_min=True), (("price", "price", "float"),))),
         fails=lambda t: ~(t["price"] > 0).to_numpy(), sample_columns=("price",),
         description="price is present and > 0"),
    Rule("products_price_below_max", "products",
         "price not below {settings.max_price:g} (ECOM_MAX_PRICE)", _D, "price",
         (_flag("price_in_bounds"),), fails=_unflagged("price_in_bounds"),
         sample_columns=("price",), description="price is below ECOM_MAX_PRICE"),
    Rule("products_stock_non_negative_integer", "products",
         "stock not a non-negative integer below {settings.max_stock:,} (ECOM_MAX_STOCK)", _D,
         "stock", (_flag("stock_valid"),), fails=_unflagged("stock_valid"),
         sample_columns=("stock",),
         description="stock is a non-negative integer below ECOM_MAX_STOCK"),
    Rule("products_rating_between_1_and_5", "products", "rating outside 1..5", _W, "rating",
         (Part("rating_1_to_5", lambda E: E.ExpectColumnValuesToBeBetween(
             column="rating", min_value=1, max_value=5), (("rating", "rating", "float"),)),),
         sample_columns=("rating",), description="rating is within 1..5"),
    Rule("products_category_known", "products",
         f"category missing or not one of {_known(CATEGORIES)}", _W, "category",
         (_not_null("category_not_null", "category_clean", "category", "title"),
          Part("category_known", lambda E: E.ExpectColumnValuesToBeInSet(
              column="category_clean", value_set=list(CATEGORIES)),
              (("category_clean", "category", "title"),))),
         sample_columns=("category",), description="category is one of the known categories"),
    # orders
    Rule("orders_required_columns", "orders", "missing required column(s)", _Q,
         required=("order_id", "customer_id", "product_ids", "quantities", "total", "status",
                   "created_at"),
         description="every required column is present in the file"),
    Rule("orders_total_missing_share", "orders", "total missing or unparseable", _Q, "total",
         uses=("total_not_null",), sample_columns=("total", "total_raw_missing"),
         description="share of rows without a usable total stays under the limit"),
    Rule("orders_order_id_valid_key", "orders", "order_id missing or not a JSON integer", _D,
         "order_id", (_not_null("order_id_not_null", "order_id"),), fails=_null("order_id"),
         sample_columns=("order_id",), description="order_id is a JSON integer"),
    Rule("orders_customer_id_present", "orders", "customer_id missing or not a JSON integer", _D,
         "customer_id", (_not_null("customer_id_not_null", "customer_id"),),
         fails=_null("customer_id"), sample_columns=("customer_id",),
         description="customer_id is a JSON integer"),
    Rule("orders_total_non_negative", "orders", "total missing, unparseable or negative", _D,
         "total", (_TOTAL_NOT_NULL, Part(
             "total_non_negative", lambda E: E.ExpectColumnValuesToBeBetween(
                 column="total", min_value=0), (("total", "total", "float"),))),
         fails=lambda t: ~(t["total"] >= 0).to_numpy(), sample_columns=("total",),
         description="total is present and >= 0"),
    Rule("orders_total_below_max", "orders",
         "total not below {settings.max_total:g} (ECOM_MAX_TOTAL)", _D, "total",
         (_flag("total_in_bounds"),), fails=_unflagged("total_in_bounds"),
         sample_columns=("total",), description="total is below ECOM_MAX_TOTAL"),
    Rule("orders_lines_well_formed", "orders",
         "product_ids/quantities not equal-length non-empty integer lists (quantities >= 1)", _D,
         "product_ids", (_flag("lines_valid"),), fails=_unflagged("lines_valid"),
         description="product_ids and quantities are equal-length non-empty integer lists"),
    Rule("orders_quantities_below_max", "orders",
         "a quantity not below {settings.max_quantity:,} (ECOM_MAX_QUANTITY)", _D, "quantities",
         (_flag("quantities_in_bounds"),), fails=_unflagged("quantities_in_bounds"),
         sample_columns=("quantities",), description="every quantity is below ECOM_MAX_QUANTITY"),
    Rule("orders_created_at_parseable", "orders", "created_at missing or not an ISO-8601 timestamp",
         _D, "created_at", (_not_null("created_at_not_null", "created_at", kind="naive_utc"),),
         fails=_null("created_at"), sample_columns=("created_at",),
         description="created_at is an ISO-8601 timestamp"),
    Rule("orders_created_at_in_window", "orders",
         "created_at before {settings.earliest_order_date} (ECOM_EARLIEST_ORDER_DATE) or "
         "more than {settings.max_days_ahead:g} day(s) after the file was received "
         "(ECOM_MAX_DAYS_AHEAD)", _D, "created_at", (_flag("created_at_in_window"),),
         fails=_unflagged("created_at_in_window"), sample_columns=("created_at",),
         description="created_at is within ECOM_EARLIEST_ORDER_DATE .. receipt + "
                     "ECOM_MAX_DAYS_AHEAD"),
    Rule("orders_status_known", "orders", f"status missing or not one of {_known(ORDER_STATUSES)}",
         _W, "status",
         (_not_null("status_not_null", "status_clean", "status", "lower"),
          Part("status_known", lambda E: E.ExpectColumnValuesToBeInSet(
              column="status_clean", value_set=list(ORDER_STATUSES)),
              (("status_clean", "status", "lower"),))),
         sample_columns=("status",), description="status is one of the known statuses"),
    Rule("orders_updated_after_created", "orders", "updated_at before created_at", _W,
         "updated_at",
         # naive UTC: GX's pair metric calls Series.values, deprecated for tz-aware columns
         (Part("updated_after_created", lambda E: E.ExpectColumnPairValuesAToBeGreaterThanB(
             column_A="updated_at", column_B="created_at", or_equal=True,
             ignore_row_if="either_value_is_missing"),
             (("created_at", "created_at", "naive_utc"),
              ("updated_at", "updated_at", "naive_utc"))),),
         sample_columns=("created_at", "updated_at"),
         description="updated_at is not before created_at"),
)

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    r.entity: r.required for r in RULES if r.kind == "required_columns"
}
"""The fields every record of an entity must have (else its file is quarantined)."""


def rules_of(entity: str, extra: Sequence[Rule] = ()) -> tuple[Rule, ...]:
    """The rules of one entity, in catalogue order, then the ``extra`` ones of that entity."""
    return tuple(r for r in (*RULES, *extra) if r.entity == entity)


def default_policies(extra: Sequence[Rule] = ()) -> dict[str, str]:
    """The default policy of every rule (and of the ``extra`` ones), by name."""
    return {r.name: r.policy for r in (*RULES, *extra)}


def row_masks(rules: Iterable[Rule], typed: Any) -> dict[str, Any]:
    """Boolean arrays of the failing rows of every rule with a mask, by rule name."""
    from ecom_stream.contract.user_rules import evaluate

    return {r.name: evaluate(r, typed) for r in rules if r.fails is not None}


def readme_table() -> str:
    """The README's rule table (Markdown), generated from the catalogue."""
    lines = ["| Rule | Default policy | Checks |", "| --- | --- | --- |"]
    lines += [f"| `{r.name}` | {r.policy} | {r.description} |" for r in RULES]
    return "\n".join(lines)
