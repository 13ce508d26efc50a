"""Typed settings, resolved once: defaults, then a config file, then ``ECOM_*`` environment,
then CLI flags."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, get_type_hints

from ecom_stream.contract.rules import Rule, default_policies
from ecom_stream.contract.user_rules import check_extra_rules, load_rules
from ecom_stream.errors import ConfigError

__all__ = ["POLICIES", "Origin", "Settings", "default_policies"]

ENV_PREFIX = "ECOM_"
POLICIES = ("quarantine-batch", "drop-row", "warn")


@dataclass(frozen=True)
class Origin:
    """Where a setting came from: ``default``, ``file``, ``env`` or ``flag``, and which one
    (the variable or flag name; the file's path is filled in by the config-file layer)."""

    source: str
    detail: str = ""


@dataclass(frozen=True)
class Settings:
    """Every path and threshold of ecom-stream; build with :meth:`from_sources`."""

    landing_dir: Path = Path("landing")
    """Drop folder watched by the daemon and read by ``backfill``."""
    lake_dir: Path = Path("lake")
    """Root of the Delta lake (layout owned by ``lake.py``)."""

    max_file_bytes: int = 256 * 1024 * 1024
    """Files larger than this are quarantined unread."""
    max_json_depth: int = 32
    """Records nested deeper than this are quarantined."""

    microbatch_max_files: int = 100
    """At most this many files are merged together in one micro-batch."""
    microbatch_max_rows: int = 60_000
    """A micro-batch stops growing once it holds this many rows (bounds memory)."""

    price_missing_gate: float = 0.10
    """A product batch with a larger share of missing/unparseable prices is quarantined."""
    total_missing_gate: float = 0.10
    """An order batch with a larger share of missing/unparseable totals is quarantined."""
    max_price: float = 1e12
    """A product price must be below this (else the row is rejected); so must be finite."""
    max_total: float = 1e12
    """An order total must be below this (else the row is rejected): gold sums in int64 cents."""
    max_quantity: int = 1_000_000
    """Every quantity of an order must be below this (else the row is rejected)."""
    max_stock: int = 1_000_000_000
    """A product's stock must be below this (else the row is rejected)."""
    earliest_order_date: str = "2000-01-01"
    """Orders created (UTC) before this ISO date are rejected: gold's series start there."""
    max_days_ahead: float = 1.0
    """Orders created more than this many days after their file was received are rejected."""
    price_change_factor: float = 3.0
    """A product update changing the price by more than this factor is a quality warning."""
    policies: Mapping[str, str] = field(default_factory=default_policies)
    """Policy of each expectation: quarantine-batch, drop-row or warn."""
    extra_rules: tuple[Rule, ...] = ()
    """Row rules of one's own (``ecom_stream.Rule``), checked with the built-in ones; from the
    environment as ``ECOM_EXTRA_RULES=package.module:NAME`` (a sequence of rules)."""

    excluded_statuses: tuple[str, ...] = ("cancelled",)
    """Order statuses that earn no revenue."""
    anomaly_window_days: int = 30
    """Rolling window (days before the scored day) of the anomaly baseline."""
    anomaly_min_history_days: int = 7
    """Days of history needed before a day is scored."""
    anomaly_threshold: float = 2.0
    """A day is an anomaly when |revenue - mean| > threshold x std."""

    quiet_seconds: float = 1.0
    """A file without a close/rename event must be unchanged this long before it is read."""
    rescan_seconds: float = 30.0
    """The daemon rescans landing this often to heal missed file events."""
    batch_retries: int = 3
    """Unexpected errors on a batch are retried this many times before it is quarantined."""
    retry_backoff_seconds: float = 0.5
    """First retry delay; doubled on each retry."""
    backfill_retries: int = 3
    """A backfill retries a transient error (disk, I/O, commit conflict) this many times, with
    the same jittered backoff as the daemon; 0 raises the first one."""
    polling: bool = False
    """Use a polling observer (network filesystems) instead of inotify."""
    maintain_every_commits: int = 50
    """The daemon compacts a table holding this many mergeable small files (beyond one each)."""
    vacuum_retention_hours: int = 168
    """``maintain`` deletes unreferenced files older than this."""

    dashboard_refresh_seconds: float = 3.0
    """How often the open dashboard checks the lake for new table versions."""
    dashboard_address: str = "127.0.0.1"
    """Address the dashboard binds to (localhost only by default)."""
    dashboard_port: int = 8501
    """Port of the dashboard."""
    heartbeat_stale_seconds: float = 60.0
    """A daemon heartbeat older than this shows as stale."""
    demo_stop_seconds: float = 15.0
    """``demo`` gives its children this long to stop after SIGTERM, then SIGKILLs them."""

    log_json: bool = False
    """Emit one JSON object per log line."""
    log_level: str = "INFO"
    """Root log level."""

    # -- table history -------------------------------------------------------------------------
    log_retention: str = "10 seconds"
    """How long each Delta table keeps its commit history (``delta.logRetentionDuration``),
    e.g. ``"7 days"`` or ``"30d"``: the audit trail of ``DESCRIBE HISTORY`` and time travel.
    Short by default: every commit lists the log folder, so kept commits cost (see README)."""

    @property
    def log_retention_interval(self) -> str:
        """``log_retention`` as Delta writes it (``"interval 7 days"``)."""
        return delta_interval(self.log_retention)

    # -- metrics, health endpoints and alerts of the daemon ----------------------------------
    metrics_port: int | None = None
    """Port of the daemon's /metrics, /healthz and /ready (None: off; 0: any free port)."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics and health endpoints bind to (localhost only by default)."""
    alert_url: str = ""
    """Webhook the daemon POSTs JSON alerts to (empty: no alerts)."""
    alert_retries: int = 3
    """A failed alert POST is retried this many times, with jittered backoff, then dropped."""
    alert_timeout_seconds: float = 5.0
    """Timeout of one alert POST."""
    alert_gate_repeats: int = 3
    """Alert when this many files in a row of one entity are quarantined by the same rule."""
    # -- pull: the REST API source (`ecom-stream pull`). Names of the query parameters
    # and response fields are settings, so page/offset APIs and other names work too.
    pull_url: str = ""
    """Base URL of the API (``GET {url}/products``, ``GET {url}/orders``)."""
    pull_page_size: int = 1000
    """Records asked for per page (the ``limit`` parameter)."""
    pull_every_seconds: float = 30.0
    """Seconds between two pulls (without ``--once``)."""
    pull_lag_seconds: float = 0.0
    """The next pull re-reads updates this much older than the newest one seen."""
    pull_timeout_seconds: float = 10.0
    """A page not answered within this many seconds is retried."""
    pull_retries: int = 5
    """A failing page is retried this many times before the pull stops (exit 1)."""
    pull_backoff_seconds: float = 0.5
    """First retry delay of a page (doubled each retry, jittered)."""
    pull_max_wait_seconds: float = 60.0
    """Longest wait honoured for a ``Retry-After`` (and any backoff)."""
    pull_paging: str = "cursor"
    """How pages follow each other: ``cursor`` (next_cursor), ``page`` (1, 2, ...) or
    ``offset`` (0, limit, ...)."""
    pull_param_since: str = "updated_since"
    pull_param_limit: str = "limit"
    pull_param_cursor: str = "cursor"
    """The query parameter carrying the cursor, page number or offset."""
    pull_field_data: str = "data"
    pull_field_next: str = "next_cursor"
    pull_field_total: str = "total"
    pull_field_updated: str = "updated_at"
    """The record field the incremental watermark is taken from."""
    pull_products_path: str = "/products"
    pull_orders_path: str = "/orders"
    pull_token: str = field(default="", repr=False)
    """Bearer token sent as ``Authorization: Bearer ...`` (ECOM_PULL_TOKEN)."""
    pull_api_key: str = field(default="", repr=False)
    """API key sent in the ``pull_api_key_header`` header (ECOM_PULL_API_KEY)."""
    pull_api_key_header: str = "X-API-Key"

    def __post_init__(self) -> None:
        self._check_ranges()
        self._check_observability()
        delta_interval(self.log_retention)  # ops: refuse a bad ECOM_LOG_RETENTION early
        object.__setattr__(self, "extra_rules", check_extra_rules(self.extra_rules))
        for name, policy in self.policies.items():
            if policy not in POLICIES:
                raise ConfigError(
                    f"policy {policy!r} for {name!r} is not one of {', '.join(POLICIES)}"
                )
        unknown = set(self.policies) - set(default_policies(self.extra_rules))
        if unknown:
            raise ConfigError(f"unknown expectation(s) in policies: {', '.join(sorted(unknown))}")
        for name in ("price_missing_gate", "total_missing_gate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1")
        for name in ("max_price", "max_total", "max_quantity", "max_stock"):
            if not 0 < getattr(self, name) < 2**53:
                raise ConfigError(f"{name} must be a positive number below 2**53")
        if not 0 <= self.max_days_ahead <= 36_500:
            raise ConfigError("max_days_ahead must be between 0 and 36500")
        try:
            date.fromisoformat(self.earliest_order_date)
        except (TypeError, ValueError):
            raise ConfigError(
                f"earliest_order_date={self.earliest_order_date!r} is not an ISO date "
                "(YYYY-MM-DD)"
            ) from None
        if self.microbatch_max_files < 1 or self.microbatch_max_rows < 1:
            raise ConfigError("micro-batch limits must be at least 1")
        if (
            self.anomaly_min_history_days < 2
            or self.anomaly_window_days < self.anomaly_min_history_days
        ):
            raise ConfigError("need 2 <= anomaly_min_history_days <= anomaly_window_days")

    def _check_ranges(self) -> None:
        """Refuse values no command could use, naming the flag and variable that set them
        (they would otherwise fail deep inside logging, Delta's vacuum or a socket bind)."""
        level = self.log_level.strip().upper()
        if level not in logging.getLevelNamesMapping() or level == "NOTSET":
            raise ConfigError(
                f"log level {self.log_level!r} is unknown: use DEBUG, INFO, WARNING or ERROR "
                "(--log-level or ECOM_LOG_LEVEL)"
            )
        if not 1 <= self.dashboard_port <= 65535:
            raise ConfigError(
                f"port {self.dashboard_port} is out of range: use 1 to 65535 "
                "(--port or ECOM_DASHBOARD_PORT)"
            )
        if self.vacuum_retention_hours < 0:
            raise ConfigError(
                f"retention of {self.vacuum_retention_hours} hours is negative: use 0 or more "
                "(--retention-hours or ECOM_VACUUM_RETENTION_HOURS)"
            )
        for name in ("quiet_seconds", "retry_backoff_seconds", "batch_retries", "backfill_retries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more (ECOM_{name.upper()})")
        for name in ("rescan_seconds", "dashboard_refresh_seconds", "heartbeat_stale_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be more than 0 (ECOM_{name.upper()})")

    def _check_observability(self) -> None:
        """Refuse metrics and alert settings the daemon could not use."""
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(
                f"port {self.metrics_port} is out of range: use 0 to 65535 "
                "(--metrics-port or ECOM_METRICS_PORT)"
            )
        if self.alert_url and not self.alert_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"alert URL {self.alert_url!r} is not an http(s) URL "
                "(--alert-url or ECOM_ALERT_URL)"
            )
        if self.alert_retries < 0 or self.alert_gate_repeats < 1:
            raise ConfigError("need alert_retries >= 0 and alert_gate_repeats >= 1")
        if not self.alert_timeout_seconds > 0:
            raise ConfigError("alert_timeout_seconds must be more than 0")

    @classmethod
    def from_sources(
        cls,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        file: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Defaults, overridden by ``file`` values, by ``ECOM_<FIELD>`` variables, by ``overrides``.

        ``ECOM_LANDING`` and ``ECOM_LAKE`` are accepted for the two directories; policies are
        set with ``ECOM_POLICY_<EXPECTATION>=warn`` (e.g. ``ECOM_POLICY_ORDERS_STATUS_KNOWN``).
        ``file`` holds typed values by field name (see :mod:`ecom_stream.config_file`).
        """
        return cls(**cls.layered(env, overrides, file=file)[0])

    @classmethod
    def layered(
        cls,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        file: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Origin]]:
        """The constructor arguments of :meth:`from_sources` and where each came from: one
        :class:`Origin` per field (policies one per expectation, as ``policies.NAME``) set by
        a layer above the defaults."""
        env = os.environ if env is None else env
        origins: dict[str, Origin] = {}
        values: dict[str, Any] = {}
        for name, val in (file or {}).items():
            if name != "policies":
                values[name] = val
                origins[name] = Origin("file")
        hints = get_type_hints(cls)
        aliases = {"landing_dir": "ECOM_LANDING", "lake_dir": "ECOM_LAKE"}
        for f in fields(cls):
            if f.name in ("policies", "extra_rules"):
                continue
            for var in (aliases.get(f.name), ENV_PREFIX + f.name.upper()):
                if var and var in env:
                    values[f.name] = _coerce(f.name, hints[f.name], env[var], var)
                    origins[f.name] = Origin("env", var)
                    break
        if env.get(ENV_PREFIX + "EXTRA_RULES", "").strip():
            values["extra_rules"] = load_rules(env[ENV_PREFIX + "EXTRA_RULES"])
            origins["extra_rules"] = Origin("env", ENV_PREFIX + "EXTRA_RULES")
        policies = cls._policies(env, (file or {}).get("policies", {}), origins)
        values["policies"] = policies
        for name, val in (overrides or {}).items():
            if val is None:
                continue
            flag = f"--{name.replace('_', '-')}"
            if name == "policies":
                values["policies"] = {**policies, **val}
                origins.update({f"policies.{k}": Origin("flag") for k in val})
                continue
            if name == "extra_rules":
                values[name] = load_rules(val) if isinstance(val, str) else tuple(val)
            else:
                values[name] = _coerce(name, hints[name], val, flag)
            origins[name] = Origin("flag", flag)
        return values, origins

    @staticmethod
    def _policies(
        env: Mapping[str, str], file: Mapping[str, str], origins: dict[str, Origin]
    ) -> dict[str, str]:
        """Default policies < the file's ``[policies]`` < ``ECOM_POLICY_<NAME>``."""
        policies = default_policies()
        for key, val in file.items():
            policies[key] = val
            origins[f"policies.{key}"] = Origin("file")
        for key, val in env.items():
            if key.startswith(ENV_PREFIX + "POLICY_"):
                name = key[len(ENV_PREFIX + "POLICY_") :].lower()
                policies[name] = val.strip().lower()
                origins[f"policies.{name}"] = Origin("env", key)
        return policies

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


_UNITS = {
    "s": "second", "sec": "second", "second": "second",
    "m": "minute", "min": "minute", "minute": "minute",
    "h": "hour", "hr": "hour", "hour": "hour",
    "d": "day", "day": "day",
    "w": "week", "week": "week",
}  # fmt: skip
_DURATION = re.compile(r"^\s*(?:interval\s+)?(\d+)\s*([a-z]+)\s*$", re.IGNORECASE)


def delta_interval(text: str) -> str:
    """A duration (``"7 days"``, ``"30d"``, ``"12 hours"``, ``"interval 1 week"``) as a Delta
    table-property interval (``"interval 7 days"``); a :class:`ConfigError` otherwise."""
    match = _DURATION.match(str(text))
    raw = match.group(2).lower() if match else ""
    # A plural "s" is dropped, but never from a two-letter unit ("ms" is not minutes).
    unit = _UNITS.get(raw) or (_UNITS.get(raw[:-1]) if len(raw) > 2 and raw[-1] == "s" else None)
    if match is None or unit is None or int(match.group(1)) < 1:
        raise ConfigError(
            f"log retention {text!r} is not a duration: use a whole number of seconds, "
            "minutes, hours, days or weeks, e.g. '7 days' or '30d' (ECOM_LOG_RETENTION)"
        )
    return f"interval {int(match.group(1))} {unit}s"


def _coerce(name: str, hint: Any, raw: Any, source: str) -> Any:
    if not isinstance(raw, str):
        return Path(raw) if hint is Path else raw
    text = raw.strip()
    try:
        if hint is Path:
            return Path(text).expanduser()
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint == int | None:  # an optional number: empty, "off" or "none" is None
            return None if text.lower() in ("", "off", "none") else int(text)
        if hint is float:
            return float(text)
        if hint == tuple[str, ...]:
            return tuple(s.strip() for s in text.split(",") if s.strip())
        return text
    except ValueError:
        raise ConfigError(f"{source}={raw!r}: not a valid value for {name}") from None
