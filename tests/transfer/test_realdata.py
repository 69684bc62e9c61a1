"""Transfer on the real sits Mato Grosso samples: 2015 -> 2014 (cross-year)."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.transfer import TransferSplit, evaluate_transfer, split_by_groups


@pytest.mark.realdata
@pytest.mark.slow
def test_sits_cross_year_transfer(real_data_dir) -> None:
    from cropscope.data import load_dataset

    ts = load_dataset("sits-matogrosso")
    src, tgt = split_by_groups(ts, TransferSplit("year", ("2015",), ("2014",)))
    assert src.n_samples == 758 and tgt.n_samples == 503
    assert not np.intersect1d(src.ids, tgt.ids).size
    res = evaluate_transfer("rf", src, tgt, seeds=(0, 1),
                            config={"n_estimators": 50, "n_jobs": 1, "features": ["values"]})
    run = res.runs[0]
    # 2015 has no Cerrado and no Fallow_Cotton: those 2014 samples are dropped, not scored
    assert run["dropped"] == {"Cerrado": 10, "Fallow_Cotton": 34}
    assert run["n_target"] == 459 and "Cerrado" not in res.classes
    oa = res.summary["target"]["overall_accuracy"]["mean"]
    assert 0.6 < oa < 1.0
