"""A rule of one's own ("orders shipped to Springfield are paid with paypal"), end to end through
the pytest plugin's fixtures: real Great Expectations, a real Delta lake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ecom_stream import Part, Rule, read_table
from ecom_stream.api import process_files
from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError, ValidationSetupError
from ecom_stream.quality.validate import Validator
from ecom_stream.transform import clean

NAME = "orders_springfield_pays_paypal"
SPRINGFIELD_PAYS_PAYPAL = Rule(
    name=NAME,
    entity="orders",
    what="shipped to Springfield but not paid with paypal",
    fails=lambda t: (t["shipping_city"] == "Springfield") & (t["payment_method"] != "paypal"),
    column="payment_method",
    sample_columns=("shipping_city", "payment_method"),
    description="orders shipped to Springfield are paid with paypal",
)
RULES = [SPRINGFIELD_PAYS_PAYPAL]


@pytest.fixture
def ecom_rules() -> list[Rule]:
    return RULES


def order(oid: int, city: str = "Chicago", payment: str | None = "paypal") -> dict[str, Any]:
    return {"order_id": oid, "customer_id": 5, "product_ids": [1], "quantities": [2],
            "total": 20.0, "status": "pending", "payment_method": payment,
            "shipping_city": city, "created_at": "2026-01-02T00:00:00",
            "updated_at": "2026-01-02T00:00:00"}


BATCH = [order(1), order(2, "Springfield", "crypto"), order(3, "Springfield"),
         order(4, "Springfield", None)]


def _quality_row(lake: Path) -> dict[str, Any]:
    quality = read_table(lake, "quality.validations")
    (row,) = quality[quality["expectation"] == NAME].to_dict("records")
    return row


def _gx_result(lake: Path) -> dict[str, Any]:
    (path,) = (lake / "raw").rglob("gx_result.json")
    doc = json.loads(path.read_text())
    gx_doc = doc.get("great_expectations", doc)
    (result,) = [r for r in gx_doc["results"]
                 if r["expectation_config"]["kwargs"].get("column") == NAME]
    return result


def test_its_failing_rows_are_rejected_with_its_name(
    ecom_settings: Settings, drop_batch: Any, run_pipeline: Any
) -> None:
    drop_batch("orders-1.json", BATCH)
    summary = run_pipeline()
    assert summary.by_name() == {"orders-1.json": "merged"}
    assert summary.rows_rejected == 2
    lake = ecom_settings.lake_dir
    assert sorted(read_table(lake, "silver.orders")["order_id"]) == [1, 3]
    rejected = read_table(lake, "rejected_rows")
    assert sorted(zip(rejected["key"], rejected["reason"], strict=True)) == [
        ("2", NAME), ("4", NAME)
    ]
    row = _quality_row(lake)
    assert (row["policy"], row["success"], row["unexpected_count"]) == ("drop-row", False, 2)
    assert row["observed_value"].startswith(
        "shipped to Springfield but not paid with paypal: 2 of 4 rows (50.0%); first row_no: 1, 3"
    )
    result = _gx_result(lake)  # a GX expectation of the same run as the built-in ones
    assert result["expectation_config"]["type"] == "expect_column_values_to_be_in_set"
    assert result["result"]["unexpected_index_list"] == [{"_row_no": [1, 3]}]


@pytest.mark.parametrize("ecom_policies", [{NAME: "quarantine-batch"}])
def test_its_policy_can_quarantine_the_file(
    ecom_settings: Settings, drop_batch: Any, run_pipeline: Any
) -> None:
    drop_batch("orders-1.json", BATCH)
    assert run_pipeline().by_name() == {"orders-1.json": "quarantined"}
    lake = ecom_settings.lake_dir
    (record,) = read_table(lake, "quarantine.records").to_dict("records")
    assert record["reason"].startswith("shipped to Springfield but not paid with paypal: 2 of 4")
    (reason_file,) = (lake / "quarantine").rglob("*.reason.json")
    (failed,) = json.loads(reason_file.read_text())["failed_checks"]
    assert failed["check"] == NAME and failed["policy"] == "quarantine-batch"
    assert failed["sample"][0] == {"_row_no": 1, "order_id": 2, "shipping_city": "Springfield",
                                   "payment_method": "crypto"}
    assert read_table(lake, "silver.orders").empty


@pytest.mark.parametrize("ecom_policies", [{NAME: "warn"}])
def test_its_policy_can_only_warn(
    ecom_settings: Settings, drop_batch: Any, run_pipeline: Any
) -> None:
    drop_batch("orders-1.json", BATCH)
    summary = run_pipeline()
    assert summary.rows_merged == 4 and summary.rows_rejected == 0
    row = _quality_row(ecom_settings.lake_dir)
    assert (row["policy"], row["success"], row["unexpected_count"]) == ("warn", False, 2)


def test_a_file_merged_in_pieces_gets_the_same_verdict(
    ecom_settings: Settings, drop_batch: Any
) -> None:
    settings = ecom_settings.replace(microbatch_max_rows=2)
    path = drop_batch("orders-1.json", BATCH)
    summary = process_files(settings.lake_dir, [path], settings)
    assert summary.rows_rejected == 2 and summary.rows_merged == 2
    assert sorted(read_table(settings.lake_dir, "rejected_rows")["key"]) == ["2", "4"]
    assert _quality_row(settings.lake_dir)["unexpected_count"] == 2


def test_the_rules_and_their_policy_come_from_the_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_shop_rules.py").write_text(
        "from ecom_stream import Rule\n"
        "RULES = [Rule(name='orders_springfield_pays_paypal', entity='orders', what='w',\n"
        "              fails=lambda t: t['shipping_city'] == 'Springfield')]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {"ECOM_EXTRA_RULES": "my_shop_rules:RULES",
           f"ECOM_POLICY_{NAME.upper()}": "quarantine-batch"}
    settings = Settings.from_sources(env)
    assert [r.name for r in settings.extra_rules] == [NAME]
    assert Validator(settings).policies[NAME] == "quarantine-batch"
    assert Validator(Settings(extra_rules=RULES)).policies[NAME] == "drop-row"
    # Checked again (a copy of the settings), a rule equals itself: one GX suite serves both.
    assert settings.replace(lake_dir=tmp_path).extra_rules == settings.extra_rules
    with pytest.raises(ConfigError, match="unknown expectation"):
        Settings.from_sources({f"ECOM_POLICY_{NAME.upper()}": "warn"})
    with pytest.raises(ConfigError, match="ECOM_EXTRA_RULES"):
        Settings.from_sources({"ECOM_EXTRA_RULES": "no_such_module_here:RULES"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "orders_status_known"}, "already taken"),
        ({"name": "orders_payment_missing_share"}, "does not end in"),
        ({"name": "Orders-Bad"}, "lower-case"),
        ({"entity": "customers"}, "entity must be"),
        ({"policy": "ignore"}, "policy must be"),
        ({"fails": None}, "fails mask or GX expectations"),
        ({"what": "paid with {payment}"}, "may only format"),
    ],
)
def test_a_faulty_rule_is_a_config_error(changes: dict[str, Any], message: str) -> None:
    import dataclasses

    with pytest.raises(ConfigError, match=message):
        Settings(extra_rules=(dataclasses.replace(SPRINGFIELD_PAYS_PAYPAL, **changes),))
    with pytest.raises(ConfigError, match="already taken"):
        Settings(extra_rules=(SPRINGFIELD_PAYS_PAYPAL, SPRINGFIELD_PAYS_PAYPAL))


def _typed(records: list[dict[str, Any]]) -> Any:
    return clean.typed_view("orders", clean.records_frame("orders", [records]))


def test_a_rule_can_bring_its_own_gx_expectation() -> None:
    """A declarative GX expectation (in-set with a row condition) instead of a mask column."""
    native = Rule(
        name="orders_springfield_pays_paypal_gx", entity="orders",
        what="shipped to Springfield but not paid with paypal", column="payment_method",
        expectations=(Part(
            "springfield_paypal",
            lambda E: E.ExpectColumnValuesToBeInSet(
                column="payment_method", value_set=["paypal"],
                row_condition=E.row_conditions.Column("shipping_city") == "Springfield"),
            (("payment_method", "payment_method", "array"),
             ("shipping_city", "shipping_city", "array")),
        ),),
    )
    validator = Validator(Settings(extra_rules=(native,), policies={native.name: "warn"}))
    (report,) = validator.validate("orders", _typed(BATCH), [set(BATCH[0])])
    (c,) = [c for c in report.checks if c.expectation == native.name]
    # GX's in-set leaves nulls out: order 4 (no payment method) passes this one.
    assert (c.policy, c.success, c.failing_rows.tolist()) == ("warn", False, [1])
    (gx_result,) = [r for r in report.to_json()["great_expectations"]["results"]
                    if r["expectation_config"]["kwargs"].get("row_condition")]
    assert gx_result["result"]["unexpected_index_list"] == [{"_row_no": [1]}]


def test_a_broken_mask_is_a_setup_error_not_bad_data() -> None:
    broken = Rule(name="orders_broken", entity="orders", what="x",
                  fails=lambda t: t["no_such_column"] > 0)
    short = Rule(name="orders_short", entity="orders", what="x",
                 fails=lambda t: np.zeros(1, dtype=bool))
    for rule in (broken, short):
        with pytest.raises(ValidationSetupError, match=rule.name):
            Validator(Settings(extra_rules=(rule,))).validate(
                "orders", _typed(BATCH), [set(BATCH[0])]
            )


def test_rules_of_one_name_but_other_masks_get_their_own_suite() -> None:
    """Two tests may define rules of one name: each validator checks its own (the suite built
    for the other is dropped and rebuilt as needed)."""
    from ecom_stream.quality import gx as quality_gx

    def rule(city: str) -> Rule:
        return Rule(name="orders_not_from_city", entity="orders", what="from the city",
                    fails=lambda t: (t["shipping_city"] == city).to_numpy())

    typed = _typed(BATCH)
    validators = [Validator(Settings(extra_rules=(rule(c),))) for c in ("Chicago", "Springfield")]
    for _ in range(2):
        got = [[c.failing_rows.tolist() for c in v.validate("orders", typed, [set(BATCH[0])])[0]
                .checks if c.expectation == "orders_not_from_city"] for v in validators]
        assert got == [[[0]], [[1, 2, 3]]]
    engine = quality_gx._ENGINE
    assert engine is not None
    copy = Validator(validators[1].settings.replace(max_days_ahead=2.0))
    suites = len(engine.suites)
    copy.validate("orders", typed, [set(BATCH[0])])
    assert len(engine.suites) == suites


def test_the_readme_example_passes(tmp_path: Path) -> None:
    """The README's "Testing your own rules" example, run by pytest as a user's project would."""
    import os
    import subprocess
    import sys
    from importlib.metadata import entry_points

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Testing your own rules", 1)[1].split("\n## ", 1)[0]
    (tmp_path / "test_my_rules.py").write_text(section.split("```python\n", 1)[1].split("```")[0])
    plugin = [] if entry_points(group="pytest11", name="ecom_stream") else [
        "-p", "ecom_stream.testing.plugin"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin,
         "test_my_rules.py"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
