"""The dashboard: read-side views on a real lake, the Streamlit page in AppTest, the server command.

The lake is built once per module with the real pipeline (``generate`` + ``backfill``); tests
that add batches work on a copy of it.
"""

from __future__ import annotations

import shutil
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO
from streamlit.testing.v1 import AppTest

from ecom_stream.cli.main import main as cli
from ecom_stream.config import Settings
from ecom_stream.dashboard import views
from ecom_stream.dashboard.serve import APP, dashboard_command, dashboard_env, serve_dashboard
from ecom_stream.errors import EcomStreamError
from ecom_stream.storage.lake import Lake

APP_FILE = str(APP)  # the app shipped in the package (ecom_stream/dashboard/app.py)
CHECKOUT_APP = str(REPO / "dashboard" / "app.py")  # the thin runner kept in the checkout
BATCHES, ORDERS_PER_BATCH, PRODUCTS = 45, 30, 60  # 15 simulated days
SECTIONS = ("Daily revenue and anomalies", "Pipeline health", "Data quality", "Raw data")
KPI_LABELS = ["Revenue", "Orders", "Avg order value", "Unique customers"]


def build_lake(root: Path, batches: int = BATCHES, start: int = 1) -> tuple[Path, Path]:
    """Generate ``batches`` order files (plus the catalogue) and backfill them into root/lake."""
    lake, landing, source = root / "lake", root / "landing", root / f"source-{start}"
    landing.mkdir(parents=True, exist_ok=True)
    common = ["--lake", str(lake), "--landing", str(landing)]
    assert (
        cli(
            [
                "generate",
                *common,
                "--out",
                str(source),
                "--batches",
                str(batches),
                "--start",
                str(start),
                "--orders-per-batch",
                str(ORDERS_PER_BATCH),
                "--products",
                str(PRODUCTS),
            ]
        )
        == 0
    )
    assert cli(["backfill", *common, str(source), "--no-progress"]) == 0
    return lake, landing


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_lake(tmp_path_factory.mktemp("dash"))


@pytest.fixture
def copied(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the module's lake, for tests that add batches."""
    lake, landing = tmp_path / "lake", tmp_path / "landing"
    shutil.copytree(built[0], lake)
    landing.mkdir()
    return lake, landing


def add_batch(lake: Path, landing: Path, number: int) -> None:
    build_lake(lake.parent, batches=1, start=number)


def app(
    monkeypatch: pytest.MonkeyPatch, lake: Path, landing: Path, script: str = APP_FILE
) -> AppTest:
    monkeypatch.setenv("ECOM_LAKE", str(lake))
    monkeypatch.setenv("ECOM_LANDING", str(landing))
    at = AppTest.from_file(script, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def kpis(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric if m.label in KPI_LABELS}


def money(text: str) -> float:
    """'$812.40', '$45.2K', '$36.90M' as a number."""
    scale = {"K": 1e3, "M": 1e6}.get(text[-1], 1.0)
    return float(text.rstrip("KM").replace("$", "").replace(",", "")) * scale


# -- views on a real lake ----------------------------------------------------------------
def test_kpis_match_gold_totals(built: tuple[Path, Path]) -> None:
    lake = Lake(built[0])
    versions = views.table_versions(lake)
    orders = views.load_orders(lake, versions["silver_orders"], views.DateWindow(None, None))
    overview = views.overview(orders, ("cancelled",))
    daily = views.load_daily_revenue(lake, versions["daily_revenue"])
    gold_all = daily.loc[daily["category"] == "All", "revenue"].sum()
    revenue = overview.kpis[0]
    assert revenue.value == pytest.approx(gold_all, abs=0.01)
    assert overview.kpis[1].value == len(orders)
    latest = orders["order_date"].max()
    assert revenue.delta == pytest.approx(
        orders.loc[
            (orders["order_date"] == latest) & (orders["status"] != "cancelled"), "total"
        ].sum()
    )
    assert list(overview.heatmap.index) == [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ]
    assert overview.heatmap.to_numpy().sum() == len(orders)


def test_loads_by_version_stay_consistent_while_commits_land(copied: tuple[Path, Path]) -> None:
    lake = Lake(copied[0])
    before = views.table_versions(lake)["silver_orders"]
    old = views.load_orders(lake, before, views.DateWindow(None, None))
    add_batch(*copied, number=BATCHES + 1)
    after = views.table_versions(lake)["silver_orders"]
    assert after > before
    pd.testing.assert_frame_equal(
        views.load_orders(lake, before, views.DateWindow(None, None)), old
    )
    assert len(views.load_orders(lake, after, views.DateWindow(None, None))) > len(old)


def test_date_window_prunes_and_preview_reads_recent_days(built: tuple[Path, Path]) -> None:
    lake = Lake(built[0])
    v = views.table_versions(lake)["silver_orders"]
    everything = views.load_orders(lake, v, views.DateWindow(None, None))
    newest = everything["order_date"].max().date()
    window = views.resolve_window("Last 7 days", None, newest)
    assert window == views.DateWindow(newest - timedelta(days=6), None)
    week = views.load_orders(lake, v, window)
    assert 0 < len(week) < len(everything)
    assert week["order_date"].min().date() >= newest - timedelta(days=6)
    preview = views.preview_orders(
        lake, v, newest, views.Filters(statuses=("delivered",)), limit=25
    )
    assert 0 < len(preview) <= 25
    assert set(preview["status"]) == {"delivered"}
    assert preview["order_date"].min() >= newest - timedelta(days=2)
    assert preview["created_at"].is_monotonic_decreasing


def test_missing_tables_read_as_empty(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "nothing")
    assert set(views.table_versions(lake).values()) == {views.MISSING}
    assert views.table_versions(lake, ["ledger"], previous={"ledger": 7}) == {"ledger": 7}
    assert views.load_orders(lake, views.MISSING, views.DateWindow(None, None)).empty
    assert views.load_anomalies(lake, views.MISSING).empty
    assert views.load_quarantine(lake, views.MISSING).empty


# -- pure views --------------------------------------------------------------------------
def orders_frame() -> pd.DataFrame:
    d1, d2 = date(2026, 3, 1), date(2026, 3, 2)
    return pd.DataFrame(
        {
            "order_id": [1, 2, 3, 4],
            "customer_id": [10, 11, 10, 12],
            "total": [100.0, 50.0, 30.0, 999.0],
            "status": ["delivered", "shipped", "delivered", "cancelled"],
            "shipping_city": ["Paris", None, "Paris", "Rome"],
            "order_date": pd.to_datetime([d1, d1, d2, d2]),  # as load_orders returns it
            "order_month": ["2026-03"] * 4,
            "order_dow": ["Sunday", "Sunday", "Monday", "Monday"],
            "order_hour": [9, 10, 9, 23],
        "payment_method": ["paypal", "crypto", None, "paypal"],
        "n_items": [1, 2, 1, 3],
        }
    )


def test_kpis_change_since_previous_day() -> None:
    found, latest = views.kpis(orders_frame(), ("cancelled",))
    assert latest == date(2026, 3, 2)
    got = {k.label: (k.value, k.delta) for k in found}
    assert got["Revenue"] == (180.0, 30.0)
    assert got["Orders"] == (4.0, 2.0)
    assert got["Avg order value"] == (60.0, pytest.approx(60.0 - 75.0))
    assert got["Unique customers"] == (2.0, 0.0)  # 10 came back; 12 only cancelled


@pytest.mark.parametrize(
    ("filters", "ids"),
    [
        (views.Filters(), [1, 2, 3, 4]),
        (views.Filters(statuses=("delivered",)), [1, 3]),
        (views.Filters(start=date(2026, 3, 2)), [3, 4]),
        (views.Filters(categories=("Books",)), [2, 3]),
        (views.Filters(categories=("Books",), statuses=("shipped",)), [2]),
        (views.Filters(categories=("Toys",)), []),
    ],
)
def test_apply_filters(filters: views.Filters, ids: list[int]) -> None:
    cats = pd.DataFrame(
        {"order_id": [1, 2, 2, 3, 4], "category": ["Home", "Home", "Books", "Books", "Home"]}
    )
    assert views.apply_filters(orders_frame(), filters, cats)["order_id"].tolist() == ids


def test_overview_of_no_orders_is_empty_not_an_error() -> None:
    ov = views.overview(orders_frame().iloc[:0], ("cancelled",))
    assert ov.rows == 0 and ov.latest_day is None
    assert [k.value for k in ov.kpis] == [0.0, 0.0, 0.0, 0.0]
    assert ov.heatmap.shape == (7, 24)


# -- the Streamlit page ------------------------------------------------------------------
def test_every_section_renders(monkeypatch: pytest.MonkeyPatch, built: tuple[Path, Path]) -> None:
    at = app(monkeypatch, *built)
    assert list(kpis(at)) == KPI_LABELS
    assert all(m.delta for m in at.metric if m.label in KPI_LABELS)
    subheaders = [s.value for s in at.subheader]
    assert all(s in subheaders for s in SECTIONS), subheaders
    assert (
        len(at.get("plotly_chart")) >= 7
    )  # monthly, status, city, heatmap, prices, daily, pass rate
    health = {m.label: m.value for m in at.metric}
    assert int(health["Merged"].replace(",", "")) >= BATCHES
    assert health["Backlog"] == "0"
    assert not at.warning


def test_filters_change_the_numbers(
    monkeypatch: pytest.MonkeyPatch, built: tuple[Path, Path]
) -> None:
    at = app(monkeypatch, *built)
    base = kpis(at)
    at.multiselect(key="f_statuses").set_value(["delivered"]).run()
    delivered = kpis(at)
    assert int(delivered["Orders"].replace(",", "")) < int(base["Orders"].replace(",", ""))
    at.multiselect(key="f_statuses").set_value(list(views.STATUSES))
    at.multiselect(key="f_categories").set_value(["Books"]).run()
    books = kpis(at)
    assert money(books["Revenue"]) < money(base["Revenue"])
    at.multiselect(key="f_categories").set_value(
        list(views.category_options(pd.DataFrame({"category": []})))
    )
    at.selectbox(key="f_window").set_value("Last 7 days").run()
    assert int(kpis(at)["Orders"].replace(",", "")) < int(base["Orders"].replace(",", ""))
    assert not at.exception


def test_empty_selection_shows_a_message(
    monkeypatch: pytest.MonkeyPatch, built: tuple[Path, Path]
) -> None:
    at = app(monkeypatch, *built)
    at.multiselect(key="f_categories").set_value([]).run()
    assert not at.exception
    assert any("No category selected" in w.value for w in at.warning)
    assert not kpis(at)
    assert "Pipeline health" in [s.value for s in at.subheader]


def test_filters_matching_no_orders_show_a_message(
    monkeypatch: pytest.MonkeyPatch, built: tuple[Path, Path]
) -> None:
    at = app(monkeypatch, *built)
    at.multiselect(key="f_statuses").set_value(["unknown"]).run()
    assert not at.exception
    assert any("No orders match" in i.value for i in at.info)


def test_empty_lake_renders_the_empty_state(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = app(monkeypatch, tmp_path / "lake", tmp_path / "landing")
    assert any("is empty" in i.value for i in at.info)
    assert not kpis(at)
    assert {m.label: m.value for m in at.metric}["Daemon"] == "not running"


def test_bad_setting_is_a_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ECOM_DASHBOARD_REFRESH_SECONDS", "soon")
    at = app(monkeypatch, tmp_path / "lake", tmp_path / "landing")
    assert any("ECOM_DASHBOARD_REFRESH_SECONDS" in e.value for e in at.error)


def test_refresh_shows_a_new_batch(
    monkeypatch: pytest.MonkeyPatch, copied: tuple[Path, Path]
) -> None:
    at = app(monkeypatch, *copied)
    before = kpis(at)
    add_batch(*copied, number=BATCHES + 1)
    at.run()  # what the fragment's run_every timer does in a browser
    after = kpis(at)
    assert int(after["Orders"].replace(",", "")) > int(before["Orders"].replace(",", ""))
    assert not at.exception


def test_a_failing_load_shows_the_last_good_data(
    monkeypatch: pytest.MonkeyPatch, copied: tuple[Path, Path]
) -> None:
    at = app(monkeypatch, *copied)
    before = kpis(at)

    def racing(*args: Any, **kwargs: Any) -> Any:
        raise OSError("file vanished mid-read")

    add_batch(*copied, number=BATCHES + 1)
    monkeypatch.setattr(views, "load_orders", racing)
    at.run()
    assert not at.exception
    assert kpis(at) == before
    assert any("last good data" in c.value for c in at.caption)


def test_refreshes_racing_commits_never_fail(
    monkeypatch: pytest.MonkeyPatch, copied: tuple[Path, Path]
) -> None:
    at = app(monkeypatch, *copied)
    writer = threading.Thread(
        target=lambda: [add_batch(*copied, number=BATCHES + n) for n in (1, 2, 3)]
    )
    writer.start()
    runs = 0
    while writer.is_alive() or runs == 0:
        at.run()
        runs += 1
        assert not at.exception, [e.value for e in at.exception]
    writer.join()
    at.run()
    expected = views.table_versions(Lake(copied[0]))
    shown = int(kpis(at)["Orders"].replace(",", ""))
    assert shown == Lake(copied[0]).queries.count("silver_orders"), expected


# -- serving -----------------------------------------------------------------------------
def test_dashboard_command_is_local_and_headless(tmp_path: Path) -> None:
    settings = Settings(
        lake_dir=tmp_path / "lake", landing_dir=tmp_path / "landing", dashboard_port=8765
    )
    cmd = dashboard_command(settings, Path(APP_FILE))
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == APP_FILE
    assert APP.is_file() and Path(APP_FILE).parent == REPO / "ecom_stream" / "dashboard"
    for flag in (
        "--server.headless=true",
        "--server.address=127.0.0.1",
        "--server.port=8765",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
    ):
        assert flag in cmd
    env = dashboard_env(settings, base={})
    assert env["ECOM_LAKE"] == str((tmp_path / "lake").absolute())
    assert Settings.from_sources(env).lake_dir == (tmp_path / "lake").absolute()


def test_the_checkout_runner_shows_the_packaged_app(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`streamlit run dashboard/app.py` from a checkout renders the same page, once."""
    packaged = app(monkeypatch, *built)
    runner = app(monkeypatch, *built, script=CHECKOUT_APP)
    assert kpis(runner) == kpis(packaged) and len(kpis(runner)) == len(KPI_LABELS)
    assert [m.label for m in runner.metric] == [m.label for m in packaged.metric]


def test_missing_app_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EcomStreamError, match="dashboard script not found"):
        serve_dashboard(Settings(lake_dir=tmp_path), app=tmp_path / "nope.py")
