"""A REST API as a source: the contract (parameter and field names) and one page fetched with
retries.

Transient faults (a refused or dropped connection, a timeout, 429, 5xx, and a 200 whose body
is cut short or is not the JSON the contract describes) are retried with jittered
exponential backoff, honouring ``Retry-After``; a page that keeps failing raises
:class:`PullError`. A page is only ever returned whole and parsed: nothing half-read reaches
landing.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError, EcomStreamError, retry_delay

__all__ = ["ApiContract", "Page", "PullError", "PullStopped", "fetch_page", "make_client"]

logger = logging.getLogger(__name__)

PAGING = ("cursor", "page", "offset")


class PullError(EcomStreamError):
    """A page of the API could not be fetched (after its retries) or is refused for good."""


class PullStopped(PullError):
    """A stop signal came while a page waited for its retry (raised by the ``sleep``)."""


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not: ``wait`` is the server's ask."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


@dataclass(frozen=True)
class ApiContract:
    """The API's shape, from the ``pull_*`` settings (whose defaults live in ``Settings``)."""

    url: str
    paths: Mapping[str, str]
    paging: str
    page_size: int
    param_since: str
    param_limit: str
    param_cursor: str
    field_data: str
    field_next: str
    field_total: str
    field_updated: str
    retries: int
    backoff: float
    max_wait: float
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> ApiContract:
        """The contract of ``url`` (else ``pull_url``); bad values are a ``ConfigError``."""
        base = (url or settings.pull_url).strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"--url {base!r}: give the API's http:// or https:// base URL")
        if settings.pull_paging not in PAGING:
            raise ConfigError(f"pull_paging {settings.pull_paging!r}: use {', '.join(PAGING)}")
        if settings.pull_page_size < 1 or settings.pull_retries < 0:
            raise ConfigError("--page-size must be at least 1 and pull_retries 0 or more")
        if not (settings.pull_timeout_seconds > 0 and settings.pull_every_seconds > 0):
            raise ConfigError("pull_timeout_seconds and --every must be more than 0")
        if settings.pull_lag_seconds < 0:
            raise ConfigError("--lag must be 0 or more")
        return cls(
            url=base,
            paths={"products": settings.pull_products_path, "orders": settings.pull_orders_path},
            paging=settings.pull_paging,
            page_size=settings.pull_page_size,
            param_since=settings.pull_param_since,
            param_limit=settings.pull_param_limit,
            param_cursor=settings.pull_param_cursor,
            field_data=settings.pull_field_data,
            field_next=settings.pull_field_next,
            field_total=settings.pull_field_total,
            field_updated=settings.pull_field_updated,
            retries=settings.pull_retries,
            backoff=settings.pull_backoff_seconds,
            max_wait=settings.pull_max_wait_seconds,
            timeout=settings.pull_timeout_seconds,
        )

    def endpoint_url(self, endpoint: str) -> str:
        return self.url + "/" + self.paths[endpoint].lstrip("/")


@dataclass(frozen=True)
class Page:
    """One page, whole: its records, the next cursor (None: last page), the source's count."""

    records: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None


def make_client(settings: Settings) -> httpx.Client:
    """An HTTP client with the auth headers from the settings (token, API key)."""
    headers = {"Accept": "application/json", "User-Agent": "ecom-stream-pull"}
    if settings.pull_token:
        headers["Authorization"] = f"Bearer {settings.pull_token}"
    if settings.pull_api_key:
        headers[settings.pull_api_key_header] = settings.pull_api_key
    return httpx.Client(headers=headers, timeout=settings.pull_timeout_seconds)


def fetch_page(
    client: httpx.Client,
    contract: ApiContract,
    endpoint: str,
    params: Mapping[str, str],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Page:
    """GET one page, retrying transient faults; raises :class:`PullError` when it keeps
    failing (or fails for good: a 4xx other than 429)."""
    url = contract.endpoint_url(endpoint)
    for attempt in range(contract.retries + 1):
        try:
            return _attempt(client, contract, url, params)
        except _Retryable as exc:
            if attempt == contract.retries:
                raise PullError(
                    f"{url} keeps failing ({exc}; {attempt + 1} attempts): the pull stopped, "
                    "its cursor is unchanged; pull again once the API answers"
                ) from None
            delay = retry_delay(contract.backoff, attempt) if exc.wait is None else exc.wait
            delay = min(delay, contract.max_wait)
            logger.warning("%s: %s; retry %d in %.2f s", url, exc, attempt + 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _attempt(
    client: httpx.Client, contract: ApiContract, url: str, params: Mapping[str, str]
) -> Page:
    """One GET: a whole page, or ``_Retryable``, or ``PullError`` for a refusal."""
    try:
        response = client.get(url, params=dict(params))
    except httpx.TimeoutException as exc:
        raise _Retryable(f"timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        # Refused or dropped connections, and bodies cut short of their Content-Length.
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
    if status != 200:
        raise PullError(f"{url} answered HTTP {status}: {response.text[:200]!r}")
    return _parse(contract, response.content)


def _parse(contract: ApiContract, body: bytes) -> Page:
    """The page in ``body``; a body that is not the contract's JSON is ``_Retryable``
    (a truncated or garbled answer: never written to landing)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Retryable(f"a 200 whose body is not JSON ({len(body)} bytes)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(contract.field_data), list):
        raise _Retryable(f"a 200 without a {contract.field_data!r} list")
    records = doc[contract.field_data]
    if not all(isinstance(r, dict) for r in records):
        raise _Retryable(f"a 200 whose {contract.field_data!r} holds non-objects")
    nxt = doc.get(contract.field_next)
    total = doc.get(contract.field_total)
    if nxt is not None and not isinstance(nxt, str | int):
        raise _Retryable(f"a 200 whose {contract.field_next!r} is not a token")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool)):
        total = None
    return Page(records, None if nxt in (None, "") else str(nxt), total)


def _retry_after(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
