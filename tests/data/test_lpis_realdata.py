"""The WorldCereal LPIS samples through the table reader: both French files as long tables
(65535 = nodata, monthly and dekadal steps), train on 2022 Corsica and evaluate on 2023
south-west France on one monthly grid at two levels of the EWOC code hierarchy; the wide
African file through the same reader with a column pattern."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cropscope.data.readers.table import read_table
from cropscope.evaluation import evaluate_predictions, evaluate_split
from cropscope.models.registry import create_model
from cropscope.workflows.evaluate import common_time_axis
from tests.conftest import shared_folder

S2 = "S2-L2A-*"
FILES = {"corsica": "2022_FRA_LPIS_POLY_110.geoparquet",
         "southwest": "2023_FRA_LPIS_POLY_110.geoparquet"}


def _raw(folder: Path, name: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(folder / name).to_pandas()


@pytest.mark.realdata
@pytest.mark.slow
def test_lpis_files_cross_region_on_a_monthly_grid(real_data_dir: Path) -> None:
    folder = shared_folder(real_data_dir, "worldcereal_lpis_samples")
    options = {"time_col": "timestamp", "label_col": "ewoc_code", "bands": [S2],
               "nodata": 65535}
    # as they are: monthly (Corsica) and dekadal (south-west) steps
    corsica = read_table(folder / FILES["corsica"], **options)
    south = read_table(folder / FILES["southwest"], **options)
    raw_s = _raw(folder, FILES["southwest"])
    assert south.n_samples == raw_s["sample_id"].nunique() == 500
    assert south.n_times == raw_s["timestamp"].nunique()  # the dekadal grid
    assert corsica.n_times == _raw(folder, FILES["corsica"])["timestamp"].nunique()
    assert "S2-L2A-B8A" not in south.bands  # all 65535: dropped
    b04 = raw_s["S2-L2A-B04"]
    assert np.isnan(south.band("S2-L2A-B04")).sum() == (
        (b04 == 65535).sum() + south.n_samples * south.n_times - len(raw_s))
    assert np.nanmax(south.values) < 65535

    # one monthly grid: per-sample monthly medians of the valid dekads
    monthly = {k: read_table(folder / f, step="monthly", **options) for k, f in FILES.items()}
    sid = str(monthly["southwest"].ids[7])
    one = raw_s[raw_s["sample_id"] == sid].replace(65535, np.nan)
    valid = one.filter(like="S2-L2A-B").drop(columns="S2-L2A-B8A").notna().all(axis=1)
    ref = one[valid].groupby(one["timestamp"].dt.to_period("M"))["S2-L2A-B08"].median()
    got = pd.Series(monthly["southwest"].band("S2-L2A-B08")[7],
                    index=pd.to_datetime(monthly["southwest"].dates).to_period("M"))
    np.testing.assert_allclose(got[ref.index].to_numpy(), ref.to_numpy(), rtol=1e-6)

    train, test = common_time_axis(monthly["corsica"], monthly["southwest"])
    assert np.array_equal(train.dates, test.dates)  # 2023 season moved onto 2022's
    assert set(test.meta["season"]) == {2022} and str(test.dates[0]) == "2021-09-01"
    train = train.subset(train.mask.any(axis=1))
    test = test.subset(test.mask.any(axis=1))
    res = evaluate_split(functools.partial(create_model, "rf", n_estimators=100, seed=0,
                                           n_jobs=1), train, test)
    names = np.asarray(res.classes, dtype=object)
    for digits in (2, 4):  # EWOC codes: two-digit groups, coarse to fine
        truth = [c[:digits] for c in names[res.y_true]]
        pred = [c[:digits] for c in names[res.y_pred]]
        level = evaluate_predictions(truth, pred, sorted(set(truth) | set(pred)))
        assert 0.0 <= level.macro_f1 <= level.overall_accuracy <= 1.0
        # better than predicting the training set's most common group everywhere
        major = pd.Series([c[:digits] for c in train.label_names]).mode()[0]
        assert level.overall_accuracy > np.mean(np.asarray(truth) == major)


@pytest.mark.realdata
def test_wide_african_file_with_a_column_pattern(real_data_dir: Path) -> None:
    folder = shared_folder(real_data_dir, "worldcereal_lpis_samples")
    path = folder / "test_public_extractions.parquet"
    ts = read_table(path, wide="OPTICAL-{band}-ts{t}-*, SAR-{band}-ts{t}-*",
                    time_col="start_date", step="monthly", label_col="ewoc_code",
                    nodata=65535)
    raw = pd.read_parquet(path)
    assert ts.n_samples == len(raw) == 500 and ts.n_times == 12
    assert str(ts.dates[0]) == raw["start_date"].iloc[0]
    assert {"B02", "B04", "B08", "B11", "VV", "VH"} <= set(ts.bands)
    row = raw.set_index("sample_id").loc[str(ts.ids[3])]
    expected = row[[f"OPTICAL-B04-ts{t}-10m" for t in range(12)]].to_numpy(np.float64)
    expected[expected == 65535] = np.nan
    np.testing.assert_array_equal(ts.band("B04")[3], expected.astype(np.float32))
    assert sorted(ts.classes) == sorted(str(c) for c in raw["ewoc_code"].unique())


@pytest.mark.realdata
@pytest.mark.slow
def test_south_west_file_scored_on_ewoc_prefix_levels(real_data_dir: Path) -> None:
    """The dekadal file cross-validated in 10 km blocks and scored on the first 2 and 4
    digits of the EWOC codes (``--taxonomy prefixes:2,4``), as benchmarks/lpis_cv.py does."""
    import json

    from tests.cli.test_cli import run_cli

    path = shared_folder(real_data_dir, "worldcereal_lpis_samples") / FILES["southwest"]
    proc = run_cli("--threads", "1", "evaluate", "--table", str(path), "--time-col",
                   "timestamp", "--label-col", "ewoc_code", "--bands", S2, "--nodata", "65535",
                   "--drop-empty", "--model", "rf", "--set", "n_estimators=30", "--cv", "3",
                   "--seed", "0", "--spatial-blocks", "10km", "--taxonomy", "prefixes:2,4",
                   "--levels", "--json")  # fmt: skip
    result = json.loads(proc.stdout)
    levels = {e["level"]: e for e in result["levels"]}
    assert list(levels) == ["prefix2", "prefix4", "code"]
    assert [levels[k]["n_classes"] for k in levels] == [4, 17, 47]
    assert result["n_samples"] == 499  # the parcel without any observation is dropped
    # consistent decoding: a right code has right prefixes, so coarser levels score higher
    oa = [levels[k]["overall_accuracy"] for k in ("code", "prefix4", "prefix2")]
    assert oa == sorted(oa) and oa[0] < oa[-1]
    assert result["config"]["spatial_blocks"] == "10km"
