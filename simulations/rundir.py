"""The run directory: what a run leaves behind, written as it goes so a failure loses nothing.

Layout::

    config.toml        the resolved config; `fedcore simulate config.toml` reproduces the run
    partition.json     clients' sizes and label histograms (simulated runs: a deployed server
                       holds no client's data)
    metrics.jsonl      one JSON line per completed round, flushed as each round ends, with
                       its status (aggregated | aborted | empty) and, unless aggregated, why
    summary.json       status (completed | failed | interrupted), final_metrics, rounds,
                       round_status, train_failures, wall_seconds, engine (and the error
                       if failed or interrupted)
    model.pt           the global model (torch state_dict) of the last completed round:
                       written when the run completes or is interrupted
    checkpoint.bin     the state after the last checkpointed round (train.checkpoint-every),
                       while the run is unfinished: `fedcore simulate --resume DIR` continues
                       from it (:mod:`fedcore.checkpoint`); removed once the run completes
    accuracy.png, loss.png (mse.png, mae.png for mf): per-round curves
    run.lock           held (flock) by the process running the run: a second one is refused

A run whose rounds aggregated nothing ends ``failed`` (:class:`fedcore.server.FailurePolicy`).
A directory is claimed atomically: two runs never share one, and ``--out`` must be new or
empty. JSON files hold no NaN or infinity (not JSON): a non-finite metric is written as null.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedcore import checkpoint
from fedcore.arrays import to_numpy_dict
from fedcore.checkpoint import Checkpoint, CheckpointError
from fedcore.config import RunConfig, load_scenario, to_toml
from fedcore.server import FailurePolicy, RoundRecord, RunFailed, ServerState, final_state
from fedcore.tasks import checked_task, get_algorithm, server_data
from privacy.ledger import DpEvent, PrivacyLedger, ledger_seal
from simulations.engines.inprocess import charge_nodes
from simulations.plots import plot_rounds
from strategies.registry import build_strategy

LOCKFILE = "run.lock"
APPENDED = ("metrics.jsonl", "ledger.jsonl")  # the files a run appends to, round by round


class RunDirectory:
    """Writes one run's files; use as a context manager so a failure is recorded too."""

    def __init__(self, path: Path, cfg: RunConfig, engine: str) -> None:
        self.path = path
        self.cfg = cfg
        self.engine = engine
        self.rounds: list[RoundRecord] = []
        self.policy = FailurePolicy(cfg.train.max_failed_rounds)
        self.last_state: ServerState | None = None  # the last completed round's
        self._sizes: dict[str, int] = {}  # metrics' and ledger's bytes at last_state
        self._digests: dict[str, str] = {}  # and their SHA-256 there
        # running SHA-256 of what this process appended (after what reopen kept)
        self._hashes = {name: hashlib.sha256() for name in APPENDED}
        self.resumes: tuple[int, ...] = ()  # the rounds earlier sessions ended at
        self._elapsed_before = 0.0  # wall seconds of earlier sessions of this run
        self.checkpoint_bytes = 0  # the size of the last checkpoint written
        self._start = time.perf_counter()
        self._done = False
        self._lock: int | None = None  # the run.lock descriptor while this process runs it
        self._released: int | None = None  # the round whose DP events append_release wrote

    @classmethod
    def create(
        cls,
        root: Path,
        cfg: RunConfig,
        engine: str,
        exact: Path | None = None,
        simulated: bool = True,
    ) -> RunDirectory:
        """A new run directory: ``exact`` if given (it must be new or empty), else a fresh
        timestamped folder under ``root`` (with a suffix if another run took that name).

        ``simulated``: this process simulates the clients, so it loads their partition and
        writes its report (``partition.json``); a deployed server (``flwr run``) loads only
        its own data (:func:`fedcore.tasks.server_data`) and writes no partition report."""
        if exact is not None:
            _refuse_used(Path(exact))  # before anything is loaded or written
        # the task's own rules, then bad data, fail before any file
        task = checked_task(cfg)
        report = task.load_data(cfg).report if simulated else None
        if not simulated:
            server_data(task, cfg)
        build_strategy(cfg)  # and so does a setting only the strategy can judge (its noise)
        path = _claim_exact(Path(exact)) if exact is not None else _claim_new(root, cfg)
        run_dir = cls(path, cfg, engine)
        run_dir._lock = _lock(path)
        with open(path / "config.toml", "x") as f:  # "x": two runs never write one directory
            f.write(to_toml(cfg))
        (path / "metrics.jsonl").write_text("")
        if report is not None:
            _write_json(path / "partition.json", report)
        return run_dir

    @classmethod
    def reopen(
        cls, path: Path, deployed: RunConfig | None = None
    ) -> tuple[RunDirectory, Checkpoint]:
        """Reopen an unfinished run to continue it from its checkpoint: its config, its
        rounds up to the checkpoint (what later rounds wrote before the crash is cut off, and
        they run again) and the checkpoint itself. Everything is checked before anything in
        the directory changes; :class:`~fedcore.checkpoint.CheckpointError` says what is
        wrong. ``deployed``: the config a deployed resumed run was started with, which must
        be the directory's but for ``train.resume-from``.

        DP releases of the rounds after the checkpoint are not cut off with their records
        unless the noise is seeded (then the rerun draws the same noise and releases nothing
        new): they were seen, so they stay in ``ledger.jsonl`` marked ``rerun`` and are
        charged to the server's and the nodes' ledgers the run continues with."""
        path = Path(path)
        config = path / "config.toml"
        if not config.is_file():
            raise CheckpointError(f"{path} is not a run directory (it has no config.toml)")
        lock = _lock(path)  # one process continues a run, and not while it still runs
        try:
            return cls._reopen(path, deployed, lock)
        except BaseException:
            os.close(lock)
            raise

    @classmethod
    def _reopen(
        cls, path: Path, deployed: RunConfig | None, lock: int
    ) -> tuple[RunDirectory, Checkpoint]:
        config = path / "config.toml"
        status = _summary_status(path)
        if status == "completed":
            raise CheckpointError(f"{path} holds a completed run; there is nothing to resume")
        cfg = load_scenario(config)
        if deployed is not None and _without_resume(deployed) != cfg:
            raise CheckpointError(
                f"the resumed run's config differs from {config}: a run continues with the "
                "settings it started with"
            )
        ckpt = checkpoint.load(path / checkpoint.FILENAME)
        if ckpt.config_sha256 != checkpoint.file_sha256(config):
            raise CheckpointError(
                f"{path / checkpoint.FILENAME} was written for another config.toml than the one "
                "in the directory (it was edited since, or the checkpoint is another run's)"
            )
        # only the in-process engine holds its nodes; a deployed run's SuperNodes start
        # from their own state whatever engine wrote the checkpoint
        if (ckpt.nodes is None or deployed is not None) and (
            reason := node_state_needed(cfg)
        ) is not None:
            where = "deployed SuperNodes" if deployed is not None else f"{cfg.engine.name} nodes"
            raise CheckpointError(
                f"the resumed run's nodes cannot get their states back (fedcore holds none of "
                f"{where}), and this run's nodes keep state: {reason}"
            )
        lines, whole = {}, {}
        for name, size in ckpt.files.items():
            data = (path / name).read_bytes() if (path / name).exists() else b""
            if len(data) < size:
                raise CheckpointError(
                    f"{path / name} holds {len(data)} bytes, fewer than the {size} it held at "
                    f"the checkpoint of round {ckpt.round}: it was truncated or edited"
                )
            lines[name], whole[name] = data[:size], data
            digest = ckpt.digests.get(name)
            if digest is not None and hashlib.sha256(lines[name]).hexdigest() != digest:
                raise CheckpointError(
                    f"{path / name} was edited since the checkpoint of round {ckpt.round}: "
                    "its first bytes are not the ones the checkpoint sealed"
                )
        try:
            rounds = [json.loads(line) for line in lines["metrics.jsonl"].splitlines()]
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path / 'metrics.jsonl'} is not readable: {err}") from None
        if [r.get("round") for r in rounds][-1:] not in ([ckpt.round], []):
            raise CheckpointError(
                f"{path / 'metrics.jsonl'} does not end at round {ckpt.round}, the checkpoint's"
            )
        kept = lines.get("ledger.jsonl", b"")
        reruns = _rerun_events(whole.get("ledger.jsonl", b"")[len(kept) :])
        if reruns and not cfg.privacy.seeded_noise:  # kept, marked: their releases were seen
            lines["ledger.jsonl"] += "".join(e.to_json() + "\n" for e in reruns).encode()
            ckpt = charge_reruns(ckpt, reruns)
        # checked: now cut off the rounds after the checkpoint
        for name, data in lines.items():  # each replaced whole: a crash here cuts nothing
            if (path / name).exists() or data:
                tmp = path / f"{name}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, path / name)
        (path / "summary.json").unlink(missing_ok=True)
        (path / "model.pt").unlink(missing_ok=True)
        run_dir = cls(path, cfg, "flwr-run" if deployed is not None else cfg.engine.name)
        run_dir._lock = lock
        for record in rounds:
            run_dir.rounds.append(record)
            run_dir.policy.observe(record)
        run_dir.last_state = ServerState.of(ckpt)  # Ctrl-C before a new round keeps its model
        run_dir._sizes = {name: len(data) for name, data in lines.items()}
        for name, data in lines.items():
            run_dir._hashes[name] = hashlib.sha256(data)
        run_dir._digests = {name: h.hexdigest() for name, h in run_dir._hashes.items()}
        run_dir._elapsed_before = ckpt.elapsed
        run_dir.resumes = (*ckpt.resumes, ckpt.round)
        return run_dir, ckpt

    def on_state(
        self,
        state: ServerState,
        nodes: Callable[[], dict[int, bytes] | None],
        force: bool = False,
    ) -> None:
        """Keep the round's state and, every ``train.checkpoint-every`` rounds (``force``:
        now), write the checkpoint (after the round's records: a crash between the two reruns
        the round)."""
        if not force:  # (forced: the files have grown since; their sizes then count)
            self.last_state = state
            self._sizes = {
                name: (self.path / name).stat().st_size if (self.path / name).exists() else 0
                for name in APPENDED
            }
            self._digests = {name: h.hexdigest() for name, h in self._hashes.items()}
        every = self.cfg.train.checkpoint_every
        if not force and (every == 0 or state.round % every != 0):
            return
        ckpt = Checkpoint(
            round=state.round,
            arrays=to_numpy_dict(state.arrays),
            strategy=dict(state.strategy),
            nodes=nodes(),
            files=dict(self._sizes),
            digests=dict(self._digests),
            config_sha256=checkpoint.file_sha256(self.path / "config.toml"),
            elapsed=self._elapsed(),
            resumes=self.resumes,
        )
        checkpoint.save(self.path / checkpoint.FILENAME, ckpt)
        self.checkpoint_bytes = (self.path / checkpoint.FILENAME).stat().st_size

    def _append(self, name: str, lines: list[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        _append(self.path / name, data)
        self._hashes[name].update(data)

    def append_release(self, server_round: int, events: list[dict]) -> None:
        """Append a round's DP events to ledger.jsonl as soon as its release exists (before
        the round's record, which may never be written): a release seen before a crash is
        charged, and a resumed run that reruns the round charges it again (``rerun``)."""
        self._append("ledger.jsonl", [_json(e) for e in events])
        self._released = server_round

    def append_round(self, record: RoundRecord) -> None:
        """Append the round to metrics.jsonl and its DP events to ledger.jsonl (unless
        :meth:`append_release` did), then apply the failure policy
        (:class:`~fedcore.server.RunFailed` ends the run there)."""
        record = dict(record)
        events = record.pop("privacy-events", [])
        self.rounds.append(record)
        self._append("metrics.jsonl", [_json(record)])
        if events and self._released != record["round"]:
            self._append("ledger.jsonl", [_json(e) for e in events])
        self.policy.observe(record)

    def summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        last = self.rounds[-1] if self.rounds else {}
        final: dict[str, Any] = {}
        for part in ("server-eval", "client-eval", "train"):
            for k, v in (last.get(part) or {}).items():
                final[f"{part}/{k}"] = v
        summary = {
            "status": status,
            "engine": self.engine,
            "rounds": len(self.rounds),
            "rounds_planned": self.cfg.train.rounds,
            "wall_seconds": self._elapsed(),
            "train_failures": sum(len(r.get("train-failures", ())) for r in self.rounds),
            "final_metrics": final,
            "round_status": dict(self.policy.counts),
            "peak_memory_mb": max((r["peak-memory-mb"] for r in self.rounds), default=None),
            "bytes_sent": sum(r["bytes-sent"] for r in self.rounds),
            "bytes_received": sum(r["bytes-received"] for r in self.rounds),
        }
        if error is not None:
            summary["error"] = error
        if self.resumes:
            summary["resumed_after_rounds"] = list(self.resumes)
        if self.checkpoint_bytes:
            summary["checkpoint_bytes"] = self.checkpoint_bytes
        return summary

    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._start

    def finish(self, arrays: ArrayRecord) -> dict[str, Any]:
        """Save the final model, the summary and the plots, and with DP the privacy report;
        a run that aggregated nothing raises :class:`~fedcore.server.RunFailed` instead."""
        self.policy.finish()
        torch.save(final_state(self.cfg, arrays), self.path / "model.pt")
        privacy = None
        ledger = self.path / "ledger.jsonl"
        if self.cfg.privacy.dp != "off" or ledger.exists():  # the report, from the ledger only
            from privacy.report import write_report

            report = write_report(self.path, seal=ledger_seal(ledger))
            privacy = report["guarantee"] | {"delta": report["delta"]}
        summary = self._close("completed", privacy=privacy)
        (self.path / checkpoint.FILENAME).unlink(missing_ok=True)
        return summary

    def fail(self, error: BaseException) -> dict[str, Any]:
        recurs = isinstance(error, RunFailed)  # the rounds' own outcome: a rerun repeats it
        if not recurs:
            self._checkpoint_last()
        return self._close("failed", f"{type(error).__name__}: {error}", resumable=not recurs)

    def interrupt(self, error: BaseException) -> dict[str, Any]:
        """Ctrl-C or SIGTERM: keep the last completed round's model and checkpoint, and say
        how to go on."""
        if self.last_state is not None:
            torch.save(final_state(self.cfg, self.last_state.arrays), self.path / "model.pt")
        self._checkpoint_last()
        reason = str(error) or "interrupted (SIGINT)"
        summary = self._close("interrupted", reason)
        return summary

    def _checkpoint_last(self) -> None:
        """Checkpoint the last completed round if the last checkpoint is older (with
        ``train.checkpoint-every`` > 1), so a resumed run reruns nothing that ran: possible
        where the nodes keep no state (theirs are gone with the engine by now)."""
        state, every = self.last_state, self.cfg.train.checkpoint_every
        if state is None or every == 0 or state.round % every == 0:
            return
        if node_state_needed(self.cfg) is None:
            with contextlib.suppress(OSError):  # (a full disk) the older one still resumes
                self.on_state(state, lambda: None, force=True)

    def _close(
        self,
        status: str,
        error: str | None = None,
        privacy: dict | None = None,
        resumable: bool = True,
    ) -> dict[str, Any]:
        summary = self.summary(status, error)
        summary["ledger"] = ledger_seal(self.path / "ledger.jsonl")  # the report checks it
        if privacy is not None:
            summary["privacy"] = privacy
        if status != "completed":
            ckpt = self.path / checkpoint.FILENAME
            summary["resume"] = (
                ("no checkpoint" if not ckpt.exists() else f"fedcore simulate --resume {self.path}")
                if resumable
                else "not offered: resuming would rerun the rounds that failed it"
            )
        _write_json(self.path / "summary.json", summary)
        if self.rounds:
            plot_rounds(self.rounds, self.path)
        self._done = True
        self.unlock()
        return summary

    def unlock(self) -> None:
        """Let another process continue the run (``--resume``); the OS does so at exit too."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and not self._done:
            summary = self.interrupt(exc) if isinstance(exc, KeyboardInterrupt) else self.fail(exc)
            exc.add_note(f"run directory: {self.path}")
            if isinstance(exc, KeyboardInterrupt) and summary["resume"] != "no checkpoint":
                exc.add_note(f"continue it with: {summary['resume']}")


def _lock(path: Path) -> int:
    """Hold ``path/run.lock`` exclusively (``flock``, released when the process ends, even
    killed), or raise :class:`CheckpointError`: another process is running this run."""
    fd = os.open(path / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CheckpointError(
            f"{path} is in use by another process (it holds {path / LOCKFILE}): a run is "
            "continued by one process at a time, and not while it still runs"
        ) from None
    return fd


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` and fsync: a checkpoint taken after it never counts bytes a power
    cut could lose."""
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _rerun_events(tail: bytes) -> list[DpEvent]:
    """The ledger's events after the checkpoint, marked ``rerun``; a line cut short by the
    crash (no newline) is no event."""
    complete = tail[: tail.rfind(b"\n") + 1].decode("utf-8", "replace")
    try:
        ledger = PrivacyLedger.from_jsonl(complete)
    except ValueError as err:
        raise CheckpointError(f"ledger.jsonl after the checkpoint is not readable: {err}") from None
    return [dataclasses.replace(e, rerun=True) for e in ledger.events]


def charge_reruns(ckpt: Checkpoint, events: list[DpEvent]) -> Checkpoint:
    """``ckpt`` with ``events`` (releases of rounds the resumed run reruns) added to the
    server's ledger (the budget check reads it) and to each in-process node's own."""
    strategy = dict(ckpt.strategy)
    server = [e for e in events if e.client is None]
    if "ledger" in strategy and server:
        strategy["ledger"] = str(strategy["ledger"]) + "".join(e.to_json() + "\n" for e in server)
    nodes = ckpt.nodes
    if nodes is not None:
        nodes = charge_nodes(nodes, [e for e in events if e.client is not None])
    return dataclasses.replace(ckpt, strategy=strategy, nodes=nodes)


def _refuse_used(path: Path) -> None:
    """Refuse an ``--out`` that is a file or a directory holding anything."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path} is a file; give a new or an empty directory")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if {"config.toml", "metrics.jsonl"} & set(entries):
        raise FileExistsError(f"{path} already holds a run; choose another --out")
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise FileExistsError(
            f"--out {path} is not empty ({len(entries)} entries: {shown}); give a new or an "
            "empty directory, so no file of yours is overwritten"
        )


def _claim_exact(path: Path) -> Path:
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        _refuse_used(path)  # it may have been filled since the first check
        if not path.is_dir():
            raise
    return path


def _claim_new(root: Path, cfg: RunConfig) -> Path:
    """A new directory under ``root`` named for the time and the run, made with ``mkdir``
    (atomic: of two runs that start in the same second, one gets the next suffix)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{cfg.task}-{cfg.data.dataset}-{cfg.strategy.name}"
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{root} holds 9999 runs named {base}[-n]; choose another --out")


def node_state_needed(cfg: RunConfig) -> str | None:
    """Why ``cfg``'s nodes keep state between rounds that a resumed run needs back, or None:
    a node-side privacy ledger, a task setup's release, an algorithm's node-local arrays,
    error feedback's residual."""
    if cfg.privacy.dp in ("sample", "sample-distributed", "local", "distributed"):
        return f"privacy.dp = {cfg.privacy.dp!r} keeps each node's privacy ledger on the node"
    algorithm = get_algorithm(cfg.task)
    if algorithm.setup is not None and algorithm.setup.needed(cfg):
        return f"task {cfg.task!r} runs a setup whose release the nodes keep"
    if algorithm.node_state:
        return f"task {cfg.task!r} keeps arrays on each node between rounds"
    if cfg.compression.uplink != "none" and cfg.compression.error_feedback:
        return "compression.error-feedback keeps what each node's compressor left out"
    return None


def _without_resume(cfg: RunConfig) -> RunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume_from=""))


def _summary_status(path: Path) -> str | None:
    try:
        return json.loads((path / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json(obj: Any, **kwargs: Any) -> str:
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_json(obj, indent=2) + "\n")
    tmp.replace(path)
