"""What this installation can do: whether its trainer can train at all.

Owns the probe ``training_unavailable()``: the trainer runs under the daemon's own interpreter and
needs the ``train`` extra (torch, numpy, Pillow; torchvision for the mnist and imagefolder sources).
The probe looks the packages up without importing them (``importlib.util.find_spec``), so the daemon
never loads torch and the probe costs microseconds. Does not own what the daemon does with the
answer (``jobs`` requests no cycle it cannot train; ``checkconfig`` and the start-up line say it).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable

__all__ = ["INSTALL_HINT", "TRAIN_PACKAGES", "packages_for", "training_unavailable"]

INSTALL_HINT = "install syftd[train]"
TRAIN_PACKAGES = ("torch", "numpy", "PIL")
"""The packages every trainer imports (the distribution of ``PIL`` is Pillow)."""

_BY_SOURCE = {"mnist": ("torchvision",), "imagefolder": ("torchvision",)}


def packages_for(source: str | None = None) -> tuple[str, ...]:
    """What a trainer for ``data.source`` imports (every trainer's packages when None)."""
    return TRAIN_PACKAGES + _BY_SOURCE.get(source or "", ())


_DISTRIBUTION = {"PIL": "Pillow"}


def _present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def training_unavailable(
    packages: Iterable[str] = TRAIN_PACKAGES, present: Callable[[str], bool] = _present
) -> str | None:
    """Why this interpreter cannot train (one line ending in the install hint), or None if it can."""
    missing = [_DISTRIBUTION.get(name, name) for name in packages if not present(name)]
    if not missing:
        return None
    what = ", ".join(missing)
    return (
        f"cannot train: {what} {'is' if len(missing) == 1 else 'are'} not installed for {sys.executable}; "
        f"{INSTALL_HINT} (pip install 'syftd[train]')"
    )
