from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.data.readers.table import read_table, write_table
from cropscope.errors import DataError
from tests.conftest import make_toy_set


def long_table(
    ids: tuple[str, ...] = ("a", "b"),
    dates: tuple[str, ...] = ("2021-04-03", "2021-04-18", "2021-05-03"),
    labels: tuple[str, ...] = ("wheat", "maize"),
) -> pd.DataFrame:
    rows = []
    for k, (sid, lab) in enumerate(zip(ids, labels, strict=True)):
        for t, d in enumerate(dates):
            rows.append(
                {"sample_id": sid, "date": d, "B4": 0.1 * k + 0.01 * t, "B8": 0.5 + 0.01 * t,
                 "label": lab, "region": f"r{k}"}
            )  # fmt: skip
    return pd.DataFrame(rows)


def error_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------- reading
def test_dataframe_shared_dates() -> None:
    ts = read_table(long_table())
    assert ts.values.shape == (2, 3, 2) and ts.bands == ["B4", "B8"]
    assert ts.dates.dtype == np.dtype("datetime64[D]") and ts.dates.shape == (3,)
    assert str(ts.dates[0]) == "2021-04-03"
    assert list(ts.ids) == ["a", "b"]
    assert ts.classes == ["maize", "wheat"] and list(ts.label_names) == ["wheat", "maize"]
    assert ts.meta["region"].tolist() == ["r0", "r1"]
    np.testing.assert_allclose(ts.values[1, 2], [0.12, 0.52], rtol=1e-6)
    assert ts.mask.all()


def test_rows_are_sorted_by_date_within_sample() -> None:
    df = long_table().sample(frac=1.0, random_state=1)
    ts = read_table(df)
    np.testing.assert_allclose(ts.values[0, :, 0], [0.0, 0.01, 0.02], atol=1e-7)


def test_missing_rows_and_nan_are_gaps() -> None:
    df = long_table(ids=("a", "b", "c"), labels=("x", "y", "z"))
    df = df.drop(index=4)  # sample b misses its second date
    df.loc[7, "B8"] = np.nan  # sample c: NaN in one band
    ts = read_table(df)
    # counts differ (3, 2, 3): union grid with gaps
    assert ts.dates.shape == (3,)
    assert ts.mask.tolist() == [[True, True, True], [True, False, True], [True, False, True]]
    assert np.isnan(ts.values[1, 1]).all()
    assert np.isnan(ts.values[2, 1, 1]) and np.isfinite(ts.values[2, 1, 0])


def test_same_count_different_dates_gives_per_sample_dates() -> None:
    a = long_table(ids=("a",), labels=("x",))
    b = long_table(ids=("b",), labels=("y",), dates=("2022-04-05", "2022-04-20", "2022-05-05"))
    # two seasons (2021, 2022): calendar dates kept only without season alignment
    ts = read_table(pd.concat([b, a], ignore_index=True), align="none")
    assert ts.dates.shape == (2, 3)
    assert list(ts.ids) == ["b", "a"]  # order of first appearance
    assert str(ts.dates[0, 0]) == "2022-04-05" and str(ts.dates[1, 2]) == "2021-05-03"
    assert ts.mask.all()


def test_different_counts_give_union_grid() -> None:
    a = long_table(ids=("a",), labels=("x",))
    b = long_table(ids=("b",), labels=("y",), dates=("2021-04-10", "2021-05-03"))
    ts = read_table(pd.concat([a, b], ignore_index=True))
    assert [str(d) for d in ts.dates] == ["2021-04-03", "2021-04-10", "2021-04-18", "2021-05-03"]
    assert ts.mask.tolist() == [[True, False, True, True], [False, True, False, True]]


def test_integer_time_steps() -> None:
    df = long_table()
    df["date"] = np.tile([0, 1, 3], 2)  # step 2 missing everywhere: still a gap
    ts = read_table(df)
    assert ts.dates is None
    assert ts.values.shape == (2, 4, 2)
    assert ts.mask.tolist() == [[True, True, False, True]] * 2


def test_time_column_fallback_and_yyyymmdd() -> None:
    df = long_table().rename(columns={"date": "time"})
    df["time"] = np.tile([5, 6, 7], 2)
    assert read_table(df).dates is None
    df2 = long_table()
    df2["date"] = np.tile([20210403, 20210418, 20210503], 2)
    ts = read_table(df2)
    assert str(ts.dates[2]) == "2021-05-03"


def test_valid_column_masks_flagged_rows() -> None:
    df = long_table()
    df["valid"] = True
    df.loc[1, "valid"] = False
    ts = read_table(df)
    assert ts.bands == ["B4", "B8"]  # valid is not a band
    assert ts.mask.tolist() == [[True, False, True], [True, True, True]]


def test_labels_numeric_missing_and_given_classes() -> None:
    df = long_table(ids=("a", "b", "c"), labels=("10", "2", "x"))
    df["label"] = [10, 10, 10, 2, 2, 2, np.nan, np.nan, np.nan]
    ts = read_table(df)
    assert ts.classes == ["2", "10"]  # numeric order
    assert ts.labels.tolist() == [1, 0, -1]
    ts2 = read_table(df, classes=["10", "2", "7"])
    assert ts2.classes == ["10", "2", "7"] and ts2.labels.tolist() == [0, 1, -1]
    unlabelled = read_table(long_table().drop(columns="label"), label_col=None)
    assert not unlabelled.has_labels
    partly = long_table()
    partly.loc[0, "label"] = None  # one missing cell in a labelled sample is fine
    assert read_table(partly).label_names.tolist() == ["wheat", "maize"]


def test_explicit_bands_and_meta() -> None:
    df = long_table()
    df["year"] = 2021
    df["note"] = "field visit"
    ts = read_table(df, bands=["B8"], meta_cols=["region", "note"])
    assert ts.bands == ["B8"]
    assert list(ts.meta.columns) == ["region", "note"]
    default = read_table(df)
    assert default.bands == ["B4", "B8"]  # text column ignored, year is meta
    assert list(default.meta.columns) == ["region", "year"]


def test_geometry_and_lon_lat_go_to_meta() -> None:
    df = long_table()
    df["lon"] = np.repeat([4.35, 4.40], 3)
    df["lat"] = np.repeat([50.85, 50.90], 3)
    df["geometry"] = np.repeat(["POINT (4.35 50.85)", "POINT (4.4 50.9)"], 3)
    ts = read_table(df)
    assert ts.bands == ["B4", "B8"]
    assert ts.meta["longitude"].tolist() == [4.35, 4.40]
    assert ts.meta["latitude"].tolist() == [50.85, 50.90]
    assert ts.meta["geometry"].tolist() == ["POINT (4.35 50.85)", "POINT (4.4 50.9)"]


def test_csv_gz_and_parquet_files(tmp_path: Path) -> None:
    df = long_table()
    df.to_csv(tmp_path / "t.csv.gz", index=False)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    df.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    for name in ("t.csv.gz", "t.parquet", "t.tsv"):
        ts = read_table(tmp_path / name)
        assert ts.values.shape == (2, 3, 2), name
        assert ts.classes == ["maize", "wheat"]


def test_geoparquet_without_geopandas_reads_plain(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = long_table()
    df["geometry"] = "POINT (1 2)"
    table = pa.Table.from_pandas(df, preserve_index=False)
    geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {}}
    table = table.replace_schema_metadata({**table.schema.metadata, b"geo": json.dumps(geo)})
    pq.write_table(table, tmp_path / "parcels.parquet")
    if importlib.util.find_spec("geopandas") is not None:
        pytest.skip("geopandas installed: this file is not valid GeoParquet for it")
    ts = read_table(tmp_path / "parcels.parquet")
    assert ts.meta["geometry"].tolist() == ["POINT (1 2)"] * 2


def test_geopackage_with_geopandas(tmp_path: Path) -> None:
    gpd = pytest.importorskip("geopandas")
    shapely = pytest.importorskip("shapely")
    df = long_table()
    gdf = gpd.GeoDataFrame(df, geometry=[shapely.Point(1.0, 2.0)] * len(df), crs="EPSG:4326")
    gdf.to_file(tmp_path / "parcels.gpkg")
    ts = read_table(tmp_path / "parcels.gpkg")
    assert ts.values.shape == (2, 3, 2)
    assert ts.meta["geometry"].tolist() == ["POINT (1 2)"] * 2


# ---------------------------------------------------------------------------- writing
@pytest.mark.parametrize("name", ["set.csv", "set.csv.gz", "set.parquet"])
def test_write_read_roundtrip(tmp_path: Path, name: str) -> None:
    ts = make_toy_set(n_per_class=3, nan_fraction=0.2, seed=4)
    path = write_table(ts, tmp_path / name)
    back = read_table(path)
    np.testing.assert_array_equal(back.values, ts.values)
    np.testing.assert_array_equal(back.mask, ts.mask)
    np.testing.assert_array_equal(back.dates, ts.dates)
    np.testing.assert_array_equal(back.labels, ts.labels)
    assert back.classes == ts.classes and back.bands == ts.bands
    assert list(back.ids) == list(ts.ids)
    assert back.meta["region"].tolist() == ts.meta["region"].tolist()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left


def test_roundtrip_per_sample_dates_and_steps(tmp_path: Path) -> None:
    base = make_toy_set(n_per_class=2, n_times=4)
    shifted = base.per_sample_dates + np.arange(base.n_samples)[:, None].astype("timedelta64[D]")
    ts = base.replace(dates=shifted)
    back = read_table(write_table(ts, tmp_path / "p.csv"))
    np.testing.assert_array_equal(back.dates, shifted)
    steps = base.replace(dates=None)
    back = read_table(write_table(steps, tmp_path / "s.csv"))
    assert back.dates is None and back.values.shape == steps.values.shape


def test_parquet_roundtrip_keeps_extra_meta_and_unlabelled(tmp_path: Path) -> None:
    ts = TimeSeriesSet(
        values=np.arange(12, dtype=np.float32).reshape(2, 3, 2),
        bands=["VV", "VH"],
        ids=np.array([7, 9]),
        meta=pd.DataFrame({"polygon_id": [70, 90]}),
    )
    back = read_table(write_table(ts, tmp_path / "u.parquet"))
    assert back.bands == ["VV", "VH"] and not back.has_labels
    assert back.meta["polygon_id"].tolist() == [70, 90]
    with pytest.raises(DataError, match="unsupported"):
        write_table(ts, tmp_path / "u.xlsx")


# ---------------------------------------------------------------------------- errors
def test_error_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "absent.csv")
    assert "file not found" in error_line(exc) and "absent.csv" in error_line(exc)


def test_error_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "t.xlsx")
    assert "unsupported" in error_line(exc) and ".xlsx" in error_line(exc)


@pytest.mark.parametrize(
    ("kwargs", "drop", "expected"),
    [
        ({}, "sample_id", "id column 'sample_id'"),
        ({"id_col": "parcel"}, None, "id column 'parcel'"),
        ({}, "date", "time column 'date'"),
        ({}, "label", "label column 'label'"),
        ({"label_col": "crop"}, None, "label column 'crop'"),
    ],
)
def test_error_missing_columns(kwargs: dict, drop: str | None, expected: str) -> None:
    df = long_table()
    if drop:
        df = df.drop(columns=drop)
    with pytest.raises(DataError) as exc:
        read_table(df, **kwargs)
    msg = error_line(exc)
    assert expected in msg and "columns are: " in msg and "B4" in msg


def test_error_duplicate_rows() -> None:
    df = long_table()
    df = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    with pytest.raises(DataError) as exc:
        read_table(df)
    msg = error_line(exc)
    assert "duplicate" in msg and "'b'" in msg and "2021-04-18" in msg and "rows 4, 6" in msg


def test_error_non_numeric_band(tmp_path: Path) -> None:
    df = long_table()
    df["B8"] = df["B8"].astype(object)
    df.loc[2, "B8"] = "0.5x"
    with pytest.raises(DataError) as exc:
        read_table(df)
    msg = error_line(exc)
    assert "'B8'" in msg and "'0.5x'" in msg and "row 2" in msg
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"0\.5x"):
        read_table(tmp_path / "bad.csv", bands=["B4", "B8"])


def test_error_unparseable_dates() -> None:
    df = long_table()
    df.loc[3, "date"] = "someday"
    with pytest.raises(DataError) as exc:
        read_table(df)
    msg = error_line(exc)
    assert "'someday'" in msg and "'date'" in msg and "row 3" in msg


def test_error_label_not_constant() -> None:
    df = long_table()
    df.loc[1, "label"] = "barley"
    with pytest.raises(DataError) as exc:
        read_table(df)
    msg = error_line(exc)
    assert "not constant" in msg and "'a'" in msg and "barley" in msg and "wheat" in msg


def test_error_no_band_columns() -> None:
    df = long_table()[["sample_id", "date", "label", "region"]]
    with pytest.raises(DataError) as exc:
        read_table(df)
    assert "no band columns" in error_line(exc)
    with pytest.raises(DataError, match="no band columns"):
        read_table(long_table(), bands=["B2"])


def test_error_missing_ids_and_times() -> None:
    df = long_table()
    df.loc[2, "sample_id"] = None
    with pytest.raises(DataError, match="row 2"):
        read_table(df)
    df = long_table()
    df.loc[5, "date"] = None
    with pytest.raises(DataError, match=r"missing values, e\.g\. row 5"):
        read_table(df)


# ---------------------------------------------------------------------------- issue 20
@pytest.mark.parametrize("value", ["inf", "-inf", "1e40", "-3.5e39"])
def test_infinite_or_float32_overflowing_values_are_refused_not_gaps(
        tmp_path: Path, value: str) -> None:
    """Issue 20 item 9: +inf/-inf and values beyond float32 used to become gaps silently
    (and a series of them was classified); they are damaged data, refused with the row."""
    df = long_table()
    df["B8"] = df["B8"].astype(object)
    df.loc[4, "B8"] = value
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError) as exc:
        read_table(path)
    assert "'B8'" in error_line(exc) and "row 4" in error_line(exc)
    numeric = long_table()
    numeric.loc[1, "B4"] = float(value)  # a float column (inf, or overflow at float32)
    with pytest.raises(DataError, match="infinite"):
        read_table(numeric)
    gaps = long_table()
    gaps.loc[1, "B4"] = np.nan  # NaN is still a gap
    assert not read_table(gaps).mask[0, 1]


def test_a_tiny_table_that_declares_a_huge_grid_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 10: a 118 KB CSV asked for more than 6 GB (every sample at two far-apart
    integer steps: samples x 100 000 steps x bands). The size is checked before allocating,
    and the limit is in the message."""
    rows = [f"s{i},{t},0.1,0.2,{'ab'[i % 2]}" for i in range(2000) for t in (0, 99_999)]
    path = tmp_path / "t.csv"
    path.write_text("sample_id,time,B4,B8,label\n" + "\n".join(rows) + "\n")
    assert path.stat().st_size < 150_000
    monkeypatch.setenv("CROPSCOPE_MEMORY_LIMIT", "1G")
    with pytest.raises(DataError) as exc:
        read_table(path)
    msg = error_line(exc)
    assert "2000 samples x 100000 time steps" in msg and "limit of 1.0 GiB" in msg
    assert "CROPSCOPE_MEMORY_LIMIT" in msg
    monkeypatch.setenv("CROPSCOPE_MEMORY_LIMIT", "lots")
    from cropscope.errors import SettingsError

    with pytest.raises(SettingsError, match="CROPSCOPE_MEMORY_LIMIT"):
        read_table(path)
