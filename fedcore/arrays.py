"""Fast conversions between tensors and Flower's ``Array``, byte-identical to Flower's own.

Flower stores each array as a ``.npy`` payload and converts with ``np.save``/``np.load``,
which re-writes and re-parses the text header every time: on a 64-200-200-10 MLP that was
about 1 ms per client and round, as much as the local training itself. Here the header is
built or parsed once per (dtype, shape) and the data is copied straight from/into memory.
The payload bytes are exactly what ``np.save`` writes (a test checks), so Flower and any
other peer read them unchanged.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common.constant import SType

if TYPE_CHECKING:  # tensors only reach here from code that imported torch already
    import torch

_MAGIC = b"\x93NUMPY"


@functools.lru_cache(maxsize=512)
def _header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


@functools.lru_cache(maxsize=512)
def _parse(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    reader = (
        np.lib.format.read_array_header_1_0
        if header[6] == 1
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = reader(io.BytesIO(header[8:]))
    if dtype.hasobject:
        raise ValueError("array payload holds Python objects; refusing to unpickle")
    return dtype, shape, fortran


def from_numpy(a: np.ndarray) -> Array:
    """An ``Array`` holding ``a`` (what ``Array(a)`` gives, faster).

    Built with ``Array.__new__`` and its four public fields set directly: ``Array.__init__``
    parses its arguments and marks the object dirty field by field, which cost as much as
    copying the data. Flower is pinned; a test checks the result equals ``Array(a)``,
    object id included.
    """
    a = a if a.flags.c_contiguous else np.ascontiguousarray(a)  # keeps 0-d arrays 0-d
    header = _header(np.lib.format.dtype_to_descr(a.dtype), a.shape)
    array = Array.__new__(Array)
    array.__dict__.update(
        dtype=str(a.dtype), shape=a.shape, stype=SType.NUMPY, data=header + a.reshape(-1).data
    )  # one copy, from the array
    return array


def to_numpy(array: Array) -> np.ndarray:
    """A read-only view of an ``Array``'s data (what ``array.numpy()`` gives, without a copy).

    Raises ``ValueError`` for a payload that is not a well-formed ``.npy`` of plain data.
    """
    if array.stype != SType.NUMPY:
        raise ValueError(f"unsupported array serialization {array.stype!r}")
    data = array.data
    if data[:6] != _MAGIC or len(data) < 10:
        raise ValueError("array payload is not in .npy format")
    if data[6] == 1:
        start = 10 + int.from_bytes(data[8:10], "little")
    elif data[6] in (2, 3):
        start = 12 + int.from_bytes(data[8:12], "little")
    else:
        raise ValueError(f"unknown .npy format version {data[6]}")
    dtype, shape, fortran = _parse(bytes(data[:start]))
    count = math.prod(shape)
    if len(data) - start != count * dtype.itemsize:
        raise ValueError(
            f"array payload has {len(data) - start} data bytes, expected "
            f"{count * dtype.itemsize} for shape {shape} {dtype}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=start)
    return flat.reshape(shape, order="F" if fortran else "C")


def to_record(state: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` from a state dict of tensors or arrays, keeping names and order."""
    record = ArrayRecord()  # filled item by item: ArrayRecord(dict) would copy every Array
    for name, t in state.items():
        record[name] = from_numpy(t if isinstance(t, np.ndarray) else t.detach().cpu().numpy())
    return record


def to_numpy_dict(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Read-only numpy views of every array in ``record``."""
    return {name: to_numpy(a) for name, a in record.items()}


def load_into(module: torch.nn.Module, record: ArrayRecord) -> None:
    """Copy ``record`` into ``module``'s parameters and buffers in place
    (:func:`load_arrays` of the message's bytes, without building intermediate tensors)."""
    load_arrays(module, {name: to_numpy(array) for name, array in record.items()})


def load_arrays(module: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into ``module``'s parameters and buffers in place.

    Same contract as ``module.load_state_dict(..., strict=True)`` (names and shapes must
    match, ``ValueError`` otherwise), checked before any write; each array is written
    straight into the tensor's memory.
    """
    targets = dict(module.named_parameters())
    targets.update(module.named_buffers())
    if set(targets) != set(arrays):
        missing = sorted(set(targets) - set(arrays))
        extra = sorted(set(arrays) - set(targets))
        raise ValueError(f"arrays do not match the model: missing {missing}, extra {extra}")
    for name, source in arrays.items():  # all checked before any write
        if np.shape(source) != tuple(targets[name].shape):
            raise ValueError(
                f"array {name!r} has shape {np.shape(source)}, the model's is "
                f"{tuple(targets[name].shape)}"
            )
    for name, source in arrays.items():  # detached views: no autograd involved
        target = targets[name].detach()
        if target.device.type == "cpu":
            target.numpy()[...] = source
        else:  # (engine.device = cuda: one copy to the device)
            target.copy_(target.new_tensor(np.asarray(source)))
