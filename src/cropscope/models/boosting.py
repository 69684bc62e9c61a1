"""LightGBM gradient-boosted trees on engineered features, saved as LightGBM text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.models._tabular import FeatureClassifier

__all__ = ["LightGBM"]

_WEIGHTS = "lightgbm.txt"


class LightGBM(FeatureClassifier):
    """LightGBM multiclass boosting (class-balanced) on engineered features."""

    requires = ("lightgbm",)

    @classmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        return {"n_estimators": 400, "learning_rate": 0.05, "num_leaves": 31,
                "min_child_samples": 10, "subsample": 0.8, "colsample_bytree": 0.5,
                "class_weight": "balanced"}

    def _fit_estimator(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        import lightgbm as lgb

        c = self.config
        self.estimator_ = lgb.LGBMClassifier(
            n_estimators=c["n_estimators"],
            learning_rate=c["learning_rate"],
            num_leaves=c["num_leaves"],
            min_child_samples=c["min_child_samples"],
            subsample=c["subsample"],
            subsample_freq=1,
            colsample_bytree=c["colsample_bytree"],
            class_weight=c["class_weight"],
            n_jobs=self.n_jobs(),  # explicit: LightGBM ignores OMP_NUM_THREADS
            random_state=c["seed"],
            verbose=-1,
        )
        self.estimator_.fit(x, y)
        self.booster_ = self.estimator_.booster_
        self.codes_ = np.asarray(self.estimator_.classes_)

    def _estimator_proba(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = np.asarray(self.booster_.predict(x, num_threads=self.n_jobs()))
        if raw.ndim == 1:  # binary objective: probability of the positive class
            raw = np.stack([1 - raw, raw], axis=1)
        return raw, self.codes_

    def _save_weights(self, directory: Path) -> None:
        from cropscope.io import atomic_path

        with atomic_path(directory / _WEIGHTS) as tmp:
            self.booster_.save_model(str(tmp))
        np.save(directory / "lightgbm_classes.npy", self.codes_)

    def _load_weights(self, directory: Path) -> None:
        import lightgbm as lgb

        self.booster_ = lgb.Booster(model_file=str(directory / _WEIGHTS))
        self.codes_ = np.load(directory / "lightgbm_classes.npy", allow_pickle=False)
