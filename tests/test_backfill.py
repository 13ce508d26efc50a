"""Backfill retries transient errors (a new pipeline each time) and stops on terminal ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

import pytest

from ecom_stream.config import Settings
from ecom_stream.engine import backfill
from ecom_stream.engine.pipeline import FileOutcome
from ecom_stream.errors import LakeDamagedError, LakeError


class FlakyPipeline:
    """Merges one file, then raises ``errors`` one per call (each call a new pipeline)."""

    errors: ClassVar[list[BaseException]] = []
    calls: ClassVar[list[list[str]]] = []

    def __init__(self, settings: Settings, keep_source: bool = False) -> None:
        pass

    def process(
        self, paths: Iterable[Path], *, on_outcome: Callable[[FileOutcome], None] | None = None
    ) -> list[FileOutcome]:
        paths = list(paths)
        FlakyPipeline.calls.append([p.name for p in paths])
        outcomes = []
        for i, p in enumerate(paths):
            if i == 1 and FlakyPipeline.errors:
                raise FlakyPipeline.errors.pop(0)
            p.unlink()
            outcomes.append(FileOutcome(p.name, "orders", "b", "a", "merged"))
            if on_outcome:
                on_outcome(outcomes[-1])
        return outcomes


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> type[FlakyPipeline]:
    monkeypatch.setattr(backfill, "Pipeline", FlakyPipeline)
    FlakyPipeline.errors, FlakyPipeline.calls = [], []
    for i in range(4):
        (settings.landing_dir / f"orders-{i}.json").write_text("[]")
    return FlakyPipeline


def test_a_transient_error_is_retried_and_the_run_completes(
    settings: Settings, flaky: type[FlakyPipeline]
) -> None:
    flaky.errors = [OSError(28, "No space left on device"), LakeError("commit conflict")]
    fast = settings.replace(retry_backoff_seconds=0.0, backfill_retries=3)
    summary = backfill.run_backfill(fast, progress=False)
    assert summary.files == 4 and summary.outcomes == {"merged": 4}
    # Each retry goes on with the files not yet done, never repeating one.
    assert flaky.calls == [
        [f"orders-{i}.json" for i in range(4)],
        [f"orders-{i}.json" for i in range(1, 4)],
        [f"orders-{i}.json" for i in range(2, 4)],
    ]


def test_a_terminal_error_is_not_retried(
    settings: Settings, flaky: type[FlakyPipeline]
) -> None:
    flaky.errors = [LakeDamagedError("silver_orders is damaged")]
    with pytest.raises(LakeDamagedError, match="damaged"):
        backfill.run_backfill(settings, progress=False)
    assert len(flaky.calls) == 1


def test_transient_errors_beyond_the_retries_fail_with_one_line(
    settings: Settings, flaky: type[FlakyPipeline]
) -> None:
    flaky.errors = [OSError(5, "Input/output\nerror")] * 3
    fast = settings.replace(retry_backoff_seconds=0.0, backfill_retries=2)
    with pytest.raises(LakeError) as info:
        backfill.run_backfill(fast, progress=False)
    assert "\n" not in str(info.value) and "gave up after 3 attempts" in str(info.value)
    assert len(flaky.calls) == 3
