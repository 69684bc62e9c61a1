"""Errors a user can cause. The CLI prints their message as one line and exits non-zero.

Programming errors (bugs) are not wrapped: they keep their traceback.
"""

from __future__ import annotations


class CropscopeError(Exception):
    """Base class for every error caused by user input (files, options, data)."""

    exit_code: int = 2


class DataError(CropscopeError):
    """Input data are malformed, inconsistent or missing required parts."""


class DatasetNotFoundError(CropscopeError):
    """A dataset is not registered, or its files are neither local nor downloadable."""


class ModelError(CropscopeError):
    """A model name, configuration or run directory is unusable."""


class EvaluationError(CropscopeError):
    """An evaluation cannot be run as asked (e.g. fewer samples in a class than folds)."""


class SettingsError(CropscopeError):
    """An option or environment setting has an invalid value (e.g. a thread count)."""
