"""The simulated source's content: the catalogue, the order stream and its sale days.

Every draw comes from a numpy generator keyed on (seed, purpose, number); see ``generate`` for
the timeline and the mess.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ecom_stream.contract.schema import CATEGORIES, ORDER_STATUSES, PAYMENT_METHODS, STATUS_RANK

if TYPE_CHECKING:
    from ecom_stream.tools.generate import GenerateOptions

__all__ = ["Catalogue", "OrderStream", "sale_days"]

HOUR, DAY = 3600, 86400
BATCH_SECONDS = DAY  # one order batch per simulated day
UPDATE_HORIZON = 14 * DAY  # orders are updated (re-sent) for at most 14 days after creation

CATEGORY_SHARE = {"Electronics": 0.30, "Clothing": 0.25, "Home": 0.20, "Books": 0.15,
                  "Sports": 0.10}
PRICE_RANGE = {
    "Electronics": (50.0, 1500.0), "Clothing": (10.0, 200.0), "Home": (15.0, 500.0),
    "Books": (5.0, 60.0), "Sports": (10.0, 400.0),
}
ITEMS = {
    "Electronics": ("Laptop", "Smartphone", "Headphones", "Tablet", "Smartwatch", "Camera",
                    "Monitor", "Speaker"),
    "Clothing": ("T-Shirt", "Jeans", "Jacket", "Sneakers", "Dress", "Hoodie", "Sweater", "Shorts"),
    "Home": ("Lamp", "Blender", "Cookware Set", "Bedding Set", "Vacuum", "Coffee Maker", "Rug",
             "Desk Chair"),
    "Books": ("Novel", "Cookbook", "Biography", "Textbook", "Graphic Novel", "Travel Guide",
              "Poetry Collection", "Children's Book"),
    "Sports": ("Yoga Mat", "Dumbbells", "Tennis Racket", "Running Shoes", "Bike Helmet", "Football",
               "Camping Tent", "Fitness Tracker"),
}
BRANDS = {
    "Electronics": ("Voltix", "Nexora", "Pixelon", "Sonara", "Quantix", "Zentro"),
    "Clothing": ("Urbanite", "Threadly", "Nordwear", "Velora", "Kestrel", "Mapleline"),
    "Home": ("Hearthly", "Domio", "Casaluna", "Nestwell", "Brightnook", "Oakridge"),
    "Books": ("Penwright", "Inkwell", "Northlight", "Folio", "Papyrus", "Lanternfield"),
    "Sports": ("Stridex", "Peakform", "Vigora", "Trailblaze", "Apexa", "Kinetiq"),
}
STATUS_SHARE = {"pending": 0.05, "confirmed": 0.10, "shipped": 0.15, "delivered": 0.60,
                "cancelled": 0.10}
PAYMENT_SHARE = {"credit_card": 0.45, "paypal": 0.25, "debit_card": 0.22, "crypto": 0.08}
CITY_SHARE = {"New York": 0.25, "Los Angeles": 0.20, "Chicago": 0.17, "Houston": 0.15,
              "Phoenix": 0.12, "Philadelphia": 0.11}
LINES_SHARE = (0.50, 0.25, 0.13, 0.08, 0.04)  # 1..5 distinct products per order
# Relative orders per hour of day (UTC): quiet nights, busy afternoons and evenings.
HOUR_PROFILE = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 9, 10, 10, 10, 11, 12, 13, 14, 14, 12,
                         9, 6, 4], dtype=float)

# The tutorial's mess, per emitted record.
NAME_UPPER, NAME_PADDED = 0.05, 0.03
PRICE_NEGATIVE, PRICE_NA = 0.02, 0.02
CATEGORY_NULL, RATING_NULL, TOTAL_NULL = 0.03, 0.05, 0.01
ZONE_Z, ZONE_OFFSET = 0.005, 0.005  # a few timestamps end in "Z" or "+00:00"

LATE_SHARE = 0.02  # created 1-3 days before the batch window
RESEND_SHARE = 0.10  # of an order batch's rows: updates of earlier open orders
PRODUCT_RESEND_SHARE = 0.05  # of the catalogue, spread over product files 2..K
SALE_DAY_SHARE, SALE_WARMUP_DAYS = 0.04, 7  # no sale in the first week: the detector needs history

_STATUS_INDEX = {s: i for i, s in enumerate(ORDER_STATUSES)}
_OPEN_RANK = STATUS_RANK["delivered"]  # ranks below this can still progress
_PRODUCTS, _PRODUCT_RESENDS, _SALE_DAYS, _ORDERS = 1, 2, 3, 4  # independent random streams


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, number)."""
    return np.random.default_rng([seed % (1 << 64), *key])


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _iso(seconds: np.ndarray, rng: np.random.Generator) -> list[str]:
    """UTC ISO-8601 strings without a zone; a few carry "Z" or "+00:00"."""
    out = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").tolist()
    u = rng.random(len(out))
    for i in np.flatnonzero(u < ZONE_Z + ZONE_OFFSET).tolist():
        out[i] += "Z" if u[i] < ZONE_Z else "+00:00"
    return out


def _shares(table: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    p = np.array([table[n] for n in names])
    return p / p.sum()


class Catalogue:
    """The products: true prices (for order totals), categories, popularity and product files."""

    def __init__(self, options: GenerateOptions) -> None:
        self.options = options
        n, seed = options.products, options.seed
        rng = _rng(seed, _PRODUCTS)
        self.category = rng.choice(len(CATEGORIES), n, p=_shares(CATEGORY_SHARE, CATEGORIES))
        low, high = (np.array([PRICE_RANGE[c][i] for c in CATEGORIES]) for i in (0, 1))
        self.price = np.round(rng.uniform(low[self.category], high[self.category]), 2)
        item, brand = rng.integers(0, 8, n), rng.integers(0, 6, n)
        self.name = [f"{BRANDS[CATEGORIES[c]][b]} {ITEMS[CATEGORIES[c]][i]}"
                     for c, b, i in zip(self.category.tolist(), brand.tolist(), item.tolist(),
                                        strict=True)]
        self.rating = np.round(np.clip(rng.normal(3.8, 0.8, n), 1.0, 5.0), 1)
        self.stock = np.floor(rng.exponential(50.0, n)).astype(np.int64)
        # The catalogue as of the first order window of this run.
        self.as_of = _epoch(options.start_date) + (options.start - 1) * BATCH_SECONDS
        self.created = self.as_of - rng.integers(3 * DAY, 365 * DAY, n)
        self.updated = self.created + np.floor(
            rng.random(n) * (self.as_of - 2 * DAY - self.created)).astype(np.int64)
        weight = rng.lognormal(0.0, 0.7, n)
        self.weight = weight / weight.sum()
        self.created_iso = _iso(self.created, rng)
        self.bounds = np.linspace(0, n, options.product_batches + 1).round().astype(int)

    def file_rows(self, k: int) -> list[dict[str, Any]]:
        """The records of product file ``k``: its share of the catalogue, then re-sends."""
        rng = _rng(self.options.seed, _PRODUCT_RESENDS, k)
        ids = np.arange(self.bounds[k - 1], self.bounds[k])
        rows = self._rows(ids, self.updated[ids], rng)
        if k > 1:
            rows += self._resend(k, rng)
        return rows

    def _resend(self, k: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """About 5% of the catalogue over files 2..K: earlier products with a new price."""
        files, earlier = self.options.product_batches, int(self.bounds[k - 1])
        per_file = PRODUCT_RESEND_SHARE * self.options.products / (files - 1)
        count = min(earlier, max(1, round(per_file)))
        ids = np.sort(rng.choice(earlier, count, replace=False))
        change = rng.uniform(0.05, 0.30, count) * rng.choice([-1.0, 1.0], count)
        self.price[ids] = np.maximum(np.round(self.price[ids] * (1 + change), 2), 0.01)
        # File k's re-sends fall in its own slice of the two days before the catalogue date,
        # after every earlier version of the product.
        span, base = 2 * DAY - 1, self.as_of - 2 * DAY
        low = base + (k - 2) * span // (files - 1)
        high = max(base + (k - 1) * span // (files - 1), low + 1)
        self.updated[ids] = rng.integers(low, high, count)
        return self._rows(ids, self.updated[ids], rng)

    def _rows(self, ids: np.ndarray, updated: np.ndarray, rng: np.random.Generator
              ) -> list[dict[str, Any]]:
        """Product records for catalogue indexes ``ids``, with the mess applied."""
        m = len(ids)
        u_name, u_price = rng.random(m).tolist(), rng.random(m).tolist()
        no_category = (rng.random(m) < CATEGORY_NULL).tolist()
        no_rating = (rng.random(m) < RATING_NULL).tolist()
        pads = rng.integers(1, 4, (m, 2)).tolist()
        updated_iso = _iso(updated, rng)
        rows = []
        for j, i in enumerate(ids.tolist()):
            name, price = self.name[i], round(float(self.price[i]), 2)
            if u_name[j] < NAME_UPPER:
                name = name.upper()
            elif u_name[j] < NAME_UPPER + NAME_PADDED:
                name = " " * pads[j][0] + name + " " * pads[j][1]
            shown: float | str = price
            if u_price[j] < PRICE_NEGATIVE:
                shown = -price
            elif u_price[j] < PRICE_NEGATIVE + PRICE_NA:
                shown = "N/A"
            rows.append({
                "product_id": i + 1,
                "name": name,
                "category": None if no_category[j] else CATEGORIES[self.category[i]],
                "price": shown,
                "rating": None if no_rating[j] else round(float(self.rating[i]), 1),
                "stock": int(self.stock[i]),
                "created_at": self.created_iso[i],
                "updated_at": updated_iso[j],
            })
        return rows


class OrderStream:
    """Order batches in sequence, with a pool of open orders to re-send with progress."""

    def __init__(self, options: GenerateOptions, catalogue: Catalogue) -> None:
        self.options = options
        self.catalogue = catalogue
        self.epoch = _epoch(options.start_date)
        self.next_id = (options.start - 1) * options.orders_per_batch + 1
        # Open orders (pending, confirmed, shipped): parallel arrays plus the true records.
        self.ids = np.zeros(0, np.int64)
        self.created = np.zeros(0, np.int64)
        self.updated = np.zeros(0, np.int64)
        self.rank = np.zeros(0, np.int64)
        self.records: dict[int, dict[str, Any]] = {}

    def batch(self, n: int) -> list[dict[str, Any]]:
        """The rows of order file ``n``: new orders and re-sends, in ``updated_at`` order."""
        rng = _rng(self.options.seed, _ORDERS, n)
        start = self.epoch + (n - 1) * BATCH_SECONDS
        self._forget(self.created >= start + BATCH_SECONDS - UPDATE_HORIZON)
        wanted = round(RESEND_SHARE * self.options.orders_per_batch)
        old, old_updated = self._resend(min(wanted, len(self.ids)), start, rng)
        new, new_updated = self._new_orders(n, self.options.orders_per_batch - len(old), start, rng)
        rows, updated = old + new, np.concatenate([old_updated, new_updated])
        ids = np.array([r["order_id"] for r in rows], dtype=np.int64)
        iso, no_total = _iso(updated, rng), (rng.random(len(rows)) < TOTAL_NULL).tolist()
        out = []
        for j in np.lexsort((ids, updated)).tolist():
            row = {**rows[j], "updated_at": iso[j]}
            if no_total[j]:
                row["total"] = None
            out.append(row)
        return out

    def _forget(self, keep: np.ndarray) -> None:
        """Drop open orders outside ``keep`` from the pool."""
        for order_id in self.ids[~keep].tolist():
            del self.records[order_id]
        self.ids, self.created = self.ids[keep], self.created[keep]
        self.updated, self.rank = self.updated[keep], self.rank[keep]

    def _resend(self, count: int, start: int, rng: np.random.Generator
                ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Advance ``count`` open orders one status step, updated inside this batch window."""
        pick = rng.choice(len(self.ids), count, replace=False)
        when = np.maximum(start + rng.integers(0, BATCH_SECONDS, count), self.updated[pick] + 1)
        self.rank[pick] += 1
        self.updated[pick] = when
        rows = []
        for order_id, rank in zip(self.ids[pick].tolist(), self.rank[pick].tolist(), strict=True):
            record = self.records[order_id]
            record["status"] = ORDER_STATUSES[rank]
            rows.append(dict(record))
        self._forget(self.rank < _OPEN_RANK)
        return rows, when

    def _new_orders(self, n: int, m: int, start: int, rng: np.random.Generator
                    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """``m`` new orders created in batch ``n``'s window (a few arrive late)."""
        created = self._created(n, m, start, rng)
        lines = np.minimum(rng.choice(5, m, p=LINES_SHARE) + 1, self.options.products)
        picks = self._picks(n, lines, rng)  # on a sale day, adds lines
        qty = rng.integers(1, 4, (m, 5))
        used = np.arange(5) < lines[:, None]
        totals = (self.catalogue.price[picks] * qty * used).sum(axis=1).tolist()
        status = rng.choice(len(ORDER_STATUSES), m, p=_shares(STATUS_SHARE, ORDER_STATUSES))
        pending = status == _STATUS_INDEX["pending"]
        delay = np.floor(rng.random(m) * (start + BATCH_SECONDS - 1 - created)).astype(np.int64)
        updated = np.where(pending, created, created + delay)
        customer = rng.integers(1, 2001, m).tolist()
        payment = rng.choice(len(PAYMENT_METHODS), m, p=_shares(PAYMENT_SHARE, PAYMENT_METHODS))
        cities = tuple(CITY_SHARE)
        city = rng.choice(len(cities), m, p=_shares(CITY_SHARE, cities)).tolist()
        created_iso, ids = _iso(created, rng), range(self.next_id, self.next_id + m)
        self.next_id += m
        pid_rows, qty_rows, n_lines = (picks + 1).tolist(), qty.tolist(), lines.tolist()
        names = [ORDER_STATUSES[s] for s in status.tolist()]
        methods = [PAYMENT_METHODS[p] for p in payment.tolist()]
        rows = [{
            "order_id": order_id,
            "customer_id": customer[j],
            "product_ids": pid_rows[j][:n_lines[j]],
            "quantities": qty_rows[j][:n_lines[j]],
            "total": round(totals[j], 2),
            "status": names[j],
            "payment_method": methods[j],
            "shipping_city": cities[city[j]],
            "created_at": created_iso[j],
        } for j, order_id in enumerate(ids)]
        self._remember(rows, created, updated, status)
        return rows, updated

    def _remember(self, rows: list[dict[str, Any]], created: np.ndarray, updated: np.ndarray,
                  status: np.ndarray) -> None:
        """Add the new orders that can still progress to the pool."""
        rank = np.array([STATUS_RANK.get(s, _OPEN_RANK) for s in ORDER_STATUSES])[status]
        open_ = np.flatnonzero(rank < _OPEN_RANK)
        for j in open_.tolist():
            self.records[rows[j]["order_id"]] = dict(rows[j])
        ids = np.array([rows[j]["order_id"] for j in open_.tolist()], dtype=np.int64)
        self.ids = np.concatenate([self.ids, ids])
        self.created = np.concatenate([self.created, created[open_]])
        self.updated = np.concatenate([self.updated, updated[open_]])
        self.rank = np.concatenate([self.rank, rank[open_]])

    def _created(self, n: int, m: int, start: int, rng: np.random.Generator) -> np.ndarray:
        """Creation times in the window by the hour profile, sorted; ~2% moved 1-3 days back."""
        profile = HOUR_PROFILE / HOUR_PROFILE.sum()
        seconds = rng.choice(24, m, p=profile) * HOUR + rng.integers(0, HOUR, m)
        created = start + np.sort(seconds)
        late = rng.random(m) < LATE_SHARE
        return created - late * rng.integers(DAY, 3 * DAY + 1, m)

    def _picks(self, n: int, lines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Product indexes, shape (m, 5); the first ``lines[i]`` of row i are distinct."""
        weight = self.catalogue.weight
        picks = rng.choice(len(weight), (len(lines), 5), p=weight)
        sale = _sale_category(self.options.seed, n - 1)
        if sale is not None:
            self._add_sale_lines(sale, lines, picks, rng)
        used = np.arange(5) < lines[:, None]
        clash = np.zeros(len(lines), dtype=bool)
        for a in range(5):
            for b in range(a + 1, 5):
                clash |= used[:, b] & (picks[:, a] == picks[:, b])
        for i in np.flatnonzero(clash).tolist():
            row = picks[i, :lines[i]]
            dup = np.setdiff1d(np.arange(len(row)), np.unique(row, return_index=True)[1])
            free = weight.copy()
            free[row] = 0.0
            row[dup] = rng.choice(len(weight), len(dup), replace=False, p=free / free.sum())
        return picks

    def _add_sale_lines(self, sale: int, lines: np.ndarray, picks: np.ndarray,
                        rng: np.random.Generator) -> None:
        """A sale doubles its category's lines: some baskets get one more product of it.

        Extra demand rather than a shift of shares, so the other categories do not dip.
        """
        in_sale = self.catalogue.category == sale
        share = float(self.catalogue.weight[in_sale].sum())
        room = lines < min(5, len(in_sale))
        if share == 0 or not room.any():
            return
        chance = min(1.0, share * float(lines.sum()) / float(room.sum()))
        rows = np.flatnonzero(room & (rng.random(len(lines)) < chance))
        weight = np.where(in_sale, self.catalogue.weight, 0.0)
        picks[rows, lines[rows]] = rng.choice(len(weight), len(rows), p=weight / weight.sum())
        lines[rows] += 1


def _sale_category(seed: int, day: int) -> int | None:
    """The category on sale on simulated ``day`` (0 = start_date), or None: ~1 day in 25."""
    if day < SALE_WARMUP_DAYS:
        return None
    rng = _rng(seed, _SALE_DAYS, day)
    if rng.random() >= SALE_DAY_SHARE:
        return None
    return int(rng.integers(0, len(CATEGORIES)))


def sale_days(seed: int, days: int) -> dict[int, str]:
    """Sale days among the first ``days`` simulated days: day number -> category on sale."""
    return {d: CATEGORIES[c] for d in range(days) if (c := _sale_category(seed, d)) is not None}
