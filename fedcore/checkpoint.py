"""Checkpoints: what a run needs to continue after a crash, in one file written atomically.

A checkpoint is the state after a completed round:

- the global state: the model and the algorithm's server-only arrays (FedAdam's moments,
  FedAvgM's momentum);
- the strategy's own state: the adaptive clip norm, the server's privacy ledger, a robust
  rule's memory (:meth:`strategies.statistics.StatisticsStrategy.state`);
- each node's ``Context.state`` where the engine holds the nodes (the in-process engine: a
  recommender's user factors, a node's privacy ledger, a task setup's release), or None where
  it does not (Ray, deployed SuperNodes);
- how many bytes ``metrics.jsonl`` and ``ledger.jsonl`` held, so a resumed run cuts off what
  a round after the checkpoint wrote before the crash, and reruns that round;
- the SHA-256 of the run's ``config.toml``, so a checkpoint continues only its own run.

No generator position is stored because there is none to store: every seeded generator is
derived from ``(seed, stream, round, ...)`` (:mod:`fedcore.seeding`), so round ``r + 1``
draws the same numbers in a resumed process as in an uninterrupted one. DP noise and DP
sampling come from the OS CSPRNG and are fresh either way.

The file is ``MAGIC <sha256 of the payload>\\n`` and the payload, an uncompressed ``.npz``
read with ``allow_pickle=False`` (a checkpoint cannot run code). It is written to a temporary
file, fsynced, renamed over the old one and the directory fsynced: a crash leaves the old
checkpoint or the new one, never half of one. The digest catches a truncated or corrupted
file; it is no signature (whoever can write the run directory can write a valid checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto

MAGIC = b"FEDCORE-CHECKPOINT 1 "
FILENAME = "checkpoint.bin"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, truncated, corrupted, or another run's."""


@dataclass(frozen=True)
class Checkpoint:
    """The state of a run after round ``round``.

    Attributes:
        round: the last completed round.
        arrays: the global state, in the algorithm's order.
        strategy: the strategy's state (JSON values and NumPy arrays).
        nodes: each node's ``Context.state``, serialized (:func:`pack_node_state`), or None
            where the engine does not hold the nodes.
        files: bytes of the run directory's append-only files at this round.
        digests: the SHA-256 of those bytes, so an edit before a resume is refused.
        config_sha256: the digest of the run's ``config.toml``.
        elapsed: wall seconds the run had taken up to this round, over all its sessions.
        resumes: the rounds at which earlier sessions of the run were resumed.
    """

    round: int
    arrays: dict[str, np.ndarray]
    strategy: dict[str, Any]
    nodes: dict[int, bytes] | None
    files: dict[str, int]
    config_sha256: str
    elapsed: float
    resumes: tuple[int, ...] = ()
    digests: dict[str, str] = dataclasses.field(default_factory=dict)


def pack_node_state(state: RecordDict) -> bytes:
    """A node's ``Context.state`` as bytes (Flower's own protobuf serialization)."""
    return recorddict_to_proto(state).SerializeToString()


def unpack_node_state(data: bytes) -> RecordDict:
    proto = RecordDictProto()
    proto.ParseFromString(data)
    return recorddict_from_proto(proto)


def save(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (temporary file, fsync, rename, fsync dir)."""
    arrays: dict[str, np.ndarray] = {}
    for i, a in enumerate(ckpt.arrays.values()):
        arrays[f"model{i}"] = np.asarray(a)
    json_state, array_state = {}, []
    for key, value in ckpt.strategy.items():
        if isinstance(value, np.ndarray):
            arrays[f"strategy{len(array_state)}"] = value
            array_state.append(key)
        else:
            json_state[key] = value
    nodes = ckpt.nodes or {}
    for i, data in enumerate(nodes.values()):
        arrays[f"node{i}"] = np.frombuffer(data, np.uint8)
    meta = {
        "round": ckpt.round,
        "model": list(ckpt.arrays),
        "strategy": json_state,
        "strategy-arrays": array_state,
        "nodes": None if ckpt.nodes is None else list(nodes),
        "files": ckpt.files,
        "config-sha256": ckpt.config_sha256,
        "elapsed": ckpt.elapsed,
        "resumes": list(ckpt.resumes),
        "digests": ckpt.digests,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n")
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: Path) -> Checkpoint:
    """Read a checkpoint, or raise :class:`CheckpointError` saying what is wrong with it.
    Nothing is half-loaded: the digest is checked before any field is read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} does not exist: the run wrote no checkpoint (it ended before its first "
            "round did, or ran with train.checkpoint-every = 0)"
        ) from None
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    header, _, payload = data.partition(b"\n")
    if not header.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a fedcore checkpoint (its header is wrong)")
    digest = header[len(MAGIC) :].decode("ascii", "replace")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(
            f"{path} is truncated or corrupted: its content does not match its SHA-256; "
            "refusing to resume from it"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes())
            arrays = {name: npz[f"model{i}"] for i, name in enumerate(meta["model"])}
            strategy = dict(meta["strategy"])
            for i, key in enumerate(meta["strategy-arrays"]):
                strategy[key] = npz[f"strategy{i}"]
            nodes = None
            if meta["nodes"] is not None:
                nodes = {int(n): npz[f"node{i}"].tobytes() for i, n in enumerate(meta["nodes"])}
        return Checkpoint(
            round=int(meta["round"]),
            arrays=arrays,
            strategy=strategy,
            nodes=nodes,
            files={str(k): int(v) for k, v in meta["files"].items()},
            config_sha256=str(meta["config-sha256"]),
            elapsed=float(meta["elapsed"]),
            resumes=tuple(int(r) for r in meta["resumes"]),
            digests={str(k): str(v) for k, v in meta.get("digests", {}).items()},
        )
    except (KeyError, ValueError, TypeError, OSError) as err:  # a valid digest, bad content
        raise CheckpointError(f"{path} does not hold a checkpoint's fields: {err}") from None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
