"""Where clients train: ``engine.device`` resolved against what torch sees, and a client's
data kept there.

As pfl-research does, one process keeps one model on the device (the algorithm's
``model_of``, overwritten per client) and every client's data, moved there once and reused
every round it is sampled; only the update travels back to the CPU, for the wire."""

from __future__ import annotations

import weakref

import torch

from fedcore.config import ConfigError
from fedcore.tasks.base import ClientData

DEVICES = ("cpu", "cuda", "auto")
_ON_DEVICE: dict[int, tuple[weakref.ref, ClientData]] = {}  # id(data) -> (data, moved copy)


class DeviceError(ConfigError):
    """``engine.device`` names a device this process does not have."""


def torch_device(name: str) -> torch.device:
    """``cpu``; ``cuda`` (a :class:`DeviceError` where torch sees none); ``auto``: cuda
    where torch sees one, else the CPU."""
    if name not in DEVICES:
        raise DeviceError(f"engine.device = {name!r}: one of {', '.join(DEVICES)}")
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "auto":
        return torch.device("cpu")
    built = "with" if torch.backends.cuda.is_built() else "without"
    raise DeviceError(
        f"engine.device = 'cuda', but torch {torch.__version__} (built {built} CUDA) sees no "
        "CUDA device in this process; use 'auto' to train on the CPU where there is none"
    )


def on_device(data: ClientData, device: torch.device) -> ClientData:
    """``data`` on ``device``: itself on the CPU, else a copy made once per ``data`` object
    (dropped when ``data`` is)."""
    if device.type == "cpu":
        return data
    key = id(data)
    cached = _ON_DEVICE.get(key)
    if cached is not None and cached[0]() is data:
        return cached[1]
    moved = ClientData(
        *(t.to(device) for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    )
    _ON_DEVICE[key] = (weakref.ref(data, lambda _: _ON_DEVICE.pop(key, None)), moved)
    return moved
