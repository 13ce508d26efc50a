"""Structured logs: the batch and arrival ids bound to every line of a batch (``--log-json``)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecom_stream.logs import FIELDS, batch_context, configure_logging, log_context


class Logs(io.StringIO):
    """The JSON lines logged so far, parsed."""

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]


@pytest.fixture
def json_logs() -> Iterator[Logs]:
    """JSON logging at DEBUG into a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG", json_lines=True)
    buffer = Logs()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)


def test_bound_fields_reach_every_logger_and_unbind(json_logs: Logs) -> None:
    mine, theirs = logging.getLogger("ecom_stream.x"), logging.getLogger("somelibrary")
    with batch_context(["b1"], ["a1"]):
        mine.info("one")
        with log_context(file="f.json"):
            theirs.warning("two")
        mine.info("three", extra={"batch": "explicit"})
    mine.info("after")
    with batch_context(["b1", "b2"], ["a1", "a2"]):
        mine.info("many")
    one, two, three, after, many = json_logs.lines()
    assert (one["batch"], one["arrival"], one["batches"]) == ("b1", "a1", ["b1"])
    assert (two["batch"], two["file"], two["logger"]) == ("b1", "f.json", "somelibrary")
    assert three["batch"] == "explicit" and "file" not in three
    assert not set(after) & set(FIELDS)
    assert many["batches"] == ["b1", "b2"] and "batch" not in many
    assert list(one)[:4] == ["time", "level", "logger", "message"]


def test_every_line_of_a_batch_carries_its_ids(
    tmp_path: Path,
    json_logs: Logs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ecom_stream.api import process_files, read_table
    from ecom_stream.engine import commit
    from ecom_stream.tools.generate import GenerateOptions, generate

    files = generate(GenerateOptions(out=tmp_path / "in", batches=2, orders_per_batch=5,
                                     products=5, seed=5))  # fmt: skip
    broken = tmp_path / "in" / "orders_9999.json"
    broken.write_text("{not json")
    files.append(broken)
    # A line logged in the middle of each micro-batch (where the gold refresh and the
    # commits log their warnings) stands for any line of the batch.
    record = commit.Commits._record

    def probed(self: commit.Commits, *args: object, **kwargs: object) -> object:
        logging.getLogger("ecom_stream.probe").warning("inside the micro-batch")
        return record(self, *args, **kwargs)

    monkeypatch.setattr(commit.Commits, "_record", probed)
    process_files(tmp_path / "lake", files)
    lines = json_logs.lines()
    ledger = read_table(tmp_path / "lake", "ledger")
    pairs = zip(ledger["batch_id"], ledger["arrival_id"], strict=True)
    ids = dict(zip(ledger["file_name"], pairs, strict=True))
    outcomes = [line for line in lines if line["message"].startswith("batch ")]
    assert {line["file"] for line in outcomes} == {f.name for f in files} == set(ids)
    for line in outcomes:
        assert (line["batch"], line["arrival"]) == ids[line["file"]], line
        assert line["entity"] in ("products", "orders") and line["outcome"]
    merged = [line for line in outcomes if line["outcome"] == "merged"]
    assert merged and all(line["rows"]["in"] > 0 for line in merged)
    probes = [line for line in lines if line["logger"] == "ecom_stream.probe"]
    assert probes
    all_ids = {b for b, _ in ids.values()}
    for line in probes:
        assert line["batches"] and set(line["batches"]) <= all_ids, line
        assert len(line["arrivals"]) == len(line["batches"])
        if len(line["batches"]) == 1:
            assert line["batch"] == line["batches"][0]


def test_lines_of_the_threads_beside_a_batch_carry_its_ids(
    tmp_path: Path, json_logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from ecom_stream.api import process_files
    from ecom_stream.storage.tables import Tables
    from ecom_stream.tools.generate import GenerateOptions, generate

    files = generate(GenerateOptions(out=tmp_path / "in", batches=1, orders_per_batch=5,
                                     products=5, seed=6))  # fmt: skip
    merge_lines = Tables.merge_lines

    def probed(self: Tables, *args: object, **kwargs: object) -> object:
        thread = threading.current_thread().name
        logging.getLogger("ecom_stream.probe").warning("beside: %s", thread)
        return merge_lines(self, *args, **kwargs)

    monkeypatch.setattr(Tables, "merge_lines", probed)
    process_files(tmp_path / "lake", files)
    probes = [line for line in json_logs.lines() if line["logger"] == "ecom_stream.probe"]
    assert probes and all("MainThread" not in line["message"] for line in probes)
    assert all(line.get("batch") and line.get("arrival") for line in probes), probes
