"""Alerts: JSON POSTs to a webhook, sent by a thread of their own so that the pipeline never
waits for them.

``AlertSender`` keeps a bounded queue: a full queue drops the new alert with a warning (the
webhook is down or slow), and each POST is retried with the jittered backoff of
``errors.retry_delay``, then dropped with a warning. ``AlertRules`` decides what deserves an
alert from the stream's outcomes; ``StaleWatch`` from the heartbeat's age. Every payload has
the fields ``event``, ``summary``, ``time``, ``lake``, ``host`` and ``pid``, then its own
(see the README's "Metrics, health and alerts").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ecom_stream.engine.observer import Anomaly
from ecom_stream.errors import retry_delay
from ecom_stream.transform.bookkeeping import FileOutcome

__all__ = ["QUEUE_SIZE", "AlertRules", "AlertSender", "StaleWatch"]

logger = logging.getLogger(__name__)

QUEUE_SIZE = 100  # alerts waiting to be sent; more are dropped (with a warning)
STOP_GRACE_SECONDS = 2.0  # at stop, queued alerts get this long, then are left unsent
_STOP = object()

Alert = dict[str, Any]
Counted = Callable[[str, str], None]  # (event, result): for the ecomstream_alerts_total metric


class AlertSender:
    """Posts alerts to ``url`` from a thread of its own; :meth:`send` never blocks."""

    def __init__(
        self, url: str, *, lake: str, retries: int = 3, timeout: float = 5.0,
        backoff: float = 0.5, counted: Counted | None = None,
    ) -> None:  # fmt: skip
        self.url = url
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self._base = {"lake": lake, "host": socket.gethostname(), "pid": os.getpid()}
        self._queue: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self._counted = counted or (lambda event, result: None)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecom-stream-alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Give queued alerts a moment to go, then leave (the thread is a daemon thread)."""
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=STOP_GRACE_SECONDS)
        self._thread.join(STOP_GRACE_SECONDS)
        self._stopping.set()  # cuts a retry's backoff short

    def send(self, event: str, summary: str, **fields: Any) -> None:
        """Queue an alert; drops it with a warning when the queue is full."""
        alert = {"event": event, "summary": summary,
                 "time": datetime.now(UTC).isoformat(timespec="seconds"), **self._base, **fields}
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            logger.warning("alert queue full (%d waiting: is %s down?): dropped %s alert: %s",
                           QUEUE_SIZE, self.url, event, summary)
            self._counted(event, "dropped")

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is _STOP:
                return
            self._counted(alert["event"], "sent" if self._post(alert) else "failed")

    def _post(self, alert: Alert) -> bool:
        """POST with retries; True once the webhook answered 2xx."""
        data = json.dumps(alert, default=str).encode()
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt and self._stopping.wait(retry_delay(self.backoff, attempt - 1)):
                break
            request = urllib.request.Request(
                self.url, data=data, method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "ecom-stream"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=self.timeout):
                    return True  # urlopen raises HTTPError on anything but 2xx/3xx
            except Exception as exc:  # the webhook's failure is never the pipeline's
                error = exc
        logger.warning("cannot send the %s alert to %s (%s); dropped: %s",
                       alert["event"], self.url, error, alert["summary"])
        return False


class AlertRules:
    """What deserves an alert in the stream: a quarantined file, a new anomaly day, and a
    quarantine gate that failed ``repeats`` files in a row of one entity."""

    def __init__(self, send: Callable[..., None], policies: Mapping[str, str],
                 repeats: int) -> None:  # fmt: skip
        self.send = send
        self.policies = policies
        self.repeats = repeats
        self._streak: dict[tuple[str, str], int] = {}

    def outcome(self, o: FileOutcome) -> None:
        if o.outcome != "quarantined":
            if o.outcome == "merged":
                self._end_streaks(o.entity or "", set())
            return
        self.send("quarantined", f"{o.name} was quarantined: {o.reason}", file=o.name,
                  entity=o.entity, batch_id=o.batch_id, reason=o.reason,
                  failed_rules=o.failed_rules)  # fmt: skip
        gates = {r for r in o.failed_rules if self.policies.get(r) == "quarantine-batch"}
        entity = o.entity or ""
        self._end_streaks(entity, gates)
        for rule in sorted(gates):
            count = self._streak.get((entity, rule), 0) + 1
            self._streak[(entity, rule)] = count
            if count == self.repeats:  # once a streak; a file passing the gate ends it
                self.send("gate_failing",
                          f"gate {rule} quarantined {count} {entity} files in a row",
                          rule=rule, entity=entity, consecutive=count, last_file=o.name)

    def _end_streaks(self, entity: str, failing: set[str]) -> None:
        for key in [k for k in self._streak if k[0] == entity and k[1] not in failing]:
            del self._streak[key]

    def new_anomalies(self, found: Sequence[Anomaly]) -> None:
        days = sorted({day for day, _ in found})
        self.send("anomaly", f"new revenue anomalies on {', '.join(days)}",
                  anomalies=[{"date": day, "category": cat} for day, cat in found])


class StaleWatch:
    """Alerts once when the heartbeat is older than ``stale_after`` seconds (and again after
    it was fresh in between): ``beat_time`` reads the heartbeat's time."""

    def __init__(self, send: Callable[..., None], beat_time: Callable[[], float | None],
                 stale_after: float) -> None:  # fmt: skip
        self.send = send
        self.beat_time = beat_time
        self.stale_after = stale_after
        self.stale = False

    def check(self, now: float) -> None:
        beat = self.beat_time()
        if beat is None:
            return
        age = now - beat
        if age <= self.stale_after:
            self.stale = False
        elif not self.stale:
            self.stale = True
            self.send("stale", f"the daemon's heartbeat is {age:.0f} s old (stale after "
                      f"{self.stale_after:g} s)", age_seconds=round(age, 1))
