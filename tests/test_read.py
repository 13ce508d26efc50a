"""File names and contents: what is read, ignored or quarantined, and why."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecom_stream.errors import BatchReadError
from ecom_stream.sources.files import read_bytes
from ecom_stream.transform.json_text import nesting_depth
from ecom_stream.transform.parse import (
    canonical_json,
    classify,
    parse_records,
    row_hash,
)


@pytest.mark.parametrize(
    ("name", "action", "entity", "fmt"),
    [
        ("products-000001.json", "batch", "products", "array"),
        ("orders-000001.json", "batch", "orders", "array"),
        ("orders_2026.jsonl", "batch", "orders", "lines"),
        ("Orders-1.NDJSON", "batch", "orders", "lines"),
        (".orders-1.json", "ignore", None, None),
        ("orders-1.json.tmp", "ignore", None, None),
        ("orders-1.json.part", "ignore", None, None),
        ("orders-1.json.partial", "ignore", None, None),
        ("customers-1.json", "quarantine", None, None),
        ("orders-1.csv", "quarantine", "orders", None),
        ("orders-1", "quarantine", "orders", None),
    ],
)
def test_classify(name: str, action: str, entity: str | None, fmt: str | None) -> None:
    kind = classify(name)
    assert kind.action == action
    assert kind.entity == entity
    assert kind.fmt == fmt
    if action == "quarantine":
        assert kind.reason


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b'[{"a": 1},\n {"a": }]', "array", "invalid JSON at line 2, column"),
        (b'{"a": 1}', "array", "not an array"),
        (b"[1, 2]", "array", "element 0 is a number, not an object"),
        (b"\xff\xfe[]", "array", "not UTF-8"),
        (b"   \n", "array", "empty file"),
        (b'{"a": 1}\n{"a": \n', "lines", "invalid JSON Lines at line 2"),
        (b"[" + b"[" * 40 + b"]" * 40 + b"]", "array", "not an object"),
        (b'[{"a":' + b"[" * 40 + b"]" * 40 + b"}]", "array", "nested deeper than 32"),
        # closing brackets inside a string do not hide the nesting that follows
        (b'[{"s": "' + b"]" * 40 + b'", "a":' + b"[" * 40 + b"]" * 40 + b"}]", "array",
         "element 0 is nested deeper than 32"),
        (b'{"a":' + b"[" * 32 + b"]" * 32 + b"}", "lines", "element 0 is nested deeper than 32"),
    ],
)
def test_parse_errors_are_precise(data: bytes, fmt: str, message: str) -> None:
    with pytest.raises(BatchReadError, match=message.replace("(", r"\(")):
        parse_records(data, fmt, max_depth=32)


def test_depth_limit_is_exact() -> None:
    at_limit = b'{"a":' + b"[" * 31 + b"]" * 31 + b"}"  # 32 levels: the object and 31 lists
    assert len(parse_records(at_limit, "lines", max_depth=32)) == 1
    assert len(parse_records(b"[" + at_limit + b"]", "array", max_depth=32)) == 1
    brackets_in_text = b'[{"s": "[[[[{{{{ \\" ]]", "t": "\\\\"}]'
    assert nesting_depth(brackets_in_text) == 2
    records = parse_records(brackets_in_text, "array", max_depth=1)
    assert records == [{"s": '[[[[{{{{ " ]]', "t": "\\"}]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_texts = st.text(alphabet=st.sampled_from('[]{}"\\ab\n\u00e9'), max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=_json, ascii_only=st.booleans())
def test_nesting_depth_ignores_brackets_in_strings(value: Any, ascii_only: bool) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nesting_depth(data) == _depth(value)


def test_bom_is_accepted_and_lines_skip_blank() -> None:
    assert parse_records(b'\xef\xbb\xbf[{"a": 1}]', "array", 32) == [{"a": 1}]
    assert parse_records(b'{"a": 1}\n\n{"a": 2}\n', "lines", 32) == [{"a": 1}, {"a": 2}]
    assert parse_records(b"[]", "array", 32) == []


def test_read_bytes_refuses_links_empty_and_large(tmp_path: Path) -> None:
    real = tmp_path / "orders-1.json"
    real.write_bytes(b"[]")
    link = tmp_path / "orders-2.json"
    os.symlink(real, link)
    with pytest.raises(BatchReadError, match="symbolic link"):
        read_bytes(link, 100)
    empty = tmp_path / "orders-3.json"
    empty.write_bytes(b"")
    assert read_bytes(empty, 100) == b""  # read, so that quarantine keeps the (empty) file
    with pytest.raises(BatchReadError, match=r"empty file \(0 bytes\)"):
        parse_records(b"", "array", 32)
    big = tmp_path / "orders-4.json"
    big.write_bytes(b"[" + b" " * 200 + b"]")
    with pytest.raises(BatchReadError, match="larger than the limit"):
        read_bytes(big, 100)


def test_row_hash_ignores_key_order() -> None:
    a = {"order_id": 1, "total": 2.5, "status": "pending"}
    b = {"status": "pending", "total": 2.5, "order_id": 1}
    assert canonical_json(a) == canonical_json(b)
    assert row_hash(a) == row_hash(b)
    assert row_hash(a) != row_hash({**a, "total": 2.51})


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b'{"a": 1}', "array", "top level is an object, not an array"),
        (b'"x"', "array", "top level is a string, not an array"),
        (b"[null]", "array", "element 0 is null, not an object"),
        (b"[[1]]", "array", "element 0 is an array, not an object"),
    ],
)
def test_shape_errors_read_well(data: bytes, fmt: str, message: str) -> None:
    with pytest.raises(BatchReadError, match=message):
        parse_records(data, fmt, max_depth=32)


@pytest.mark.parametrize(
    ("data", "fmt", "where"),
    [
        (b'[{"n": "\xc3\xa9\xe2\x82\xac"},\n {"a": 1, "x": NaN}]', "array", "line 2, column 16"),
        (b'[{"a": 1},\n {"a": 2}, {"b": -Infinity}]', "array", "line 2, column 18"),
        (b'{"a": 1}\n{"a": 2, "b": Infinity}\n', "lines", "line 2, column 15"),
        (b'[{"a": 1e400},\n {"b": NaN}]', "array", "line 2, column 8"),
    ],
)
def test_nan_and_infinity_name_their_real_position(data: bytes, fmt: str, where: str) -> None:
    """Bare NaN/Infinity tokens are not JSON: the file is quarantined, naming the token's
    real line and column (not line 1, column 1)."""
    with pytest.raises(BatchReadError, match=f"at {where}: NaN or Infinity is not valid JSON"):
        parse_records(data, fmt, max_depth=32)


def test_big_numbers_are_valid_json_and_parse() -> None:
    """RFC 8259 sets no range on numbers: a float beyond double range keeps its literal text
    (a plain-number string to the cleaning rules), integers beyond 64 bits become floats
    exactly as orjson reads them; the other values are untouched."""
    data = (
        b'[{"product_id": 123456789012345678901234567890, "price": 1.5},\n'
        b' {"product_id": 2, "stock": 1e25, "price": 1e400},\n'
        b' {"product_id": 3, "price": -1e400, "name": "\xc3\xa9"}]'
    )
    records = parse_records(data, "array", max_depth=32)
    assert records == [
        {"product_id": 1.2345678901234568e29, "price": 1.5},
        {"product_id": 2, "stock": 1e25, "price": "1e400"},
        {"product_id": 3, "price": "-1e400", "name": "\u00e9"},
    ]
    lines = parse_records(b'{"a": 1e999}\n{"a": 184467440737095516160}\n', "lines", 32)
    assert lines == [{"a": "1e999"}, {"a": 1.8446744073709552e20}]
    # the same value reads the same whichever parser read the file
    fast = parse_records(b'[{"product_id": 123456789012345678901234567890}]', "array", 32)
    assert fast[0]["product_id"] == records[0]["product_id"]
    for rec in records:  # hashing stays deterministic and does not raise
        assert row_hash(rec) == row_hash(dict(reversed(list(rec.items()))))


def test_fallback_still_refuses_lone_surrogates() -> None:
    with pytest.raises(BatchReadError, match=r"line 2, column 8: .*surrogate"):
        parse_records(b'[{"a": 1e400},\n {"b": "\\ud800"}]', "array", max_depth=32)


def test_too_deep_to_parse_names_a_position() -> None:
    data = b'[{"a": 1},\n {"b": ' + b"[" * 3000 + b"]" * 3000 + b"}]"
    with pytest.raises(BatchReadError, match=r"line 2, column \d+: nested too deeply"):
        parse_records(data, "array", max_depth=32)


def test_row_hash_of_integers_beyond_64_bits_is_deterministic() -> None:
    a = {"order_id": 2**70, "total": 1.5}
    assert row_hash(a) == row_hash({"total": 1.5, "order_id": 2**70})
    assert row_hash(a) != row_hash({**a, "order_id": 2**70 + 1})
    assert canonical_json(a) == b'{"order_id":1180591620717411303424,"total":1.5}'
