"""Lightning data modules: in-memory arrays and map-style patch datasets.

- :class:`ArrayDataModule`: samples already in a network's layout (a ``TimeSeriesSet`` or
  ``PatchSet`` after :meth:`~cropscope.models._torch.TorchClassifier._prepare`), labels
  ``[N]`` or ``[N, L]`` and an optional second input (priors). Batches are cut from the
  tensors by index (one gather per batch, no per-sample collation). A lone last training
  sample is folded into the previous batch.
- :class:`PatchDataModule`: any map-style dataset yielding ``({source: [T, C, H, W]},
  label)`` (:class:`~cropscope.data.readers.h5patches.H5PatchDataset`,
  :class:`~cropscope.data.readers.h2crop.H2CropDataset`, ``ArrayPatchDataset``), collated
  by a ``DataLoader`` (``num_workers`` allowed). Each epoch's order is seeded from the run's
  seed and the epoch number (a resumed run sees the same orders); a lone last training
  sample is dropped.

With several processes (``strategy="ddp"``) each takes every ``world``-th sample of the
epoch's order, trimmed to the same count (see :func:`~cropscope.engine.recipe.
shard_batches`), and validation is split the same way (its scores are summed over
processes by the task). Lightning's own distributed sampler is not used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from cropscope.engine.recipe import batches_per_epoch, epoch_permutation, shard_batches

__all__ = ["ArrayDataModule", "EpochBatches", "PatchDataModule", "SequentialBatches"]

#: validation batch size of in-memory arrays (as the former loop's prediction batches)
VAL_BATCH = 1024


def _identity(batch: Any) -> Any:
    return batch


class _IndexedArrays(torch.utils.data.Dataset[tuple[Tensor, Tensor, Tensor | None]]):
    """``dataset[index_tensor]`` → ``(x[idx], y[idx], extra[idx] or None)``."""

    def __init__(self, x: Tensor, y: Tensor, extra: Tensor | None) -> None:
        self.x, self.y, self.extra = x, y, extra

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.x[idx], self.y[idx], None if self.extra is None else self.extra[idx]


class EpochBatches(Sampler[Tensor]):
    """Index batches of one training epoch for process ``rank`` of ``world``.

    The order is a permutation drawn from ``generator`` (one process, the former loop's
    stream: the generator is shared with the batch augmentation) or, when ``generator`` is
    None or there are several processes, :func:`~cropscope.engine.recipe.
    epoch_permutation` of ``seed`` and the epoch (``offset + set_epoch's value + 1``).
    ``lone``: ``"fold"`` or ``"drop"`` a last batch of one sample.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, generator: torch.Generator |
                 None = None, rank: int = 0, world: int = 1, lone: str = "fold",
                 offset: int = 0) -> None:
        super().__init__()
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.generator = generator if world == 1 else None
        self.rank, self.world, self.lone, self.offset = rank, world, lone, offset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this with the 0-based epoch of the current fit."""
        self.epoch = epoch

    def __len__(self) -> int:
        return batches_per_epoch(self.n, self.batch_size, self.world)

    def __iter__(self) -> Iterator[Tensor]:
        if self.generator is not None:
            order = torch.randperm(self.n, generator=self.generator)
        else:
            order = epoch_permutation(self.n, self.seed, self.offset + self.epoch + 1)
        yield from shard_batches(order, self.batch_size, self.rank, self.world, self.lone)


class SequentialBatches(Sampler[Tensor]):
    """Validation batches in order: process ``rank`` takes samples ``rank, rank + world,
    ...`` (every sample is scored exactly once over all processes)."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        super().__init__()
        self.idx = torch.arange(rank, n, world)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.idx) // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        yield from torch.split(self.idx, self.batch_size)


class _ListBatches(Sampler[list[int]]):
    """A tensor batch sampler as lists of ints (what a map-style DataLoader takes). Its
    ``sampler`` attribute is where Lightning finds ``set_epoch``."""

    def __init__(self, sampler: EpochBatches | SequentialBatches) -> None:
        super().__init__()
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.sampler:
            yield b.tolist()


def _rank_world(module: L.LightningDataModule) -> tuple[int, int]:
    trainer = module.trainer
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


def _tensor(x: np.ndarray | Tensor, dtype: torch.dtype) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(dtype)
    np_dtype = np.float32 if dtype == torch.float32 else np.int64
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np_dtype))


class ArrayDataModule(L.LightningDataModule):
    """In-memory training (and validation) arrays, batched by index.

    ``generator``: the permutation generator of a single-process run (shared with the
    task's batch augmentation, as the former loop); several processes use per-epoch seeds,
    ``offset``: epochs already done (a resumed run).
    """

    def __init__(self, x_train: np.ndarray | Tensor, y_train: np.ndarray | Tensor,
                 x_val: np.ndarray | Tensor | None = None,
                 y_val: np.ndarray | Tensor | None = None, *, batch_size: int, seed: int,
                 extra_train: np.ndarray | Tensor | None = None,
                 extra_val: np.ndarray | Tensor | None = None,
                 generator: torch.Generator | None = None, lone: str = "fold",
                 val_batch_size: int = VAL_BATCH, offset: int = 0) -> None:
        super().__init__()
        self.train_set = _IndexedArrays(
            _tensor(x_train, torch.float32), _tensor(y_train, torch.int64),
            None if extra_train is None else _tensor(extra_train, torch.float32))
        self.val_set = None
        if x_val is not None and y_val is not None and len(y_val) > 0:
            self.val_set = _IndexedArrays(
                _tensor(x_val, torch.float32), _tensor(y_val, torch.int64),
                None if extra_val is None else _tensor(extra_val, torch.float32))
        self.batch_size, self.seed, self.generator = batch_size, seed, generator
        self.lone, self.val_batch_size, self.offset = lone, val_batch_size, offset

    @property
    def has_val(self) -> bool:
        return self.val_set is not None

    def _loader(self, dataset: _IndexedArrays, sampler: Sampler[Tensor]) -> DataLoader[Any]:
        # the loader's own generator only feeds its (unused) worker base seed: it must not
        # draw from torch's global generator, which dropout uses
        return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_identity,
                          generator=torch.Generator().manual_seed(0))

    def train_dataloader(self) -> DataLoader[Any]:
        rank, world = _rank_world(self)
        sampler = EpochBatches(len(self.train_set), self.batch_size, seed=self.seed,
                               generator=self.generator, rank=rank, world=world,
                               lone=self.lone, offset=self.offset)
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader[Any] | list[DataLoader[Any]]:
        if self.val_set is None:
            return []  # Lightning: no validation
        rank, world = _rank_world(self)
        return self._loader(self.val_set, SequentialBatches(len(self.val_set),
                                                            self.val_batch_size, rank, world))


class PatchDataModule(L.LightningDataModule):
    """Map-style patch datasets: epoch-seeded training order, sequential validation.

    ``offset``: epochs already done (a resumed run), so epoch ``e`` of this fit is epoch
    ``offset + e + 1`` of the run and gets that epoch's order.
    """

    def __init__(self, train_dataset: Any, val_dataset: Any = None, *, batch_size: int,
                 seed: int, num_workers: int = 0, pin_memory: bool = False, offset: int = 0,
                 lone: str = "drop") -> None:
        super().__init__()
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.pin_memory, self.offset, self.lone = pin_memory, offset, lone

    @property
    def has_val(self) -> bool:
        return self.val_dataset is not None and len(self.val_dataset) > 0

    def _loader(self, dataset: Any, batches: EpochBatches | SequentialBatches
                ) -> DataLoader[Any]:
        return DataLoader(dataset, batch_sampler=_ListBatches(batches),
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=False, generator=torch.Generator().manual_seed(0))

    def train_dataloader(self) -> DataLoader[Any]:
        rank, world = _rank_world(self)
        return self._loader(self.train_dataset, EpochBatches(
            len(self.train_dataset), self.batch_size, seed=self.seed, rank=rank, world=world,
            lone=self.lone, offset=self.offset))

    def val_dataloader(self) -> DataLoader[Any] | list[DataLoader[Any]]:
        if not self.has_val:
            return []  # Lightning: no validation
        rank, world = _rank_world(self)
        return self._loader(self.val_dataset, SequentialBatches(len(self.val_dataset),
                                                                self.batch_size, rank, world))
