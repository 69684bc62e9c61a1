"""What every labelled sample container shares (time-series sets, patch sets)."""

from __future__ import annotations

import numpy as np

from cropscope.errors import DataError

__all__ = ["LabelledSamples"]


class LabelledSamples:
    """Mixin over ``values`` (samples first), integer ``labels`` (-1 = unlabelled) and
    ``classes``; ``_kind`` names the container in error messages."""

    values: np.ndarray
    labels: np.ndarray | None
    classes: list[str]
    _kind = "set"

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def n_samples(self) -> int:
        return self.values.shape[0]

    @property
    def label_names(self) -> np.ndarray:
        """Label names per sample (empty string for unlabelled)."""
        if self.labels is None:
            raise DataError(f"this {self._kind} has no labels")
        return np.array([*self.classes, ""], dtype=object)[self.labels]

    def class_counts(self) -> dict[str, int]:
        """Number of labelled samples per class, in class order."""
        if self.labels is None:
            raise DataError(f"this {self._kind} has no labels")
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}
