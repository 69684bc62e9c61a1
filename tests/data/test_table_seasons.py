"""The table reader with samples of several seasons, nodata values, band patterns, a
regular time grid and wide tables."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from cropscope.data.readers.table import (
    align_seasons,
    parse_season_start,
    read_table,
    sample_seasons,
)
from cropscope.errors import DataError
from cropscope.workflows.evaluate import common_time_axis


def multi_year_table(years: tuple[int, ...] = (2015, 2016, 2017), per_year: int = 4,
                     n_dates: int = 23, drop: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """MODIS-like samples: 23 dates a season (16 days apart from 14 September), one
    season per sample; the value is a function of the day of season (+ class offset)."""
    rng = np.random.default_rng(seed)
    rows = []
    for y in years:
        start = np.datetime64(f"{y}-09-14")
        for s in range(per_year):
            label = "soy" if s % 2 else "pasture"
            for k in range(n_dates):
                if drop and rng.random() < drop:
                    continue
                day = start + np.timedelta64(16 * k, "D")
                rows.append({"sample_id": f"{y}_{s}", "date": str(day), "label": label,
                             "NDVI": np.sin(k / 4.0) + (0.5 if label == "soy" else 0.0)})
    return pd.DataFrame(rows)


def test_parse_season_start() -> None:
    assert parse_season_start("09-01") == (9, 1)
    assert parse_season_start("9") == (9, 1)
    assert parse_season_start("Oct") == (10, 1)
    assert parse_season_start(None) is None
    for bad in ("13-01", "02-29", "02-30", "autumn"):
        with pytest.raises(DataError, match="season start"):
            parse_season_start(bad)


def test_several_seasons_are_aligned_by_default(caplog: pytest.LogCaptureFixture) -> None:
    df = multi_year_table()
    with caplog.at_level(logging.INFO, logger="cropscope"):
        ts = read_table(df)
    assert "from 3 seasons (2015..2017, season start 09-01) aligned on the 2015" in caplog.text
    # one axis: every sample on the 2015/16 season (month and day kept; dates after a
    # 29 February of the source season are one day off, hence per-sample dates)
    assert ts.n_times == 23 and ts.mask.all()
    dates = ts.per_sample_dates
    assert (np.abs((dates - dates[0]).astype(int)) <= 1).all()
    assert str(dates[0, 0]) == "2015-09-14" and str(dates[-1, 0]) == "2015-09-14"
    assert sorted(set(ts.meta["season"])) == [2015, 2016, 2017]
    # values follow the samples: same day of season, same value
    np.testing.assert_allclose(ts.values[0, :, 0], ts.values[8, :, 0], atol=1e-6)


def test_align_none_keeps_calendar_dates_per_sample() -> None:
    ts = read_table(multi_year_table(), align="none")
    assert ts.dates.shape == (12, 23)
    assert str(ts.dates[8, 0]) == "2017-09-14" and "season" not in ts.meta.columns


def test_the_issue_failure_union_grid_vs_aligned() -> None:
    """Samples of different years with cloud gaps (different counts): calendar dates give a
    union grid where each sample fills a small part; aligned, they share one axis."""
    df = multi_year_table(years=tuple(range(2010, 2021)), per_year=3, drop=0.1, seed=1)
    raw = read_table(df, align="none")
    aligned = read_table(df)
    filled = raw.mask.sum(axis=1)
    assert raw.n_times > 11 * 20 and filled.max() <= 23  # the 127-columns situation
    # aligned: the 23 days of season (leap years shift some dates by one day)
    assert aligned.n_times <= 2 * 23 and aligned.mask.sum(axis=1).max() <= 23
    grid = read_table(df, step="16D", season_start="09-14")
    assert grid.n_times == 23 and grid.mask.mean() > 0.85


def test_one_season_is_left_alone_unless_asked() -> None:
    df = multi_year_table(years=(2016,))
    ts = read_table(df)
    assert str(ts.dates[0]) == "2016-09-14" and "season" not in ts.meta.columns
    ts = read_table(df, align="season", reference_season=2000)
    assert str(ts.dates[0]) == "2000-09-14" and set(ts.meta["season"]) == {2016}


def test_season_start_decides_the_season() -> None:
    # samples observed Mar..Oct of 2019 and 2020: with a January start they are two seasons
    rows = [{"sample_id": f"s{y}", "date": f"{y}-{m:02d}-10", "label": "a", "v": float(m)}
            for y in (2019, 2020) for m in range(3, 11)]
    df = pd.DataFrame(rows)
    ts = read_table(df, season_start="01-01")
    assert ts.dates.shape == (8,) and str(ts.dates[0]) == "2019-03-10"
    seasons, start = sample_seasons(read_table(df, align="none"), "11-01")
    assert start == (11, 1) and seasons.tolist() == [2018, 2019]


def test_leap_day_after_alignment() -> None:
    rows = [{"sample_id": "a", "date": d, "label": "x", "v": v}
            for d, v in (("2020-02-28", 1.0), ("2020-02-29", 2.0), ("2020-03-01", 3.0))]
    rows += [{"sample_id": "b", "date": d, "label": "y", "v": 5.0}
             for d in ("2019-02-28", "2019-03-01", "2019-03-02")]
    ts = read_table(pd.DataFrame(rows), season_start="01-01")
    a = ts.values[0, :, 0][ts.mask[0]]
    assert a.tolist() == [1.0, 3.0]  # 29 Feb met 28 Feb in 2019: dropped, 28 Feb kept


def test_monthly_grid_equals_pandas_medians() -> None:
    rng = np.random.default_rng(3)
    days = np.datetime64("2022-09-01") + np.arange(0, 150, 10)
    rows = [{"sample_id": s, "date": str(d), "label": "c", "B4": rng.uniform(0, 1),
             "B8": rng.uniform(0, 1)} for s in ("p", "q") for d in days]
    df = pd.DataFrame(rows)
    df.loc[3, "B4"] = 65535.0  # nodata
    ts = read_table(df, step="monthly", nodata=65535)
    assert [str(d) for d in ts.dates] == ["2022-09-01", "2022-10-01", "2022-11-01",
                                          "2022-12-01", "2023-01-01"]
    ref = df.replace(65535.0, np.nan).assign(
        month=pd.to_datetime(df["date"]).dt.to_period("M"))
    med = ref.groupby(["sample_id", "month"])[["B4", "B8"]].median()
    np.testing.assert_allclose(ts.values[0], med.loc["p"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ts.values[1], med.loc["q"].to_numpy(), rtol=1e-6)
    with pytest.raises(DataError, match="time step"):
        read_table(df, step="weekly")


def test_nodata_patterns_and_empty_bands(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame({
        "sample_id": ["a", "a", "b", "b"], "date": ["2021-01-01", "2021-02-01"] * 2,
        "label": ["x", "x", "y", "y"], "S2-B04": [100, 65535, 300, 400],
        "S2-B08": [2000, 2100, 65535, 2300], "S2-B8A": [65535] * 4, "qa": [1, 1, 1, 1],
    })
    with caplog.at_level(logging.INFO, logger="cropscope"):
        ts = read_table(df, bands=["S2-*"], nodata=65535)
    assert ts.bands == ["S2-B04", "S2-B08"] and "S2-B8A holds no value" in caplog.text
    assert np.isnan(ts.values[0, 1, 0]) and np.isnan(ts.values[1, 0, 1])
    assert ts.mask.tolist() == [[True, False], [False, True]]
    with pytest.raises(DataError, match="no column matches band pattern"):
        read_table(df, bands=["S1-*"])
    # a sample without any valid observation: kept (training refuses it) or dropped
    blank = pd.concat([df, df.iloc[:2].assign(sample_id="c", label="z", **{"S2-B04": 65535})])
    assert read_table(blank, bands=["S2-*"], nodata=65535).n_samples == 3
    kept = read_table(blank, bands=["S2-*"], nodata=65535, drop_empty=True)
    assert list(kept.ids) == ["a", "b"]


def test_wide_table_with_pattern() -> None:
    df = pd.DataFrame({
        "sample_id": ["a", "b"], "label": ["x", "y"], "start_date": ["2017-01-01"] * 2,
        "lat": [1.0, 2.0], "lon": [3.0, 4.0],
        **{f"OPTICAL-B04-ts{t}-10m": [10 * t, 20 * t] for t in range(3)},
        **{f"OPTICAL-B11-ts{t}-20m": [1, 2] for t in range(3)},
        **{f"SAR-VV-ts{t}-20m": [5, 65535] for t in range(3)},
    })
    ts = read_table(df, wide="OPTICAL-{band}-ts{t}-*, SAR-{band}-ts{t}-*",
                    time_col="start_date", step="monthly", nodata=65535)
    assert ts.bands == ["B04", "B11", "VV"] and ts.n_times == 3
    assert [str(d) for d in ts.dates] == ["2017-01-01", "2017-02-01", "2017-03-01"]
    np.testing.assert_array_equal(ts.values[1, :, 0], [0, 20, 40])
    assert not ts.mask[1].any() and ts.mask[0].all()
    assert ts.meta["longitude"].tolist() == [3.0, 4.0]
    steps = read_table(df, wide="OPTICAL-{band}-ts{t}-*", time_col="none")
    assert steps.dates is None and steps.n_times == 3
    with pytest.raises(DataError, match=r"needs \{band\} and \{t\}"):
        read_table(df, wide="OPTICAL-*")
    with pytest.raises(DataError, match="no column matches"):
        read_table(df, wide="METEO-{band}-ts{t}")


def test_align_seasons_and_common_axis_of_two_tables() -> None:
    train = read_table(multi_year_table(years=(2021,)), step="monthly")
    test = read_table(multi_year_table(years=(2022,), n_dates=20), step="monthly")
    assert str(test.dates[0]) == "2022-09-01"
    moved = align_seasons(test, "09-01", 2021)
    assert str(moved.dates[0]) == "2021-09-01" and set(moved.meta["season"]) == {2022}
    tr, te = common_time_axis(train, test)
    assert np.array_equal(tr.dates, te.dates) and te.n_times == train.n_times
    # the test season is shorter (20 dates): its last months are gaps on the training grid
    assert te.mask[:, :10].all() and not te.mask[:, -1].any()
    _, te2 = common_time_axis(train, test, align="none")
    assert te2 is test
