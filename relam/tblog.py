"""TensorBoard logs of PPO and IQL through stable-baselines3's own logger.

TensorBoard is an optional extra (``pip install 'relam[tensorboard]'``, or ``pip install -e
'.[tensorboard]'`` in a clone). It is asked for per call (``train_ppo(..., tensorboard=True)``,
``train_iql(..., tensorboard=True)``, or a folder instead of True) or for every run of a process
with ``RELAM_TENSORBOARD=1`` (what ``relam run --tensorboard`` sets, so that its pool or Ray workers
log too). With True the events go to ``<run folder>/tensorboard/``; for a sweep,
``tensorboard --logdir <cache>/results/work`` shows every run. PPO logs SB3's ``rollout/``,
``train/`` and ``time/`` values and our ``eval/`` ones; IQL its per-epoch losses and evaluations.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Mapping

from relam.versions import MissingExtraError

__all__ = ["ENV_VAR", "EXTRA", "TensorBoardMissing", "log_scalars", "require_tensorboard",
           "tensorboard_available", "tensorboard_logger", "tensorboard_requested"]

#: set to 1 to give every PPO / IQL run of the process a TensorBoard log
ENV_VAR = "RELAM_TENSORBOARD"
#: the optional extra of pyproject.toml that installs TensorBoard
EXTRA = "tensorboard"
INSTALL_HINT = (f"install the '{EXTRA}' extra: pip install 'relam[{EXTRA}]' "
                f"(in a clone: .venv/bin/pip install -e '.[{EXTRA}]' -c constraints.txt)")


class TensorBoardMissing(MissingExtraError):
    """TensorBoard logging was asked for, but the ``tensorboard`` package is not installed."""


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which torch's SummaryWriter needs) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard(what: str = "TensorBoard logging") -> None:
    """Raise :class:`TensorBoardMissing`, naming the extra, unless TensorBoard can be written."""
    if tensorboard_available():
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (what SB3's logger uses)
            return
        except ImportError as e:
            raise TensorBoardMissing(f"{what} needs torch.utils.tensorboard, which failed to import ({e}); "
                                     f"{INSTALL_HINT}") from e
    raise TensorBoardMissing(f"{what} needs the 'tensorboard' package, which is not installed; {INSTALL_HINT}")


def tensorboard_requested() -> bool:
    """Whether ``$RELAM_TENSORBOARD`` asks every run of this process for a TensorBoard log."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: set it to 1 (TensorBoard logs) or 0, or unset it")


def tensorboard_logger(option: bool | str | os.PathLike | None, run_dir: str | os.PathLike | None, who: str):
    """SB3's logger writing TensorBoard events, or None when no log is asked for.

    ``option``: None (ask ``$RELAM_TENSORBOARD``), False, True (``<run_dir>/tensorboard``) or a folder.
    ``who`` names the caller in errors (``"train_ppo"``).
    """
    if option is None:
        option = tensorboard_requested()
    if option is False:
        return None
    if option is True:
        if run_dir is None:
            raise ValueError(f"{who}: tensorboard=True writes into the run's folder, but there is none "
                             "(out_dir=None); pass out_dir or a folder as tensorboard=")
        folder = Path(run_dir) / "tensorboard"
    else:
        folder = Path(option)
    require_tensorboard(f"{who}(tensorboard=...)")
    from stable_baselines3.common.logger import configure

    return configure(str(folder), ["tensorboard"])


def log_scalars(logger: Any, prefix: str, values: Mapping[str, Any], step: int) -> None:
    """Record the numbers of ``values`` (but ``step``, the x axis) as ``prefix/name`` and write
    them at ``step``."""
    for name, value in values.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            logger.record(f"{prefix}/{name}", float(value))
    logger.dump(step=int(step))
