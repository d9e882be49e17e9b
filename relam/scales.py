"""Experiment scales, and the per-scale budgets of the learned components.

A spec gives every run a budget per scale (``smoke`` for CI, ``quick`` for one machine, ``paper``
for the paper's budgets). The learned components a method fits before or beside its policy -- the
anticipation model, DACfO's online phase, Diffusion Reward's video model, the IS generator and
embedding, the VLM-style reward model and behaviour cloning -- take their own budgets from the
run's scale through one :class:`ScaleTable` each: a frozen dataclass value for every scale, all
scales present, and one error (:class:`UnknownScaleError`, naming the valid scales) for any other.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

__all__ = ["SCALES", "ScaleTable", "UnknownScaleError", "check_scale"]

#: the experiment scales, smallest first
SCALES = ("smoke", "quick", "paper")


class UnknownScaleError(ValueError):
    """A scale that is not one of :data:`SCALES`."""


def check_scale(scale: str, what: str = "") -> str:
    """``scale`` if it is one of :data:`SCALES`, else :class:`UnknownScaleError` naming them
    (``what``: who asked, put in front of the message)."""
    if scale not in SCALES:
        raise UnknownScaleError(f"{what + ': ' if what else ''}unknown scale {scale!r}; "
                                f"expected one of {', '.join(SCALES)}")
    return scale


T = TypeVar("T")


@dataclass(frozen=True)
class ScaleTable(Generic[T]):
    """The budget of one learned component at every scale (one frozen dataclass type for all)."""

    component: str
    smoke: T
    quick: T
    paper: T

    def __post_init__(self) -> None:
        kinds = {type(v) for v in self.values()}
        if len(kinds) != 1 or not dataclasses.is_dataclass(self.smoke):
            raise TypeError(f"ScaleTable {self.component!r}: every scale needs a value of the same "
                            f"dataclass type; got {sorted(k.__name__ for k in kinds)}")

    def __getitem__(self, scale: str) -> T:
        return getattr(self, check_scale(scale, self.component))

    def values(self) -> list[T]:
        return [getattr(self, s) for s in SCALES]

    def items(self) -> Iterator[tuple[str, T]]:
        return ((s, getattr(self, s)) for s in SCALES)
