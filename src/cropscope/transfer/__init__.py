"""Cross-region and cross-year transfer: the CropGlobe protocol and the transfer study.

- :mod:`~cropscope.transfer.protocol`: label-space alignment and remapping, group splits,
  :func:`evaluate_transfer` (train on a source, test on targets, mean ± std over seeds).
- :mod:`~cropscope.transfer.study`: features x models x augmentation grid (:func:`run_study`).
- :mod:`~cropscope.transfer.plot`: the study figure.
- :mod:`~cropscope.transfer.experiments`: both from a dataset, table or CropGlobe folder
  (:func:`run_transfer`, :func:`run_transfer_study`: what ``cropscope transfer`` runs).
"""

from cropscope.transfer.experiments import run_transfer, run_transfer_study
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
    transfer_splits,
)
from cropscope.transfer.study import StudyConfig, StudyResult, run_study

__all__ = [
    "CROPGLOBE_CLASSES",
    "CROPGLOBE_TARGET_CLASSES",
    "StudyConfig",
    "StudyResult",
    "TransferResult",
    "TransferSplit",
    "align_target",
    "compact_classes",
    "drop_duplicates",
    "evaluate_transfer",
    "group_block_splits",
    "parse_groups",
    "remap_predictions",
    "run_study",
    "run_transfer",
    "run_transfer_study",
    "score_transfer",
    "split_by_groups",
    "transfer_splits",
]
