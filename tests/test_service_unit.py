"""The example service definitions: the systemd unit ``ecom-stream service-unit`` prints and
the container file in the README start the daemon as they say, and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from ecom_stream.api import read_table
from ecom_stream.config import Settings
from ecom_stream.service.status import heartbeat
from ecom_stream.service.unit import CONTAINERFILE, systemd_unit
from ecom_stream.storage.lake import Lake
from ecom_stream.tools.generate import GenerateOptions, generate


def unit_service(text: str) -> tuple[list[str], dict[str, str], Path]:
    """ExecStart (split), Environment= and WorkingDirectory= of a unit's [Service]."""
    service = text.split("[Service]", 1)[1].split("[Install]", 1)[0]
    keys = dict(
        line.split("=", 1) for line in service.splitlines() if "=" in line and line[0] != "#"
    )
    env = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in service.splitlines()
        if line.startswith("Environment=")
    )
    return shlex.split(keys["ExecStart"]), env, Path(keys["WorkingDirectory"])


def containerfile_command(text: str, data: Path) -> tuple[list[str], dict[str, str]]:
    """The container file's CMD and ENV, with its /data volume at ``data``."""
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1))
    block = re.search(r"^ENV (.*?[^\\])$", text, re.MULTILINE | re.DOTALL).group(1)
    env = dict(item.split("=", 1) for item in block.replace("\\\n", " ").split())
    return cmd, {k: v.replace("/data", str(data)) for k, v in env.items()}


def test_the_unit_restarts_on_failure_stops_with_sigterm_and_logs_to_journald(
    tmp_path: Path,
) -> None:
    text = systemd_unit(Settings(), workdir=tmp_path, user="ecom")
    for line in ("Type=simple", "Restart=on-failure", "KillSignal=SIGTERM", "User=ecom",
                 "StandardError=journal", "RestartPreventExitStatus=2"):  # fmt: skip
        assert f"\n{line}\n" in text
    assert re.search(r"\nTimeoutStopSec=\d+\n", text)
    cmd, env, workdir = unit_service(text)
    assert cmd[1:] == ["-m", "ecom_stream", "watch", "--create"]
    assert env["ECOM_LAKE"] == str(tmp_path / "lake") and env["ECOM_LOG_JSON"] == "true"
    assert workdir == tmp_path
    if shutil.which("systemd-analyze"):
        path = tmp_path / "ecom-stream.service"
        path.write_text(systemd_unit(Settings(), workdir=tmp_path))
        done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_service_unit_command_prints_the_unit_and_the_readme_containerfile(tmp_path: Path) -> None:
    done = run_cli("service-unit", "--workdir", str(tmp_path), "--lake", "/srv/lake")
    assert done.returncode == 0, done.stderr
    _, env, _ = unit_service(done.stdout)
    assert env["ECOM_LAKE"] == "/srv/lake" and env["ECOM_LANDING"] == str(tmp_path / "landing")
    done = run_cli("service-unit", "--containerfile")
    assert done.returncode == 0 and done.stdout == CONTAINERFILE
    readme = (REPO / "README.md").read_text()
    assert CONTAINERFILE in readme  # the README shows the shipped text, not a copy gone stale


def run_like_a_service(cmd: list[str], env: dict[str, str], cwd: Path, lake: Path,
                       landing: Path, tmp_path: Path) -> None:  # fmt: skip
    """Start ``cmd`` with only ``env`` (as systemd or a container runtime would), drop files,
    wait for them, stop with SIGTERM: exit 0, a summary logged, every file in the ledger."""
    full = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env}
    cmd = [sys.executable if cmd[0] in ("python", "python3") else cmd[0], *cmd[1:]]
    cwd.mkdir(parents=True, exist_ok=True)
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen(cmd, env=full, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while not (beat := heartbeat(Lake(lake), 3600)) or beat.get("pid") != proc.pid:
            assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.2)
        files = generate(GenerateOptions(out=tmp_path / "out", batches=2, orders_per_batch=10,
                                         products=10, seed=7))  # fmt: skip
        for path in files:
            path.rename(landing / path.name)  # a rename: an event, no quiet wait
        names = {p.name for p in files}
        while not names <= set(read_table(lake, "ledger")["file_name"]):
            assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    lines = [json.loads(line) for line in stderr.read_text().splitlines()]  # all JSON lines
    assert any(line["message"].startswith(f"stopped: {len(files)} file(s) processed, 0 left")
               for line in lines), lines  # fmt: skip
    ledger = read_table(lake, "ledger")
    assert set(ledger["file_name"]) == names and set(ledger["outcome"]) == {"merged"}
    assert not [p for p in landing.iterdir() if not p.name.startswith(".")]
    assert heartbeat(Lake(lake), 3600)["stopped"] is True


@pytest.mark.slow
def test_the_daemon_runs_and_stops_as_the_unit_starts_it(tmp_path: Path) -> None:
    text = systemd_unit(Settings(), workdir=tmp_path / "srv", python=sys.executable)
    cmd, env, workdir = unit_service(text)
    run_like_a_service(cmd, env, workdir, Path(env["ECOM_LAKE"]), Path(env["ECOM_LANDING"]),
                       tmp_path)  # fmt: skip


@pytest.mark.slow
def test_the_daemon_runs_and_stops_as_the_container_starts_it(tmp_path: Path) -> None:
    cmd, env = containerfile_command(CONTAINERFILE, tmp_path / "data")
    run_like_a_service(cmd, env, tmp_path / "app", Path(env["ECOM_LAKE"]),
                       Path(env["ECOM_LANDING"]), tmp_path)  # fmt: skip
