"""The command line: user mistakes are one line on stderr, folders are checked before use.

Every check runs ``python -m ecom_stream`` in a real subprocess (as a user would), on real
lakes in temporary folders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from ecom_stream.errors import EcomStreamError
from ecom_stream.storage.folders import check_lake_to_write
from ecom_stream.storage.lake import Lake


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 1 or 2, no traceback, exactly one line on stderr holding every needle."""
    assert result.returncode in (1, 2), (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A lake backfilled through the CLI from a few simulated batches; also its stderr."""
    from ecom_stream.tools.generate import GenerateOptions, generate

    root = tmp_path_factory.mktemp("cli")
    source, lake = root / "source", root / "lake"
    generate(GenerateOptions(out=source, batches=3, orders_per_batch=40, products=30, seed=11))
    done = run_cli("backfill", "--no-progress", str(source), "--lake", str(lake),
                   "--landing", str(source))
    assert done.returncode == 0, done.stderr
    return lake, done.stderr


# -- point 1: tracebacks for user mistakes -------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["status", "--log-level", "FOO"], ["FOO", "--log-level"]),
        (["maintain", "--retention-hours", "-1"], ["-1", "--retention-hours"]),
        (["maintain", "--dry-run", "--retention-hours", "-1"], ["--retention-hours"]),
        (["dashboard", "--port", "99999"], ["99999", "--port"]),
        (["demo", "--port", "0"], ["--port"]),
    ],
    ids=["log-level", "retention", "retention-dry-run", "dashboard-port", "demo-port"],
)
def test_bad_values_are_one_line_errors(
    small_lake: tuple[Path, str], args: list[str], needles: list[str]
) -> None:
    lake, _ = small_lake
    result = run_cli(*args, "--lake", str(lake), "--landing", str(lake.parent / "source"),
                     timeout=120)
    assert_one_line_error(result, *needles)


def test_bad_values_from_the_environment_are_one_line_errors(tmp_path: Path) -> None:
    result = run_cli("status", "--lake", str(tmp_path), env={"ECOM_LOG_LEVEL": "chatty"})
    assert_one_line_error(result, "chatty", "ECOM_LOG_LEVEL")
    result = run_cli("status", "--lake", str(tmp_path), env={"ECOM_DASHBOARD_PORT": "70000"})
    assert_one_line_error(result, "70000", "ECOM_DASHBOARD_PORT")


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``quarantine --json | head -3``: no traceback, the status of a SIGPIPE, as Unix tools."""
    lake = Lake(tmp_path / "lake")
    reason = "invalid JSON at line 1 column 2: " + "expecting a value " * 20
    for i in range(400):  # about 300 KB of JSON: far more than a pipe holds
        name = f"orders_{i:04d}.json"
        lake.blobs.store_quarantined(tmp_path / name, b"[", name,
                               {"file": name, "batch_id": f"{i:064x}", "reason": reason})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ecom_stream", "quarantine", "--json", "--lake", str(lake.root)]
    producer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert producer.stdout is not None and producer.stderr is not None
    head = subprocess.run(["head", "-3"], stdin=producer.stdout, capture_output=True, timeout=120)
    producer.stdout.close()  # only head reads the pipe: when it exits, the pipe is broken
    stderr = producer.stderr.read().decode()
    code = producer.wait(120)
    assert head.stdout.decode().splitlines()[0] == "["
    assert stderr == "", stderr
    assert code == 141  # 128 + SIGPIPE: what a shell reports for `yes | head -3`

    # The same through a shell pipeline, as typed.
    shell = subprocess.run(
        ["bash", "-c", f"{' '.join(cmd)} | head -3 >/dev/null; echo ${{PIPESTATUS[0]}}"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert shell.stderr == "" and shell.stdout.strip() == "141", shell


# -- point 2: folders are checked, not created by accident ---------------------------------
def test_a_missing_landing_folder_is_refused_unless_create(tmp_path: Path) -> None:
    missing, lake = tmp_path / "no" / "landing", tmp_path / "lake"
    watch = run_cli("watch", "--landing", str(missing), "--lake", str(lake), timeout=120)
    assert_one_line_error(watch, str(missing), "does not exist", "--create")
    backfill = run_cli("backfill", "--landing", str(missing), "--lake", str(lake), timeout=120)
    assert_one_line_error(backfill, str(missing), "does not exist", "--create")
    named = run_cli("backfill", str(missing), "--lake", str(lake), timeout=120)
    assert_one_line_error(named, str(missing), "--create")
    assert not missing.exists() and not lake.exists()  # nothing was created on the way

    created = run_cli("backfill", "--create", "--no-progress", "--landing", str(missing),
                      "--lake", str(lake), timeout=120)
    assert created.returncode == 0, created.stderr
    assert missing.is_dir() and "nothing to do" in created.stdout


def test_status_and_quarantine_say_when_the_lake_is_missing_or_a_file(tmp_path: Path) -> None:
    missing, a_file = tmp_path / "nolake", tmp_path / "lake.txt"
    a_file.write_text("not a lake")
    for command in ("status", "quarantine"):
        result = run_cli(command, "--lake", str(missing))
        assert_one_line_error(result, str(missing), "does not exist")
        result = run_cli(command, "--lake", str(a_file))
        assert_one_line_error(result, str(a_file), "is a file")
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("status", "--lake", str(empty))
    assert result.returncode == 0 and "the lake is empty" in result.stdout, result.stderr


def test_a_writer_refuses_a_lake_folder_holding_other_files(tmp_path: Path) -> None:
    landing, other = tmp_path / "landing", tmp_path / "documents"
    landing.mkdir()
    other.mkdir()
    (other / "thesis.docx").write_text("years of work")
    for command in ("backfill", "watch"):
        result = run_cli(command, "--landing", str(landing), "--lake", str(other), timeout=120)
        assert_one_line_error(result, str(other), "not an ecom-stream lake", "thesis.docx")
    assert sorted(p.name for p in other.iterdir()) == ["thesis.docx"]


def test_which_lake_folders_a_writer_accepts(tmp_path: Path, small_lake: tuple[Path, str]) -> None:
    lake, _ = small_lake
    check_lake_to_write(lake)  # a lake
    check_lake_to_write(tmp_path / "new")  # missing: created by the writer
    interrupted = tmp_path / "interrupted"
    (interrupted / "_daemon").mkdir(parents=True)  # a first run stopped after taking the lock
    (interrupted / "silver" / "orders").mkdir(parents=True)
    (interrupted / ".gitkeep").write_text("")  # as in a checkout's lake/
    check_lake_to_write(interrupted)
    (interrupted / "notes.txt").write_text("")
    with pytest.raises(EcomStreamError, match=r"notes\.txt"):
        check_lake_to_write(interrupted)
    with pytest.raises(EcomStreamError, match="is a file"):
        check_lake_to_write(interrupted / "notes.txt")


# -- point 3: small ones -------------------------------------------------------------------
def test_an_unknown_anomaly_category_lists_the_known_ones(small_lake: tuple[Path, str]) -> None:
    lake, _ = small_lake
    result = run_cli("anomalies", "--category", "Nope", "--lake", str(lake))
    line = assert_one_line_error(result, "'Nope'", "All")
    scored = Lake(lake).tables.read_pandas("revenue_anomalies", columns=["category"])
    known = scored["category"].unique()
    assert all(str(c) in line for c in known)
    good = run_cli("anomalies", "--category", "All", "--lake", str(lake))
    assert good.returncode == 0, good.stderr


def test_great_expectations_docs_site_line_is_not_logged(small_lake: tuple[Path, str]) -> None:
    _, stderr = small_lake
    assert "merged" in stderr  # the backfill did log at INFO
    assert "ephemeral docs site" not in stderr


def test_an_output_file_that_cannot_be_written_is_one_line(
    tmp_path: Path, small_lake: tuple[Path, str]
) -> None:
    lake, _ = small_lake
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    report = run_cli("report", "--lake", str(lake), "--out", str(a_file / "report.json"))
    assert_one_line_error(report, "cannot write", "report.json")
    export = run_cli("anomalies", "--lake", str(lake), "--export", str(a_file / "x" / "a.parquet"))
    assert_one_line_error(export, "cannot write", "a.parquet")
