"""Where torch work runs: the one ``device: "auto"`` rule every learned component uses.

``"auto"`` means CUDA when torch sees a GPU and the CPU otherwise; any other name (``"cpu"``,
``"cuda"``, ``"cuda:1"``) is taken as given. PPO (:class:`relam.rl.ppo.PPOSettings`), the reward
models of the baselines and the anticipation model resolve their ``device`` setting through
:func:`resolve_device`, so a GPU box is used without a per-component switch and a CPU-only machine
runs exactly as before.

The learned reward models train on the resolved device and come back to the CPU afterwards
(:func:`moved_to`): their rewards are computed next to the simulator, their saved states and
fingerprints are CPU tensors whatever the device they trained on, and random draws (batches,
noise) are made on the CPU with the same generators, so a GPU run differs from a CPU run only by
floating-point rounding. On the CPU :func:`moved_to` moves nothing: results are bit for bit those
of the code before the setting existed.

Torch is imported inside the functions, so importing this module costs nothing.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

__all__ = ["AUTO", "resolve_device", "moved_to"]

#: the default of every ``device`` setting
AUTO = "auto"


def resolve_device(device: Any = AUTO) -> str:
    """``"auto"`` (or None) -> ``"cuda"`` when ``torch.cuda.is_available()``, else ``"cpu"``; any
    other device name or ``torch.device`` -> its name (checked by ``torch.device``, so a typo fails
    here and not deep inside a training loop)."""
    import torch

    if device is None or device == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r}: not a torch device; use 'auto', 'cpu' or 'cuda[:N]'") from e


def _move_optimizer(opt: Any, dev: Any) -> None:
    """Adam-style optimiser state (moments; ``step`` stays where it is) to ``dev``."""
    import torch

    for st in opt.state.values():
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(dev)


@contextlib.contextmanager
def moved_to(device: Any, modules: Iterable[Any], optimizers: Iterable[Any] = ()) -> Iterator[Any]:
    """Run the body with ``modules`` (and the state of ``optimizers`` over their parameters) on
    ``resolve_device(device)``; yields that ``torch.device``. Afterwards -- also when the body
    raises -- everything is back on the CPU. On the CPU nothing is moved."""
    import torch

    dev = torch.device(resolve_device(device))
    modules, optimizers = [m for m in modules if m is not None], list(optimizers)
    if dev.type == "cpu":
        yield dev
        return
    cpu = torch.device("cpu")
    try:
        for m in modules:
            m.to(dev)
        for o in optimizers:
            _move_optimizer(o, dev)
        yield dev
    finally:
        for m in modules:
            m.to(cpu)
        for o in optimizers:
            _move_optimizer(o, cpu)

