"""Secure aggregation: one training round under fedcore's SecAgg (full graph and SecAgg+ sparse
graph) against plaintext aggregation and Flower 1.42's SecAgg+, side by side in one run.

Workload: a cohort of n clients (every client of the grid), a model of one float32 array of
length L. The ClientApp does no training: it returns the received model plus a fixed random
update of its own (values in [-0.5, 0.5], seeded by its partition id) with num-examples 100,
so the round is all aggregation. Everything runs in this process on fedcore's ``InProcessGrid``
(messages are handed over as objects: no serialization or transport on either side).

- fedcore: the run's strategy (``strategies.build_strategy``: FedAvg on typed statistics)
  makes the messages (``configure_train``) and aggregates (``aggregate_train``);
  "plaintext" is ``grid.send_and_receive`` in between, "full" and "sparse" are
  ``SecureAggregator.send_and_receive`` (client mod ``secagg_mod``).
- Flower: legacy ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` with
  ``secaggplus_mod`` on a legacy ``ClientApp``; ``num_shares`` = n (full) or fedcore's sparse
  degree + 1 (sparse), reconstruction threshold = fedcore's (more than half of the holders).
  "plaintext" is Flower's ``default_fit_workflow``.

Columns: wall time of the round (configure -> exchanges -> aggregate; best of up to
``--repeats``), the CPU of the process in that round split into the clients' (the time spent
inside the ClientApp, measured by an outermost client mod) and the server's (the rest), bytes
per client each way (arrays and byte strings in the messages), and the largest absolute error
of the aggregate against the exact float64 mean of the updates. The keystream line compares
fedcore's ``MaskExpander`` with raw AES-256-CTR (cryptography's ``update_into``).

    .venv/bin/python benchmarks/secagg.py            # full grid, writes RESULTS.md
    .venv/bin/python benchmarks/secagg.py --quick --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np
import psutil
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from clients.statistics import on_wire
from fedcore.arrays import from_numpy, to_numpy, to_record
from fedcore.config import RunConfig, parse_config
from fedcore.keys import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    PARTITION_ID,
    SECAGG_STAGE,
    STATISTICS,
    WIRE,
)
from fedcore.server import _payload_bytes
from fedcore.statistics import contribution
from fedcore.tasks import get_algorithm
from privacy.secagg import crypto, graph
from privacy.secagg.aggregator import SecureAggregator
from privacy.secagg.crypto import MaskExpander
from privacy.secagg.mod import secagg_mod
from privacy.secagg.protocol import threshold
from simulations.engines.inprocess import InProcessGrid, node_ids
from strategies import build_strategy

WEIGHT = 100
SEED = 1234
FLOWER_FULL_ONCE_N = 50  # Flower's full graph from this cohort up: the largest L only
TARGET_FULL_S, TARGET_SPARSE_S, TARGET_VS_PLAIN, TARGET_KEYSTREAM = 3.0, 1.0, 3.0, 2.0


# -- measurement ---------------------------------------------------------------------------
class Meter:
    """Per node: client CPU seconds (by stage) and payload bytes each way, for one round."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.cpu: dict[int, float] = defaultdict(float)
        self.stage_cpu: dict[str, float] = defaultdict(float)
        self.down: dict[int, int] = defaultdict(int)
        self.up: dict[int, int] = defaultdict(int)

    def mod(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """The outermost client mod: CPU spent inside the ClientApp, by stage."""
        stage = _stage(msg)
        start = time.process_time()
        try:
            return call_next(msg, context)
        finally:
            spent = time.process_time() - start
            self.cpu[msg.metadata.dst_node_id] += spent
            self.stage_cpu[stage] += spent


def _stage(msg: Message) -> str:
    for name, rec in msg.content.config_records.items():
        for key in (SECAGG_STAGE, "stage"):  # fedcore's, Flower's SecAgg+ ("secaggplus_configs")
            if key in rec and (name == CONFIG or key == "stage"):
                return str(rec[key])
    return msg.metadata.message_type


class CountingGrid(InProcessGrid):
    """fedcore's in-process Grid, counting each node's payload bytes both ways."""

    def __init__(
        self,
        cfg: RunConfig,
        app: ClientApp | None,
        meter: Meter,
        eager: bool = False,
        workers: int = 1,
    ) -> None:
        if workers > 1:
            super().__init__(cfg, app_factory=worker_app, workers=workers)
        else:
            super().__init__(cfg, client_app=app)
        self.meter, self.eager = meter, eager

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterator[Message]:
        messages, seen = list(messages), set()
        for m in messages:
            self.meter.down[m.metadata.dst_node_id] += _payload_bytes(m)
            if id(m.content) in seen:
                m.content = _copy_content(m.content)
            seen.add(id(m.content))
        replies = self._count(super().send_and_receive(messages, timeout=timeout))
        # Flower's SecAggPlusWorkflow iterates the replies twice (a real Grid returns a list);
        # InProcessGrid's are a one-shot generator, so the second pass would see none.
        return list(replies) if self.eager else replies

    def _count(self, replies: Iterable[Message]) -> Iterator[Message]:
        for r in replies:  # lazily, as the server consumes them
            if not r.has_error():
                self.meter.up[r.metadata.src_node_id] += _payload_bytes(r)
            yield r


def _copy_content(content: RecordDict) -> RecordDict:
    """A message's own copy of a RecordDict that several messages share (the records, not
    the array data). Flower's SecAgg+ setup stage sends one RecordDict to every node and
    ``secaggplus_mod`` pops the stage out of it; over a real transport each node gets its own
    copy, here the first node's pop would remove it for all the others."""
    copy = RecordDict()
    for name, rec in content.items():
        copy[name] = type(rec)(dict(rec))
    return copy


def make_updates(n: int, length: int) -> dict[int, np.ndarray]:
    return {p: _update(p, length) for p in range(n)}


# -- fedcore -------------------------------------------------------------------------------
def fedcore_config(n: int, mode: str) -> RunConfig:
    return parse_config(
        {
            "data": {"num-clients": n},
            "train": {"fraction": 1.0, "min-clients": n},
            "evaluate": {"fraction": 0.0, "server": False},
            "secagg": {"mode": mode},
        }
    )


def fedcore_app(cfg: RunConfig, updates: dict[int, np.ndarray] | None, meter: Meter) -> ClientApp:
    """The benchmark's ClientApp: each client sends its fixed update (``updates``, or with
    None the same update drawn here from the partition id) as FedAvg's wire vector: the
    update times its weight, then the weight (:func:`fedcore.statistics.contribution`)."""
    app = ClientApp(mods=[meter.mod, secagg_mod(lambda _: cfg)])
    algorithm = get_algorithm(cfg.task)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        state = {"w": to_numpy(msg.content[ARRAYS]["w"])}
        pid = int(context.node_config[PARTITION_ID])
        update = updates[pid] if updates is not None else _update(pid, len(state["w"]))
        spec = algorithm.spec(cfg, state)
        wire = contribution({"w": update, "examples": np.array(float(WEIGHT))}, spec)
        wire, bound = on_wire(wire, spec, cfg, algorithm)  # as a client's handler sends it
        content = RecordDict(
            {
                ARRAYS: ArrayRecord({STATISTICS: from_numpy(wire)}),
                METRICS: MetricRecord({NUM_EXAMPLES: WEIGHT}),
                WIRE: ConfigRecord({"bound": float(bound)}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def _update(pid: int, length: int) -> np.ndarray:
    return np.random.default_rng([SEED, pid]).uniform(-0.5, 0.5, length).astype(np.float32)


def worker_app(cfg: RunConfig) -> ClientApp:
    """What each worker process of a multi-process grid serves (its CPU is measured from the
    outside, so the meter here stays unread)."""
    return fedcore_app(cfg, None, Meter())


def _warm_up(grid: InProcessGrid, n: int) -> None:
    """Start every worker process and build its app: a query to each node, which its
    ClientApp refuses (no query handler; the worker raises that error here)."""
    for node in node_ids(n):
        probe = Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
        with contextlib.suppress(ValueError):
            list(grid.send_and_receive([probe]))


def _children_cpu() -> float:
    return sum(sum(c.cpu_times()[:2]) for c in psutil.Process().children(recursive=True))


def fedcore_cell(
    n: int, length: int, mode: str, updates, exact, repeats: int, workers: int = 1
) -> dict:
    """One fedcore cell; with ``workers > 1`` the clients run in that many worker processes
    of the in-process engine, and their CPU is the workers' CPU."""
    cfg = fedcore_config(n, "off" if mode == "plaintext" else mode)
    meter = Meter()
    strategy = build_strategy(cfg)
    secure = SecureAggregator(cfg, strategy.sum_format()) if mode != "plaintext" else None
    arrays = to_record({"w": np.zeros(length, np.float32)})
    runs = []
    app = fedcore_app(cfg, updates, meter) if workers == 1 else None
    with CountingGrid(cfg, app, meter, workers=workers) as grid:
        if workers > 1:  # start the workers and build their apps before timing
            _warm_up(grid, n)
        for server_round in range(1, repeats + 1):
            meter.reset()
            children = _children_cpu()
            start, cpu = time.perf_counter(), time.process_time()
            messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
            assert len(messages) == n, "the strategy must sample every client"
            if secure is None:
                replies = grid.send_and_receive(messages)
            else:
                replies = secure.send_and_receive(grid, messages, arrays, server_round)
            new, _ = strategy.aggregate_train(server_round, replies)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            if new is None:
                raise RuntimeError(f"fedcore {mode} n={n}: {strategy.last_failures}")
            if workers > 1:  # the clients' CPU is the workers'; the meter saw none of it
                client = _children_cpu() - children
                meter.cpu = {node: client / n for node in node_ids(n)}
                cpu += client
            runs.append(_result(meter, n, wall, cpu, to_numpy(new["w"]), exact))
            if secure is not None:
                runs[-1]["stages"] = dict(secure.last_stage_seconds)
            if wall * (server_round + 1) > 30:  # enough repeats for a slow cell
                break
    best = min(runs, key=lambda r: r["wall"])
    best["runs"] = len(runs)
    return best


# -- Flower --------------------------------------------------------------------------------
def flower_cell(
    n: int, length: int, mode: str, updates, exact, repeats: int, degree: int | None
) -> dict:
    import flower_secaggplus as flower

    cfg = fedcore_config(n, "off")  # only for the grid's node contexts
    meter = Meter()
    app = flower.client_app(updates, [meter.mod], secure=mode != "plaintext")
    shares = None if mode == "plaintext" else (n if degree is None else min(degree + 1, n))
    t = None if shares is None else threshold(shares, 0.5)
    runs = []
    with CountingGrid(cfg, app, meter, eager=True) as grid:
        for _ in range(repeats):
            meter.reset()

            def record(wall: float, cpu: float, aggregate: np.ndarray) -> None:
                runs.append(_result(meter, n, wall, cpu, aggregate, exact))

            flower.run_round(grid, n, length, shares, t, record)
            if runs[-1]["error"] > 1e-3:  # a halted SecAgg+ round leaves the model unchanged
                raise RuntimeError(f"Flower {mode} n={n}: the round did not aggregate")
            if runs[-1]["wall"] * (len(runs) + 1) > 30:
                break
    best = min(runs, key=lambda r: r["wall"])
    best["shares"], best["runs"] = shares, len(runs)
    return best


def _result(meter: Meter, n: int, wall: float, cpu: float, agg: np.ndarray, exact) -> dict:
    nodes = node_ids(n)
    client = sum(meter.cpu.values())
    return {
        "wall": wall,
        "cpu": cpu,
        "client": client,
        "client_mean": client / n,
        "server": cpu - client,
        "down": sum(meter.down[i] for i in nodes) / n,
        "up": sum(meter.up[i] for i in nodes) / n,
        "error": float(np.max(np.abs(np.asarray(agg, np.float64) - exact))),
        "stage_cpu": dict(meter.stage_cpu),
    }


# -- keystream -----------------------------------------------------------------------------
def keystream_speed(length: int = 100_000, seconds: float = 1.0) -> dict:
    """GB/s of raw AES-256-CTR (4 MiB per call) and of ``MaskExpander`` (L uint32 per call),
    and of expanding and adding one mask in place (what a client does per neighbour)."""

    def rate(fn, nbytes: int) -> float:
        fn()
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            for _ in range(10):
                fn()
            best = min(best, (time.perf_counter() - start) / 10)
        return nbytes / best / 1e9

    size = 4 << 20
    zeros, buf = bytes(size), bytearray(size + 15)
    key = os.urandom(32)

    def raw() -> None:
        Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, buf)

    expand = MaskExpander(length, np.uint32)
    seeds = [os.urandom(32) for _ in range(16)]
    y = np.zeros(length, np.uint32)
    state = {"i": 0}

    def expander() -> None:
        state["i"] += 1
        expand(seeds[state["i"] % 16])

    def expand_add() -> None:
        state["i"] += 1
        y.__iadd__(expand(seeds[state["i"] % 16]))

    out = {
        "raw": rate(raw, size),
        "expander": rate(expander, 4 * length),
        "expand_add": rate(expand_add, 4 * length),
    }
    out["ratio"] = out["raw"] / out["expander"]
    return out


# -- the cryptographic floor ---------------------------------------------------------------
def crypto_floor(n: int, length: int, degree: int | None, repeats: int = 3) -> float:
    """Seconds of the round's cryptography that no implementation of the protocol avoids, in
    one process with no dropouts (best of ``repeats``): each client derives its two public
    keys, agrees a channel key and a mask seed with each neighbour (X25519 + HKDF) and adds
    its self mask and one mask per neighbour to its input; the server removes the n self
    masks. Encoding, Shamir sharing, share encryption and message handling come on top."""
    d = n - 1 if degree is None else min(degree, n - 1)
    peers = [crypto.public_key(crypto.load_private(crypto.new_private_bytes())) for _ in range(d)]
    expand = MaskExpander(length, np.uint32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x, total = np.zeros(length, np.uint32), np.zeros(length, np.uint32)
        for _ in range(n):
            c, s = (crypto.load_private(crypto.new_private_bytes()) for _ in range(2))
            c_pk, s_pk = crypto.public_key(c), crypto.public_key(s)
            y = x + expand(os.urandom(32))
            for peer in peers:
                crypto.agree(c, c_pk, peer, b"channel", 1)
                y += expand(crypto.agree(s, s_pk, peer, b"mask", 1))
            total += y
        for _ in range(n):
            total -= expand(os.urandom(32))
        best = min(best, time.perf_counter() - start)
    return best


# -- report --------------------------------------------------------------------------------
HEADER = [
    "system",
    "n",
    "L",
    "mode",
    "round s",
    "vs own plaintext",
    "client CPU s (per client ms)",
    "server CPU s",
    "down KB/client",
    "up KB/client",
    "max abs error",
    "runs",
]


def row(system: str, n: int, length: int, mode: str, r: dict | None, plain: dict | None) -> list:
    head = [system, n, f"{length // 1000}k", mode]
    if r is None:
        return [*head, "not run", *["-"] * (len(HEADER) - 5)]
    return [
        *head,
        f"{r['wall']:.3f}",
        f"{r['wall'] / plain['wall']:.1f}x" if plain is not None else "-",
        f"{r['client']:.2f} ({1e3 * r['client_mean']:.1f})",
        f"{r['server']:.2f}",
        f"{r['down'] / 1e3:,.1f}",
        f"{r['up'] / 1e3:,.1f}",
        f"{r['error']:.1e}",
        r["runs"],
    ]


def stage_lines(results: dict, n: int, length: int) -> list[str]:
    """fedcore's secure round by stage: wall time of each exchange and the clients' CPU."""
    out = []
    for mode in ("full", "sparse"):
        r = results.get(("fedcore", n, length, mode))
        if r is None:
            continue
        parts = [
            f"{stage} {r['stages'][stage]:.2f} s (clients {r['stage_cpu'].get(stage, 0):.2f})"
            for stage in ("train", "share-keys", "masked-input", "unmask")
        ]
        rest = r["wall"] - sum(r["stages"].values())
        out.append(
            f"fedcore {mode}, n = {n}, L = {length // 1000}k, by exchange: "
            + ", ".join(parts)
            + f"; the rest (server work between exchanges: roster, routing, sum, unmasking; "
            f"configure, aggregate) {rest:.2f} s"
        )
    return out


def verdicts(results: dict, ks: dict, floors: dict[str, float] | None) -> list[str]:
    out = []
    big = (100, 100_000)

    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    for system in sorted({key[0] for key in results if key[0].startswith("fedcore")}):
        if (system, *big, "full") not in results:
            continue
        full, sparse, plain = (results[system, *big, m] for m in ("full", "sparse", "plaintext"))
        out += [
            f"{system}, n = 100, L = 100k, full graph: {full['wall']:.2f} s per round (target "
            f"<= {TARGET_FULL_S:g} s): {met(full['wall'] <= TARGET_FULL_S)}",
            f"{system}, n = 100, L = 100k, sparse graph: {sparse['wall']:.2f} s per round "
            f"(target <= {TARGET_SPARSE_S:g} s): {met(sparse['wall'] <= TARGET_SPARSE_S)}",
            f"{system}, against plaintext aggregation at that size ({plain['wall']:.3f} s): "
            f"full {full['wall'] / plain['wall']:.0f}x, sparse "
            f"{sparse['wall'] / plain['wall']:.0f}x (target <= {TARGET_VS_PLAIN:g}x): "
            f"{met(max(full['wall'], sparse['wall']) <= TARGET_VS_PLAIN * plain['wall'])}",
        ]
    if floors:
        plain = results["fedcore", *big, "plaintext"]["wall"]
        sparse_ratio = floors["sparse"] / plain
        out.append(
            "the protocol's unavoidable cryptography at that size, alone in one process (each "
            "client's X25519 agreements, self mask and pair masks; the server's removal of the "
            f"self masks; `crypto_floor`): full {floors['full']:.2f} s "
            f"({floors['full'] / plain:.0f}x plaintext), sparse {floors['sparse']:.2f} s "
            f"({sparse_ratio:.1f}x plaintext)"
            + (
                f": in one process the {TARGET_VS_PLAIN:g}x target is below what any "
                "implementation of the protocol can reach"
                if sparse_ratio > TARGET_VS_PLAIN
                else ""
            )
        )
    if ("fedcore", *big, "full") in results:
        for mode in ("full", "sparse"):
            fl = results.get(("Flower", *big, mode))
            if fl is not None:
                out.append(
                    f"Flower's SecAgg+ at that size, {mode}: {fl['wall']:.1f} s per round, "
                    f"{fl['wall'] / results['fedcore', *big, mode]['wall']:.0f}x fedcore's"
                )
    out.append(
        f"mask expansion: `MaskExpander` {ks['expander']:.2f} GB/s against raw AES-256-CTR "
        f"{ks['raw']:.2f} GB/s (4 MiB calls), {ks['ratio']:.2f}x slower (target <= "
        f"{TARGET_KEYSTREAM:g}x): {'**met**' if ks['ratio'] <= TARGET_KEYSTREAM else '**not met**'}"
        f"; expanding and adding one mask in place (what a client does per neighbour): "
        f"{ks['expand_add']:.2f} GB/s"
    )
    return out


DESCRIPTION = (
    "One training round of n clients, each returning a fixed random update of L float32 "
    "values in [-0.5, 0.5] with num-examples 100 (no training), all in one process on "
    "fedcore's `InProcessGrid`: messages are handed over as objects, so neither side pays "
    "for serialization or transport (for Flower the replies of a stage are collected into a "
    "list and a RecordDict shared by several messages is copied per message, as a transport "
    "would). fedcore: the run's strategy (FedAvg on typed statistics) with "
    "`grid.send_and_receive` (plaintext) or "
    "`SecureAggregator` (full graph; sparse SecAgg+ graph of the default degree "
    "2 ceil(log2 n) + 2, which at n = 10 is the full graph), a client's secrets need more "
    "than half of its share holders, 20 fraction bits, max-weight 10^4. Flower 1.42: legacy "
    "`DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))` with `secaggplus_mod` on a "
    "legacy `ClientApp`, num_shares = n (full) or fedcore's degree + 1 (sparse), the same "
    "reconstruction threshold, its default quantization (2^22 levels over [-8, 8], "
    "max_weight 1000); its plaintext row is `default_fit_workflow`. Round time: "
    "configure -> exchanges -> aggregate, best of `runs` (up to 3 while a cell stays under "
    "30 s). CPU: the clients' is the process CPU spent inside the ClientApp (an outermost "
    "client mod; Flower's Shamir thread pool included), summed over clients; the server's is "
    "the rest of the process's CPU in the round. Bytes: arrays and byte strings in the "
    "messages, per client, each way. Error: largest |aggregate - exact mean| over the L "
    "coordinates (float64 reference)."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n in {10, 50}, L = 10k only")
    parser.add_argument("--repeats", type=int, default=3, help="best of, where affordable")
    parser.add_argument("--cohorts", type=int, nargs="+", help="cohort sizes n (overrides)")
    parser.add_argument("--lengths", type=int, nargs="+", help="update lengths L (overrides)")
    parser.add_argument("--no-flower", action="store_true", help="skip Flower's SecAgg+")
    parser.add_argument(
        "--flower-all",
        action="store_true",
        help=f"also run Flower's full graph at n >= {FLOWER_FULL_ONCE_N} below the largest L "
        "(minutes each: its cost there is Shamir sharing, nearly independent of L)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run fedcore with the clients in this many worker processes (1: not)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    systems = ["fedcore", *([f"fedcore {args.workers} workers"] * (args.workers > 1)), "Flower"]
    logging.getLogger("flwr").setLevel(logging.CRITICAL)  # Flower logs every stage
    cohorts, lengths = ([10, 50], [10_000]) if args.quick else ([10, 50, 100], [10_000, 100_000])
    cohorts, lengths = args.cohorts or cohorts, args.lengths or lengths
    started = time.perf_counter()

    ks = keystream_speed()
    print(
        f"AES-256-CTR raw {ks['raw']:.2f} GB/s, MaskExpander {ks['expander']:.2f} GB/s "
        f"(raw / expander {ks['ratio']:.2f}), expand + add {ks['expand_add']:.2f} GB/s",
        flush=True,
    )
    print(" | ".join(HEADER), flush=True)
    rows, results, skipped = [], {}, []
    for length in lengths:
        for n in cohorts:
            updates = make_updates(n, length)
            exact = np.mean([updates[p].astype(np.float64) for p in range(n)], axis=0)
            degree = graph.default_degree(n)
            for system in systems:
                if system == "Flower" and args.no_flower:
                    continue
                for mode in ("plaintext", "full", "sparse"):
                    r = None
                    if system.startswith("fedcore"):
                        workers = args.workers if system != "fedcore" else 1
                        r = fedcore_cell(n, length, mode, updates, exact, args.repeats, workers)
                    elif (
                        mode == "full"
                        and n >= FLOWER_FULL_ONCE_N
                        and length < max(lengths)
                        and not args.flower_all
                    ):
                        skipped.append(f"n = {n}, L = {length // 1000}k, full")
                    else:
                        big_full = mode == "full" and n >= 100
                        r = flower_cell(
                            n,
                            length,
                            mode,
                            updates,
                            exact,
                            1 if big_full else args.repeats,
                            None if mode == "full" else degree,
                        )
                    if r is not None:
                        results[system, n, length, mode] = r
                    plain = results.get((system, n, length, "plaintext"))
                    rows.append(row(system, n, length, mode, r, plain))
                    print(" | ".join(map(str, rows[-1])), flush=True)
    total = time.perf_counter() - started
    details = stage_lines(results, max(cohorts), max(lengths))
    floors = None
    if 100 in cohorts and 100_000 in lengths:
        floors = {
            "full": crypto_floor(100, 100_000, None),
            "sparse": crypto_floor(100, 100_000, graph.default_degree(100)),
        }
    notes = details + verdicts(results, ks, floors)
    if skipped:
        notes.append(
            f"Flower not run ({', '.join(skipped)}): to keep the script near 10 minutes, "
            f"Flower's full graph at n >= {FLOWER_FULL_ONCE_N} runs at the largest L only "
            "(`--flower-all` runs every cell). Its round there is Shamir sharing in pure Python "
            "(pycryptodome, GF(2^128)), about cubic in n and nearly independent of L: in an "
            "earlier full run of this script n = 50 took 54.2 s at L = 10k and 51.1 s at "
            "L = 100k"
        )
    if args.no_flower:
        notes.append("Flower not run (`--no-flower`)")
    print(f"total {total:.0f} s", flush=True)
    for line in notes:
        print("-", line)
    if args.no_write:
        return
    from results_md import markdown_table, update_section

    command = "`.venv/bin/python benchmarks/secagg.py" + (" --quick" if args.quick else "") + "`"
    update_section(
        "secagg",
        f"{DESCRIPTION}\n\nCommand: {command} (total {total / 60:.1f} min)\n\n"
        + markdown_table(HEADER, rows)
        + "\n\nTargets (issue): at n = 100, L = 100k in-process, the full graph within 3 s "
        "per round and the sparse graph within 1 s, at most 3x the time of plaintext "
        "aggregation at that size; mask expansion within 2x of this machine's raw AES-CTR "
        "keystream.\n\n" + "\n".join(f"- {line}" for line in notes),
    )


if __name__ == "__main__":
    main()
