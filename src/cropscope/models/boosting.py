"""LightGBM gradient-boosted trees on engineered features, saved as LightGBM text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import ModelError
from cropscope.models._tabular import FeatureClassifier

__all__ = ["MAX_LIGHTGBM_BYTES", "LightGBM", "check_lightgbm_model"]

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
            class_weight=self.class_weight_,
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

        path = directory / _WEIGHTS
        text = check_lightgbm_model(path)
        try:
            self.booster_ = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"{path} is not a readable LightGBM model: {exc}") from None
        from cropscope.io import read_arrays

        self.codes_ = read_arrays(directory / "lightgbm_classes.npy", error=ModelError)
        per_iteration = self.booster_.num_model_per_iteration()
        fits = len(self.codes_) == per_iteration or (len(self.codes_) == 2 and per_iteration == 1)
        if self.codes_.ndim != 1 or self.codes_.dtype.kind not in "iu" or not fits:
            raise ModelError(f"{directory}: lightgbm_classes.npy does not fit the model")


#: the most bytes a LightGBM model file may have (read whole into memory)
MAX_LIGHTGBM_BYTES = 1 << 30


def check_lightgbm_model(path: Path) -> str:
    """The text of a LightGBM model file, checked before LightGBM parses it: LightGBM's own
    parser trusts the ``tree_sizes`` header and reads past the end of a truncated or edited
    file (a segmentation fault). Every tree block must lie inside the file, before
    ``end of trees``, and the file must end with the line LightGBM writes last; anything else
    is a :class:`ModelError`."""
    if not path.is_file():
        raise ModelError(f"LightGBM model not found: {path}")
    if path.stat().st_size > MAX_LIGHTGBM_BYTES:
        raise ModelError(f"{path} is too large to be a LightGBM model")
    data = path.read_bytes()
    bad = ModelError(f"{path} is not a complete LightGBM model file (damaged or truncated)")
    lines = data.rstrip(b"\n").rsplit(b"\n", 1)
    if not data.startswith(b"tree\n") or not lines[-1].startswith(b"pandas_categorical:"):
        raise bad  # LightGBM writes this line last: without it the file was cut
    start, end = data.find(b"\nTree=") + 1, data.find(b"\nend of trees")
    header = data[:start] if start > 0 else b""
    sizes_line = [line for line in header.split(b"\n") if line.startswith(b"tree_sizes=")]
    if start <= 0 or end < start or len(sizes_line) != 1:
        raise bad
    try:
        sizes = [int(v) for v in sizes_line[0][len(b"tree_sizes="):].split()]
    except ValueError:
        raise bad from None
    if not sizes or min(sizes) <= 0 or start + sum(sizes) != end + 1 \
            or data.count(b"\nTree=", start - 1, end) != len(sizes):
        raise bad
    offset = start
    for size in sizes:  # each block starts with its own Tree= line
        if not data.startswith(b"Tree=", offset):
            raise bad
        offset += size
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise bad from None
