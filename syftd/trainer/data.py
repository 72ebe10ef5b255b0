"""The job's local training data, turned into full batches of ``(X, one-hot y)`` float32 tensors.

Owns the four sources of ``DataConfig`` (``synthetic-digits``, ``mnist`` from raw IDX files,
``imagefolder``, ``python``), the checks that name what is wrong with them, the shuffled sampling of
full batches across epochs, and one-hot encoding of class indices. Small in-memory sources are
materialised once as tensors (a warm trainer keeps them); the others are read per batch, which is
where a slow or stuck ``__getitem__`` runs. Imports torch: runs in the trainer only. Does not own
when batches are taken or the expiration checks (``worker``).
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from syftd.config import DataConfig
from syftd.errors import TrainerError

__all__ = ["BatchSource", "load_source"]

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


class BatchSource:
    """Full batches drawn without replacement, reshuffled each epoch, from one seed."""

    def __init__(self, dataset: Any, *, num_classes: int, seed: int, arrays: tuple[Any, Any] | None) -> None:
        self._dataset = dataset
        self._num_classes = num_classes
        self._seed = seed
        self._arrays = None
        if arrays is not None:
            self._arrays = (arrays[0], _one_hot(torch.from_numpy(arrays[1]), num_classes).numpy())
        self.size = len(arrays[0]) if arrays is not None else len(dataset)

    def batches(self, batch_size: int, *, salt: str = "") -> Iterator[tuple[Any, Any]]:
        """An endless iterator of ``(X, y)`` with exactly ``batch_size`` rows each, shuffled by seed and ``salt``.

        Raises:
            TrainerError: the dataset is empty or smaller than one batch.
        """
        if self.size == 0:
            raise TrainerError("the dataset is empty")
        if self.size < batch_size:
            raise TrainerError(f"the dataset has {self.size} samples, fewer than one batch of {batch_size}")
        return self._iterate(batch_size, salt)

    def _iterate(self, batch_size: int, salt: str) -> Iterator[tuple[Any, Any]]:
        digest = hashlib.sha256(f"{self._seed}:{salt}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        while True:
            order = rng.permutation(self.size)
            for start in range(0, self.size - batch_size + 1, batch_size):
                rows = order[start : start + batch_size]
                if self._arrays is not None:
                    # gathered by numpy: torch advanced indexing with several intra-op threads costs ~1 ms a batch
                    yield torch.from_numpy(self._arrays[0][rows]), torch.from_numpy(self._arrays[1][rows])
                else:
                    x, y = self._collate([self._dataset[int(i)] for i in rows])
                    yield x, _one_hot(y, self._num_classes)

    @staticmethod
    def _collate(samples: list[Any]) -> tuple[Any, Any]:
        try:
            xs = [torch.as_tensor(x, dtype=torch.float32) for x, _ in samples]
            ys = [torch.as_tensor(y) for _, y in samples]
            return torch.stack(xs), torch.stack(ys)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TrainerError(f"the dataset's samples are not (x, y) pairs of tensors or numbers: {exc}") from exc


def load_source(config: DataConfig) -> BatchSource:
    """Open the data source ``config`` names.

    Raises:
        TrainerError: naming the missing directory, file, callable or the bad dataset.
    """
    match config.source:
        case "synthetic-digits":
            from syftd.trainer.digits import draw_digits

            images, labels = draw_digits(config.samples, seed=config.seed)
            x = (torch.from_numpy(images) - config.mean) / config.std
            return _in_memory(x, torch.from_numpy(labels), config)
        case "mnist":
            return _mnist(config)
        case "imagefolder":
            return _imagefolder(config)
        case "python":
            return _python(config)
    raise TrainerError(f"data.source {config.source!r} is not known")


def _in_memory(x: Any, y: Any, config: DataConfig) -> BatchSource:
    arrays = (x.contiguous().numpy(), y.contiguous().numpy())
    return BatchSource(None, num_classes=config.num_classes, seed=config.seed, arrays=arrays)


def _existing_dir(config: DataConfig) -> Path:
    if config.path is None:
        raise TrainerError(f"data.path is required for data.source {config.source!r}")
    if not config.path.is_dir():
        raise TrainerError(f"data.path {str(config.path)!r} does not exist or is not a directory")
    return config.path


def _mnist(config: DataConfig) -> BatchSource:
    root = _existing_dir(config)
    raw = next(
        (d for d in (root, root / "raw", root / "MNIST" / "raw") if all((d / f).is_file() for f in _MNIST_FILES)),
        None,
    )
    if raw is None:
        wanted = ", ".join(_MNIST_FILES)
        raise TrainerError(f"data.path {str(root)!r} has no uncompressed MNIST IDX files ({wanted})")
    from torchvision.datasets import MNIST

    class _DirMNIST(MNIST):  # type: ignore[misc]
        """torchvision's MNIST reading the training files of one directory, never downloading."""

        @property
        def raw_folder(self) -> str:
            return str(raw)

        def _check_exists(self) -> bool:
            return True

    try:
        dataset = _DirMNIST(str(root), train=True, download=False)
    except (RuntimeError, ValueError, AssertionError, OSError) as exc:
        raise TrainerError(f"the MNIST IDX files in {str(raw)!r} cannot be read: {exc}") from exc
    x = (dataset.data.to(torch.float32) / 255.0 - config.mean) / config.std
    return _in_memory(x, dataset.targets.to(torch.int64), config)


def _imagefolder(config: DataConfig) -> BatchSource:
    root = _existing_dir(config)
    from torchvision import datasets, transforms

    steps: list[Any] = [transforms.Resize((config.image_size, config.image_size))]
    if config.grayscale:
        steps.append(transforms.Grayscale(num_output_channels=1))
    steps += [transforms.ToTensor(), transforms.Normalize((config.mean,), (config.std,))]
    try:
        dataset = datasets.ImageFolder(str(root), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        raise TrainerError(f"data.path {str(root)!r} is not an image folder (one directory per class): {exc}") from exc
    return BatchSource(dataset, num_classes=config.num_classes, seed=config.seed, arrays=None)


def _python(config: DataConfig) -> BatchSource:
    if config.callable is None:
        raise TrainerError("data.callable is required for data.source 'python'")
    module_name, _, function_name = config.callable.partition(":")
    if config.path is not None and str(config.path) not in sys.path:
        sys.path.insert(0, str(config.path))
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, function_name)
    except (ImportError, AttributeError) as exc:
        raise TrainerError(f"data.callable {config.callable!r} cannot be imported: {exc}") from exc
    try:
        dataset = function()
    except Exception as exc:
        raise TrainerError(f"data.callable {config.callable!r} raised {type(exc).__name__}: {exc}") from exc
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TrainerError(f"data.callable {config.callable!r} returned a {type(dataset).__name__}, not a Dataset")
    return BatchSource(dataset, num_classes=config.num_classes, seed=config.seed, arrays=None)


def _one_hot(y: Any, num_classes: int) -> Any:
    if y.dim() == 1 and not y.is_floating_point():
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise TrainerError(f"a label is outside 0..{num_classes - 1} (data.num_classes = {num_classes})")
        return torch.nn.functional.one_hot(y, num_classes).to(torch.float32)
    return y.to(torch.float32)
