"""A batch sampler whose global batches do not depend on the number of ranks, and that resumes mid-epoch.

Epoch ``e`` is one permutation drawn from a generator seeded with ``(seed, e)``. Global batch ``i`` is
positions ``[i*G, (i+1)*G)`` of it, ``G = batch_size * world_size``; rank ``r`` takes the ``r``-th of
``world_size`` equal slices. So one process with batch 256 and two ranks with batch 128 see the same global
batches in the same order, and a resumed run can skip exactly the batches an interrupted epoch already used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def world() -> tuple[int, int]:
    """(rank, world_size) of the initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's index lists, ``batch_size`` per rank per step.

    Rank and world size are read when iterating (the process group exists only once training starts).
    ``resume(epoch, batches_done)`` makes the next iteration of that epoch start at batch ``batches_done``.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, drop_last: bool = True, seed: int = 0) -> None:
        if n <= 0 or batch_size <= 0:
            raise ValueError(f"need n > 0 and batch_size > 0, got n={n}, batch_size={batch_size}")
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = n, batch_size, shuffle, drop_last, seed
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, batches) to skip once

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start (and by us on resume)."""
        self.epoch = int(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue ``epoch`` after its first ``batches_done`` batches (the next epoch if it was complete)."""
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self.set_epoch(epoch)
        self._skip = (epoch, batches_done) if batches_done > 0 else None

    def global_batch(self) -> int:
        return self.batch_size * world()[1]

    def __len__(self) -> int:
        g = self.global_batch()
        if self.n < g:  # fewer images than one global batch: one (smaller) batch per epoch
            return 1
        return self.n // g if self.drop_last else math.ceil(self.n / g)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch``: (n,) int64."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        rank, world_size = world()
        g = self.batch_size * world_size
        order = self.permutation(self.epoch)
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = self._skip[1]
        self._skip = None
        for i in range(start, len(self)):
            chunk = order[i * g : (i + 1) * g]
            if len(chunk) < world_size:
                raise RuntimeError(
                    f"batch {i} has {len(chunk)} images for {world_size} ranks; use more data or drop_last"
                )
            yield chunk.tensor_split(world_size)[rank].tolist()
