"""Cross-region and cross-year transfer: the CropGlobe protocol and the transfer study.

- :mod:`~cropscope.transfer.protocol`: label-space alignment and remapping, group splits,
  :func:`evaluate_transfer` (train on a source, test on targets, mean ± std over seeds).
- :mod:`~cropscope.transfer.study`: features x models x augmentation grid (:func:`run_study`).
- :mod:`~cropscope.transfer.plot`: the study figure.
"""

from cropscope.transfer.protocol import (
    CROPGLOBE_CLASSES,
    CROPGLOBE_TARGET_CLASSES,
    TransferResult,
    TransferSplit,
    align_target,
    compact_classes,
    drop_duplicates,
    evaluate_transfer,
    group_block_splits,
    parse_groups,
    remap_predictions,
    score_transfer,
    split_by_groups,
)

__all__ = [
    "CROPGLOBE_CLASSES",
    "CROPGLOBE_TARGET_CLASSES",
    "TransferResult",
    "TransferSplit",
    "align_target",
    "compact_classes",
    "drop_duplicates",
    "evaluate_transfer",
    "group_block_splits",
    "parse_groups",
    "remap_predictions",
    "score_transfer",
    "split_by_groups",
]
