"""The privacy report as data: every number recomputed from a run's ledger (and, for utility,
its metrics), with the assumptions each guarantee rests on. The ledger is checked against
the run first (:mod:`privacy.report.audit`): a ledger that does not match is refused."""

from __future__ import annotations

import json
import statistics
import tomllib
from pathlib import Path
from typing import Any

from privacy.accounting import epsilon, epsilon_curve
from privacy.ledger import PrivacyLedger, ledger_seal
from privacy.report.audit import check_run

ASSUMPTIONS = {
    "example": (
        "Sample-level DP: neighbouring datasets differ by adding or removing one training "
        "example of one client. The guarantee covers each example's influence on everything "
        "that client sends; it does not bound what the whole client's data reveals."
    ),
    "client": (
        "Client-level DP (DP-FedAvg): neighbouring datasets differ by adding or removing one "
        "whole client. The server clips each update (or checks the clients clipped it), adds "
        "Gaussian noise to the sum and divides by the expected cohort size; the guarantee "
        "covers every model the server releases, against anyone who sees them. The server "
        "itself is trusted with the individual updates."
    ),
    "local": (
        "Local DP: each client clips its update and adds Gaussian noise before it leaves the "
        "client, so not even the server sees an un-noised update. Neighbouring: any two "
        "datasets of one client (the clipped update can move by twice the clip norm)."
    ),
    "poisson": (
        "Poisson sampling: every unit (an example in DP-SGD, a client in DP-FedAvg) takes part "
        "in a step independently with the recorded probability, as the accountant assumes."
    ),
    "fixed-size": (
        "Fixed-size sampling: each round's cohort of m of N clients is drawn uniformly without "
        "replacement. Its bound (Wang, Balle and Kasiviswanathan 2019) holds under replace-one "
        "neighbouring, so the sensitivity is twice the clip norm and the accounted noise "
        "multiplier is half the recorded one."
    ),
    "sample-distributed": (
        "Distributed DP-SGD: each round is one DP-SGD step; every client adds a share of the "
        "step's Gaussian noise to its clipped gradient sum and the server sees only the sum, "
        "through secure aggregation, which carries the whole noise (a sum of fewer clients "
        "than the shares were sized for is not released). The guarantee holds against an "
        "honest-but-curious server and any clients that do not hold the example; it assumes "
        "the secure aggregation holds, and treats each client's number of examples as public. "
        "The fixed-point encoding of each share is not accounted (its rounding is 2^-20 per "
        "coordinate, far below the noise)."
    ),
    "distributed": (
        "Distributed client-level DP: each client clips its update and adds a share of the "
        "noise before secure aggregation, so the server sees only the noised sum, never an "
        "individual update, and no sum of fewer clients than the shares were sized for is "
        "unmasked; it assumes the secure aggregation holds. The server picks the cohorts, so "
        "against it each client is accounted without sampling amplification, composing the "
        "rounds it took part in (the per-client figures), under zero-out neighbouring: since "
        "the server knows who took part, a neighbouring dataset replaces the client's data by "
        "none, its clipped update by zero (one clip norm, accounted as add/remove-one); the "
        "amplified figure holds only against observers of the released models who cannot "
        "tell who was sampled."
    ),
    "seeded": (
        "NO GUARANTEE: this run drew its DP noise and sampling from the run seed "
        "(privacy.seeded-noise, for experiments only). Anyone who knows the seed, which is in "
        "config.toml and was sent to every node, can recompute who was sampled and subtract "
        "the noise; the figures above say what the mechanisms would give with secret "
        "randomness."
    ),
    "clear-evaluation": (
        "Not covered: client evaluation replies (privacy.clear-evaluation, simulation only) "
        "carried each client's un-noised loss and accuracy, and under sample-level DP its "
        "test-set size."
    ),
    "compression": (
        "Compression ({uplink}) changes each client's update after its DP mechanism: after "
        "DP-SGD's and local DP's noise, so it is post-processing; under central client-level "
        "DP (privacy.dp = 'client') the server clips each decoded update to the clip norm "
        "before adding its noise, so the noise is sized for what one client moves the sum by "
        "whatever the compressor did. The guarantee above is unchanged by it."
    ),
    "none": "No sampling amplification: the mechanism saw every unit each time it ran.",
    "node": (
        "FedGCN pre-communication: neighbouring graphs differ in one node's feature vector "
        "(clipped to the feature clip, replaced by any other); the edges, hence every "
        "node's degree, are public. Each client adds a share of the Gaussian noise to its "
        "contribution before the secure sum, so any m - 1 of the m shares carry the whole "
        "noise: it holds against the server and against any single client; it assumes the "
        "secure aggregation holds. The GCN's training on the noised aggregates is "
        "post-processing."
    ),
    "record": (
        "Record-level DP: neighbouring datasets differ by adding or removing one record (a "
        "point, a row of a count table) of one client. The server adds the noise to the sums "
        "after it has summed them (under secure aggregation, after unmasking: it is trusted "
        "with the sums, not with any client's statistics), scaled to what one record changes "
        "(the algorithm's sensitivity); it does not bound what a whole client's data reveals."
    ),
    "not-covered": (
        "Not covered: client participation is not hidden from the server (it picks the "
        "cohorts and sees who replies), and anything outside the recorded mechanisms."
    ),
}


def _assumptions(ledger: PrivacyLedger, privacy: dict, uplink: str = "none") -> dict[str, str]:
    present = {e.neighbouring for e in ledger.events} | {e.sampling for e in ledger.events}
    present.add(privacy.get("dp", "off"))
    if privacy.get("seeded-noise", False):
        present.add("seeded")
    if privacy.get("clear-evaluation", False):
        present.add("clear-evaluation")
    if uplink != "none" and ledger.events:
        present.add("compression")
    return {
        k: v.format(uplink=uplink) if k == "compression" else v
        for k, v in ASSUMPTIONS.items()
        if k in present or k == "not-covered"
    }


EVERY_CLIENT = "all"
"""The report's key for server-side (client-level) mechanisms, which protect every client."""


def build_report(run_dir: Path, seal: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report of the run in ``run_dir`` as a JSON-serialisable dict, once its ledger
    matches the run (:func:`privacy.report.audit.check_run`; :class:`LedgerMismatch`
    otherwise). ``seal``: the ledger's seal, given by a run that is finishing (its
    summary.json is not written yet); by default the one in ``summary.json``."""
    run_dir = Path(run_dir)
    config = tomllib.loads((run_dir / "config.toml").read_text())
    ledger_path = run_dir / "ledger.jsonl"
    text = ledger_path.read_text(encoding="utf-8") if ledger_path.exists() else ""
    rounds = _rounds(run_dir)
    everything = check_run(
        config.get("privacy", {}).get("dp", "off"),
        rounds,
        text,
        seal if seal is not None else _recorded_seal(run_dir),
        ledger_seal(ledger_path),
        config.get("data", {}).get("num-clients"),
    )
    return report_of(everything, config, rounds)


def _rounds(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def _recorded_seal(run_dir: Path) -> Any:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()).get("ledger") if path.exists() else None


def report_of(everything: PrivacyLedger, config: dict, records: list[dict]) -> dict[str, Any]:
    """The report of a ledger already checked against its run, whose config (config.toml as
    a dict) and rounds' records (metrics.jsonl) are given."""
    privacy = config.get("privacy", {})
    delta = float(privacy.get("delta", 1e-5))
    accountant = privacy.get("accountant", "rdp")
    budget = float(privacy.get("budget-epsilon", 0.0))
    target = float(privacy.get("target-epsilon", 0.0))
    # FedGCN's pre-communication protects another unit (a node's features): its own figure
    nodes = PrivacyLedger(tuple(e for e in everything.events if e.neighbouring == "node"))
    ledger = PrivacyLedger(tuple(e for e in everything.events if e.neighbouring != "node"))
    parties = {str(c): ledger.for_client(c) for c in ledger.clients()}
    if ledger.for_client(None).events:
        parties[EVERY_CLIENT] = ledger.for_client(None)
    clients = {}
    for name, events in parties.items():
        curve = epsilon_curve(events, delta, accountant)
        spent = max(curve.values()) if curve else 0.0
        clients[name] = {
            "epsilon_by_round": {str(r): e for r, e in curve.items()},
            "epsilon": spent,
            "rounds_participated": len(curve),
            "budget": budget or None,
            "remaining": (budget - spent) if budget else None,
            "exhausted": bool(budget) and spent >= budget,
        }
    rounds = sorted({int(r) for c in clients.values() for r in c["epsilon_by_round"]})
    bands = {}
    for r in rounds:  # a client's epsilon at round r: the last value it reached by then
        values = [_at(c["epsilon_by_round"], r) for c in clients.values()]
        bands[str(r)] = {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
        }
    utility = _utility(records, bands)
    mechanisms = sorted(
        {
            (
                e.mechanism,
                e.noise_multiplier,
                e.sample_rate,
                e.clip_norm,
                e.sampling,
                e.neighbouring,
            )
            for e in everything.events
        },
        key=repr,  # a tree with no single sampling has None fields
    )
    return {
        "delta": delta,
        "accountant": accountant,
        "guarantee": {
            # False: no DP mechanism was on and none ran (the report says so, states no epsilon)
            "differential_privacy": privacy.get("dp", "off") != "off" or bool(everything.events),
            "neighbouring": sorted({e.neighbouring for e in everything.events}),
            "max_client_epsilon": max((c["epsilon"] for c in clients.values()), default=0.0),
            "median_client_epsilon": statistics.median([c["epsilon"] for c in clients.values()])
            if clients
            else 0.0,
            "client_level_epsilon": clients.get(EVERY_CLIENT, {}).get("epsilon"),
            # the per-client figures hold against every party, the server included; the
            # server-side one only against observers of the released models
            "against_every_party": max(
                (c["epsilon"] for k, c in clients.items() if k != EVERY_CLIENT), default=None
            ),
            "against_release_observers": clients.get(EVERY_CLIENT, {}).get("epsilon"),
            "seeded": bool(privacy.get("seeded-noise", False)),
            "node_feature_epsilon": epsilon(nodes.events, delta, accountant)
            if nodes.events
            else None,
            "target_epsilon": target or None,
            "clients_over_target": sorted(
                (k for k, c in clients.items() if target and c["epsilon"] > target),
                key=lambda k: k.zfill(12),
            ),
        },
        "dp": privacy.get("dp", "off"),
        "mechanisms": [
            dict(
                zip(
                    (
                        "mechanism",
                        "noise_multiplier",
                        "sample_rate",
                        "clip_norm",
                        "sampling",
                        "neighbouring",
                    ),
                    m,
                    strict=True,
                )
            )
            for m in mechanisms
        ],
        "clients": clients,
        "epsilon_bands": bands,
        "utility": utility,
        "assumptions": _assumptions(
            everything, privacy, config.get("compression", {}).get("uplink", "none")
        ),
        "events": len(everything.events),
        # releases of rounds a resumed run ran again: counted above like any other
        "rerun_events": sum(e.rerun for e in everything.events),
    }


def _at(curve: dict[str, float], r: int) -> float:
    reached = [e for rr, e in curve.items() if int(rr) <= r]
    return max(reached) if reached else 0.0


def _utility(records: list[dict], bands: dict[str, dict]) -> list[dict]:
    out = []
    for rec in records:
        acc = (rec.get("server-eval") or {}).get("accuracy")
        band = bands.get(str(rec["round"]))
        if acc is not None and band is not None:
            out.append({"round": rec["round"], "accuracy": acc, "max_epsilon": band["max"]})
    return out
