"""Spatial-block CV on the sits Mato Grosso NDVI samples reproduces the situation of issue
18: every Forest sample lies in one 0.5° block, the fold that holds it out trains without
Forest (the warning names it), and block CV scores well below random CV."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from cropscope.data.registry import load_dataset
from cropscope.evaluation import cross_validate
from cropscope.evaluation.spatial import coordinate_blocks
from cropscope.models.registry import create_model
from tests.conftest import shared_folder


@pytest.mark.realdata
@pytest.mark.slow
def test_mato_grosso_spatial_blocks_name_forest(real_data_dir: Path) -> None:
    shared_folder(real_data_dir, "sits_matogrosso")
    ts = load_dataset("sits-matogrosso-ndvi")
    factory = functools.partial(create_model, "rf", n_estimators=60, seed=0, n_jobs=1)
    with pytest.warns(UserWarning, match=r"trains without class 'Forest' \((\d+) test"):
        blocks = cross_validate(factory, ts, cv=5, seed=0, spatial_blocks="0.5deg")
    random = cross_validate(factory, ts, cv=5, seed=0)

    forest = ts.label_names == "Forest"
    missing = [f for f in blocks.fold_metrics if f["missing_in_train"]]
    assert [f["missing_in_train"] for f in missing] == [["Forest"]]
    assert missing[0]["test_class_counts"]["Forest"] == int(forest.sum())
    ids, _ = coordinate_blocks(ts.meta, "0.5deg")
    assert len(set(ids[forest])) == 1  # the data: one block holds every Forest sample
    # Forest is never predicted right under blocks, and block CV scores clearly lower
    names = np.asarray(blocks.classes)
    assert not (names[blocks.y_pred[forest]] == "Forest").any()
    assert blocks.overall_accuracy < random.overall_accuracy - 0.05
    assert blocks.macro_f1 < random.macro_f1 - 0.15
