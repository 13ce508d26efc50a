"""Example service definitions: a systemd unit and a container file for the daemon.

``ecom-stream service-unit`` prints the unit filled in with the effective settings (paths made
absolute, this interpreter); ``--containerfile`` prints :data:`CONTAINERFILE`. Both start the
daemon the same way: ``python -m ecom_stream watch --create`` with ``ECOM_*`` variables, JSON
logs on stderr (journald or the container runtime keeps them), stopped by SIGTERM (the daemon
finishes the micro-batch in hand, logs a summary and exits 0).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ecom_stream.config import Settings

__all__ = ["CONTAINERFILE", "STOP_TIMEOUT_SECONDS", "systemd_unit"]

# The daemon stops after the micro-batch in hand: up to microbatch_max_rows rows merged and
# gold refreshed, seconds on a small machine. systemd SIGKILLs after this (nothing is lost:
# the next start recovers the arrivals in flight), so it is generous.
STOP_TIMEOUT_SECONDS = 120
# Exit status 2 is a usage error (a typo in ecom-stream.toml or a flag): restarting cannot help.
USAGE_EXIT = 2

UNIT = """\
# ecom-stream watcher daemon: landing folder -> Delta lake.
# Install: save as /etc/systemd/system/ecom-stream.service, then
#   systemctl daemon-reload && systemctl enable --now ecom-stream
# Logs: journalctl -u ecom-stream -o cat  (one JSON object per line)
[Unit]
Description=ecom-stream watcher daemon (landing -> Delta lake)
After=local-fs.target
# A lake or landing folder on a network filesystem: also After=/Wants=network-online.target.

[Service]
Type=simple
{user}WorkingDirectory={workdir}
Environment=ECOM_LANDING={landing}
Environment=ECOM_LAKE={lake}
Environment=ECOM_LOG_JSON=true
Environment=PYTHONUNBUFFERED=1
ExecStart={exec_start}
Restart=on-failure
RestartSec=5
RestartPreventExitStatus={usage_exit}
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec={timeout}
StandardOutput=journal
StandardError=journal
SyslogIdentifier=ecom-stream

[Install]
WantedBy=multi-user.target
"""

CONTAINERFILE = """\
# ecom-stream daemon image: build from a checkout with
#   podman build -t ecom-stream -f Containerfile .
# run with the lake and landing folders as volumes:
#   podman run -d --name ecom-stream -v ./data:/data ecom-stream
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ecom_stream ./ecom_stream
RUN pip install --no-cache-dir . && useradd --system --uid 1000 ecom \\
    && mkdir -p /data && chown ecom /data
USER ecom
ENV ECOM_LANDING=/data/landing \\
    ECOM_LAKE=/data/lake \\
    ECOM_LOG_JSON=true \\
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
# podman/docker stop send SIGTERM, then SIGKILL after --time (default 10 s): give it more,
# e.g. podman stop --time 120 ecom-stream.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "ecom_stream", "watch", "--create"]
"""


def systemd_unit(
    settings: Settings,
    *,
    workdir: Path | None = None,
    user: str | None = None,
    config: Path | None = None,
    python: str | None = None,
) -> str:
    """The unit text for ``settings`` (its landing and lake made absolute)."""
    work = (workdir or Path.cwd()).absolute()
    command = [python or sys.executable, "-m", "ecom_stream", "watch", "--create"]
    if config is not None:
        command += ["--config", str(config.absolute())]
    return UNIT.format(
        user=f"User={user}\n" if user else "",
        workdir=work,
        landing=(work / settings.landing_dir).absolute(),
        lake=(work / settings.lake_dir).absolute(),
        exec_start=shlex.join(command),
        usage_exit=USAGE_EXIT,
        timeout=STOP_TIMEOUT_SECONDS,
    )
