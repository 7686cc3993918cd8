"""What every pretext method is: an encoder plus heads and a loss, driven by the trainer through two calls.

The trainer hands a method ``num_views`` augmented, normalised views of a batch and gets back a dict with
``'loss'``; it knows no method by name. A method knows its losses and heads, never the trainer.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ssl_transfer.schema import StrictModel


class MethodConfig(StrictModel):
    """Base of each method's recipe section; subclasses fix ``name`` to a Literal and add their fields."""

    name: str


class PretextMethod(nn.Module):
    """Base class. ``encoder`` is the backbone that gets exported; everything else is training-only."""

    config_cls: ClassVar[type[MethodConfig]]
    num_views: ClassVar[int] = 1

    def __init__(self, cfg: MethodConfig, encoder: nn.Module, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.input_shape = tuple(input_shape)
        self.step = 0
        self.total_steps = 1

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called by the trainer before every step, for schedules (momentum, KL warm-up)."""
        self.step, self.total_steps = step, max(1, total_steps)

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, self.step / self.total_steps)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        """``views``: ``num_views`` tensors (B, C, H, W), normalised. Returns scalars; ``'loss'`` is optimised."""
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """Hook after each optimizer step (momentum encoders update here)."""

    def visualize(self, x: Tensor) -> dict[str, Tensor]:
        """Image grids to save, as name -> (N, C, H, W) in normalised space; none by default."""
        return {}
