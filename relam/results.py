"""What one run returns: its final success rate, its learning curve and its metrics.

A module of its own, below the agents (:mod:`relam.rl`, :mod:`relam.offline`) that build it and the
methods (:mod:`relam.methods`) that return it, so imports go one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """What a method returns: final success rate in [0, 1], curve [(step, success)], metrics."""

    success: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def validate(self) -> "RunResult":
        """Check the result is well formed (the runner records a failure otherwise)."""
        s = float(self.success)
        if not np.isfinite(s) or not 0.0 <= s <= 1.0:
            raise ValueError(f"RunResult.success must be a rate in [0, 1], got {self.success!r}")
        curve = []
        for i, pt in enumerate(self.curve):
            step, val = pt
            if not 0.0 <= float(val) <= 1.0:
                raise ValueError(f"RunResult.curve[{i}] success must be in [0, 1], got {val!r}")
            curve.append((int(step), float(val)))
        steps = [c[0] for c in curve]
        if steps != sorted(steps):
            raise ValueError("RunResult.curve steps must be increasing")
        self.success = s
        self.curve = curve
        self.metrics = {str(k): float(v) for k, v in self.metrics.items()}
        return self
