"""DigestSet: a compact set of hex digests behaves like a set of their 64-bit prefixes."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ecom_stream.engine.digests import DigestSet


def digest(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 300), max_size=40),
    st.lists(st.tuples(st.sampled_from(["add", "discard"]), st.integers(0, 300)), max_size=60),
)
def test_behaves_like_a_set(initial: list[int], operations: list[tuple[str, int]]) -> None:
    compact = DigestSet(digest(n) for n in initial)
    DigestSet._MERGE_AT = 7  # exercise merging of new members into the sorted array
    reference = {digest(n) for n in initial}
    try:
        for op, n in operations:
            getattr(compact, op)(digest(n))
            getattr(reference, op)(digest(n))
            assert len(compact) == len(reference)
        for n in range(301):
            assert (digest(n) in compact) == (digest(n) in reference)
    finally:
        DigestSet._MERGE_AT = 4096


def test_members_need_their_first_16_hex_digits_only() -> None:
    ids = DigestSet(["00ff" * 8, "ffffffffffffffff" + "0" * 48])
    assert "00ff00ff00ff00ff" + "1" * 16 in ids  # same 64-bit prefix
    assert "ffffffffffffffff" in ids and "fffffffffffffffe" not in ids
    assert 123 not in ids


def test_any_text_can_be_a_member() -> None:
    ids = DigestSet(["requeue:1795759612.48:products-1.json"])
    assert "requeue:1795759612.48:products-1.json" in ids
    assert "requeue:1795759612.48:products-2.json" not in ids
