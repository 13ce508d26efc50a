"""Which rows of a micro-batch win at each file's turn, and the domain warnings of those steps.

Both follow one-by-one processing, so the quality table does not depend on grouping.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.config import Settings


def file_steps(
    cleaned: pd.DataFrame, winners: pd.DataFrame, stored: pd.DataFrame, key: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of each file of a micro-batch that win at their turn, and what they replace.

    Files are taken in the micro-batch's order (the order of one-by-one processing). A file's
    row wins at its turn when it is the file's newest version of its key and newer than the
    state before that file: the stored silver row, or the newest version among the earlier
    files of the micro-batch. ``before`` is aligned with the returned rows and holds that
    state's row (all null where the key was new). Keys seen in one file only are the
    micro-batch's winners against silver; only keys seen in several files (a few percent)
    are ranked one file after another.
    """
    multi = cleaned[key].isin(
        cleaned.loc[cleaned.duplicated([key, "_file"]) | cleaned[key].duplicated(keep=False), key]
    )
    multi_keys = set(cleaned.loc[multi, key].tolist())
    single = winners[~winners[key].isin(multi_keys)].reset_index(drop=True)
    old = stored.drop_duplicates(key, keep="last").set_index(key, drop=False)
    single_before = old.reindex(single[key].to_numpy()).reset_index(drop=True)
    if not multi_keys:
        return single, single_before
    # Each file's newest version of each contested key, after the stored version (file -1).
    rows = cleaned[multi].sort_values([key, "_file", "_version_ts", "_row_hash"], kind="stable")
    rows = rows.drop_duplicates([key, "_file"], keep="last")
    prior = old[old[key].isin(multi_keys)].assign(_file=-1)
    chain = pd.concat([prior, rows], ignore_index=True)
    # Dense rank of the versions (newer-wins order), then the running newest per key.
    by_version = chain.sort_values(["_version_ts", "_row_hash"], kind="stable")
    ts = by_version["_version_ts"].to_numpy()
    hashes = by_version["_row_hash"].to_numpy()
    new_version = np.ones(len(by_version), dtype=bool)
    new_version[1:] = (ts[1:] != ts[:-1]) | (hashes[1:] != hashes[:-1])
    chain.loc[by_version.index, "_rank"] = np.cumsum(new_version)
    chain = chain.sort_values([key, "_file"], kind="stable").reset_index(drop=True)
    best_before = chain.groupby(key, sort=False)["_rank"].cummax().groupby(chain[key]).shift(1)
    wins = (chain["_file"] >= 0) & (best_before.isna() | (chain["_rank"] > best_before))
    # Equal rank means the same version (same row hash): any row of it stands for it.
    by_rank = chain.drop_duplicates([key, "_rank"]).set_index([key, "_rank"])
    stepped = chain[wins.to_numpy()]
    prev = by_rank.reindex(
        pd.MultiIndex.from_arrays(
            [stepped[key].to_numpy(), best_before[wins].to_numpy()], names=[key, "_rank"]
        )
    ).reset_index()
    prev.loc[best_before[wins].isna().to_numpy(), key] = None
    columns = list(cleaned.columns)
    steps = pd.concat([single, stepped[columns]], ignore_index=True)
    before = pd.concat([single_before, prev[list(single_before.columns)]], ignore_index=True)
    order = np.argsort(steps["_file"].to_numpy(), kind="stable")
    return steps.iloc[order].reset_index(drop=True), before.iloc[order].reset_index(drop=True)


def file_warnings(
    entity: str, key: str, steps: pd.DataFrame, before: pd.DataFrame, settings: Settings
) -> list[tuple[int, Any]]:
    """Domain warnings per file: each file's rows that won at their turn, compared with
    the version they replaced (see ``file_steps``), as processing the files of the
    micro-batch one by one would; so the quality table does not depend on grouping."""
    from ecom_stream.quality.validate import domain_warnings

    files = steps["_file"].to_numpy()
    matched = before[key].notna().to_numpy()
    # One vectorised check for the micro-batch: rows are told apart by position (a key
    # can step in several files); only files with a finding are re-checked on their own
    # rows (keys unique there), for their own samples and counts.
    pos = np.arange(len(steps), dtype=np.int64)
    checks = domain_warnings(
        entity,
        steps.assign(**{key: pos}),
        before[matched].assign(**{key: pos[matched]}),
        settings,
    )
    warnings = []
    for check in checks:
        failing_files = set(files[check.failing_rows].tolist())
        for file_index in sorted(set(files.tolist())):
            mine = files == file_index
            if file_index in failing_files:
                own = [
                    c
                    for c in domain_warnings(
                        entity,
                        steps[mine].reset_index(drop=True),
                        before[mine & matched].reset_index(drop=True),
                        settings,
                    )
                    if c.expectation == check.expectation
                ]
                warnings += [(int(file_index), c) for c in own]
            else:
                n = int((matched & mine).sum())
                warnings.append(
                    (
                        int(file_index),
                        dataclasses.replace(
                            check,
                            success=True,
                            unexpected_count=0,
                            element_count=n,
                            unexpected_percent=0.0 if n else None,
                            failing_rows=np.empty(0, np.int64),
                            sample=[],
                            observed=f"no finding in {n} updated rows",
                        ),
                    )
                )
    return warnings
