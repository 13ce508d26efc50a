"""The config file (``ecom-stream.toml``): precedence default < file < env < flag, one-line
errors for bad keys and values, and ``ecom-stream config``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ecom_stream.config_file import resolve
from ecom_stream.errors import ConfigError, UsageError

FILE = """\
lake_dir = "file-lake"
max_file_bytes = 1000
quiet_seconds = 2
rescan_seconds = 5.5
polling = true
excluded_statuses = ["cancelled", "refunded"]
earliest_order_date = 2001-02-03

[policies]
orders_status_known = "drop-row"
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without ECOM_* variables (the runner's must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOM_")}
    return {**env, **extra}


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**clean_env(), "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ecom_stream", *args],
        capture_output=True, text=True, timeout=120, env=full, cwd=cwd,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ecom-stream.toml"
    path.write_text(FILE)
    return path


# Which layers set lake_dir (and max_file_bytes, which has no flag), and what wins.
@pytest.mark.parametrize(
    ("layers", "lake", "source"),
    [
        ((), Path("lake"), "default"),
        (("file",), Path("file-lake"), "file"),
        (("file", "env"), Path("env-lake"), "env"),
        (("file", "env", "flag"), Path("flag-lake"), "flag"),
        (("env",), Path("env-lake"), "env"),
        (("file", "flag"), Path("flag-lake"), "flag"),
    ],
)
def test_precedence_default_file_env_flag(
    config: Path, layers: tuple[str, ...], lake: Path, source: str
) -> None:
    env = {"ECOM_LAKE": "env-lake", "ECOM_MAX_FILE_BYTES": "2000"} if "env" in layers else {}
    flags = {"lake_dir": "flag-lake" if "flag" in layers else None}
    resolved = resolve(flags, env, str(config) if "file" in layers else None)
    assert resolved.settings.lake_dir == lake
    got = resolved.origins["lake_dir"].source if "lake_dir" in resolved.origins else "default"
    assert got == source
    # A second field, never a flag: env beats file beats default.
    expected = 2000 if "env" in layers else 1000 if "file" in layers else 256 * 1024 * 1024
    assert resolved.settings.max_file_bytes == expected


def test_every_kind_of_value_is_read_from_the_file(config: Path) -> None:
    resolved = resolve({}, {}, str(config))
    s = resolved.settings
    assert (s.quiet_seconds, s.rescan_seconds, s.polling) == (2.0, 5.5, True)
    assert isinstance(s.quiet_seconds, float)
    assert s.excluded_statuses == ("cancelled", "refunded")
    assert s.earliest_order_date == "2001-02-03"
    assert s.policies["orders_status_known"] == "drop-row"
    assert resolved.origins["policies.orders_status_known"].source == "file"
    assert resolved.origins["policies.orders_status_known"].detail == str(config.absolute())
    env = resolve({}, {"ECOM_POLICY_ORDERS_STATUS_KNOWN": "warn"}, str(config))
    assert env.settings.policies["orders_status_known"] == "warn"
    assert env.origins["policies.orders_status_known"].detail == "ECOM_POLICY_ORDERS_STATUS_KNOWN"


def test_the_file_is_found_by_flag_variable_or_working_directory(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve({}, {}).path == Path("ecom-stream.toml")
    other = tmp_path / "other.toml"
    other.write_text('lake_dir = "other"\n')
    assert resolve({}, {"ECOM_CONFIG": str(other)}).settings.lake_dir == Path("other")
    assert resolve({}, {"ECOM_CONFIG": str(config)}, str(other)).path == other
    with pytest.raises(UsageError, match="no such file"):
        resolve({}, {"ECOM_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "error", "needles"),
    [
        ('lake_dri = "x"\n', UsageError, ["lake_dri", "'lake_dir'"]),
        ('max_file_bytes = "big"\n', ConfigError, ["max_file_bytes", "'big'", "an integer"]),
        ("polling = 1\n", ConfigError, ["polling", "true or false"]),
        ('excluded_statuses = "x"\n', ConfigError, ["excluded_statuses", "a list of strings"]),
        ("dashboard_port = 99999\n", ConfigError, ["dashboard_port", "99999", "1 to 65535"]),
        ('[policies]\norders_status_know = "warn"\n', UsageError, ["'policies.orders_status_kn"]),
        ('[policies]\norders_status_known = "warm"\n', ConfigError, ["'warm'", "drop-row"]),
        ('extra_rules = ["no_such_module_here:RULES"]\n', ConfigError, ["extra_rules"]),
        ("x = [\n", ConfigError, ["not valid TOML"]),
    ],
    ids=["typo", "type", "bool", "list", "range", "policy-typo", "policy-value", "rules", "toml"],
)
def test_bad_keys_and_values_name_the_key_and_the_file(
    tmp_path: Path, text: str, error: type[Exception], needles: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(error) as info:
        resolve({}, {}, str(path))
    message = str(info.value)
    assert "\n" not in message
    for needle in [str(path), *needles]:
        assert needle in message, message


def test_cli_bad_key_and_value_are_one_stderr_line(tmp_path: Path) -> None:
    (tmp_path / "ecom-stream.toml").write_text('lake_dri = "x"\n')
    one_line(cli(tmp_path, "config"), 2, "ecom-stream.toml", "'lake_dri'", "'lake_dir'")
    (tmp_path / "ecom-stream.toml").write_text('max_json_depth = "deep"\n')
    one_line(cli(tmp_path, "status"), 1, "ecom-stream.toml", "max_json_depth", "'deep'", "integer")
    one_line(cli(tmp_path, "config", "--config", "nope.toml"), 2, "--config nope.toml")


def test_cli_config_prints_every_setting_and_its_origin(tmp_path: Path, config: Path) -> None:
    done = cli(tmp_path, "config", "--json", "--log-level", "DEBUG",
               env={"ECOM_MAX_FILE_BYTES": "2000"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["file"] == str(config.absolute())
    rows = {r["name"]: r for r in out["settings"]}
    assert (rows["lake_dir"]["value"], rows["lake_dir"]["source"]) == ("file-lake", "file")
    assert rows["max_file_bytes"] == {
        "name": "max_file_bytes", "value": 2000, "source": "env", "from": "ECOM_MAX_FILE_BYTES"
    }  # fmt: skip
    assert rows["log_level"]["source"] == "flag"
    assert rows["landing_dir"]["source"] == "default"
    assert rows["policies.orders_status_known"]["source"] == "file"
    from dataclasses import fields

    from ecom_stream.config import Settings

    names = {f.name for f in fields(Settings)} - {"policies"}
    assert names <= set(rows)
    text = cli(tmp_path, "config")
    assert text.returncode == 0, text.stderr
    assert f"config file: {config.absolute()}" in text.stdout
    assert any(line.startswith("lake_dir ") and "file" in line for line in text.stdout.splitlines())


# -- table history: ECOM_LOG_RETENTION ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "interval"),
    [("7 days", "interval 7 days"), ("30d", "interval 30 days"), ("12 hours", "interval 12 hours"),
     ("1 week", "interval 1 weeks"), ("interval 10 seconds", "interval 10 seconds")],
)  # fmt: skip
def test_log_retention_is_a_duration(text: str, interval: str) -> None:
    from ecom_stream.config import Settings

    assert Settings.from_sources({"ECOM_LOG_RETENTION": text}).log_retention_interval == interval


@pytest.mark.parametrize("text", ["forever", "5 ms", "0 days", "7 fortnights"])
def test_a_bad_log_retention_is_refused(text: str) -> None:
    from ecom_stream.config import Settings

    with pytest.raises(ConfigError, match="ECOM_LOG_RETENTION"):
        Settings.from_sources({"ECOM_LOG_RETENTION": text})


def test_log_retention_reaches_every_table_property(tmp_path: Path) -> None:
    from ecom_stream.api import process_files
    from ecom_stream.config import Settings
    from ecom_stream.storage.lake import TABLES, Lake
    from ecom_stream.tools.generate import GenerateOptions, generate

    def retentions(lake: Lake) -> set[str]:
        return {
            lake.tables.table(name).metadata().configuration["delta.logRetentionDuration"]
            for name in TABLES
        }

    lake_dir = tmp_path / "lake"
    files = generate(GenerateOptions(out=tmp_path / "in", batches=1, orders_per_batch=5,
                                     products=5, seed=3))  # fmt: skip
    settings = Settings.from_sources({"ECOM_LOG_RETENTION": "30d"}).replace(lake_dir=lake_dir)
    process_files(lake_dir, files, settings)
    assert retentions(Lake(lake_dir)) == {"interval 30 days"}
    # A command without the setting (no retention given) leaves the tables as they are...
    Lake(lake_dir).ensure_tables()
    assert retentions(Lake(lake_dir)) == {"interval 30 days"}
    # ...and a writer with the default sets the short one back.
    Lake(lake_dir, log_retention=Settings().log_retention_interval).ensure_tables()
    assert retentions(Lake(lake_dir)) == {"interval 10 seconds"}
