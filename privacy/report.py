"""Privacy-budget report of a run, built only from its ledger (and, for utility, its metrics).

``fedcore report RUN_DIR`` writes ``privacy_report.json``, ``privacy_report.md`` and a
self-contained ``privacy_report.html`` (plots embedded). Every number in them is recomputed
from ``ledger.jsonl``, so the report says exactly what ran.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
import tomllib
from pathlib import Path
from typing import Any

from privacy.accounting import epsilon, epsilon_curve
from privacy.ledger import PrivacyLedger

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
    "not-covered": (
        "Not covered: client participation is not hidden from the server (it picks the "
        "cohorts and sees who replies), and anything outside the recorded mechanisms."
    ),
}


def _assumptions(ledger: PrivacyLedger, privacy: dict) -> dict[str, str]:
    present = {e.neighbouring for e in ledger.events} | {e.sampling for e in ledger.events}
    present.add(privacy.get("dp", "off"))
    if privacy.get("seeded-noise", False):
        present.add("seeded")
    if privacy.get("clear-evaluation", False):
        present.add("clear-evaluation")
    return {k: v for k, v in ASSUMPTIONS.items() if k in present or k == "not-covered"}


EVERY_CLIENT = "all"
"""The report's key for server-side (client-level) mechanisms, which protect every client."""


def build_report(run_dir: Path) -> dict[str, Any]:
    """The report as a JSON-serialisable dict."""
    run_dir = Path(run_dir)
    config = tomllib.loads((run_dir / "config.toml").read_text())
    privacy = config.get("privacy", {})
    delta = float(privacy.get("delta", 1e-5))
    accountant = privacy.get("accountant", "rdp")
    budget = float(privacy.get("budget-epsilon", 0.0))
    target = float(privacy.get("target-epsilon", 0.0))
    ledger_path = run_dir / "ledger.jsonl"
    everything = PrivacyLedger.load(ledger_path) if ledger_path.exists() else PrivacyLedger()
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
    utility = _utility(run_dir, bands)
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
        }
    )
    return {
        "delta": delta,
        "accountant": accountant,
        "guarantee": {
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
        "assumptions": _assumptions(everything, privacy),
        "events": len(everything.events),
    }


def _at(curve: dict[str, float], r: int) -> float:
    reached = [e for rr, e in curve.items() if int(rr) <= r]
    return max(reached) if reached else 0.0


def _utility(run_dir: Path, bands: dict[str, dict]) -> list[dict]:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return []
    out = []
    for line in metrics.read_text().splitlines():
        rec = json.loads(line)
        acc = (rec.get("server-eval") or {}).get("accuracy")
        band = bands.get(str(rec["round"]))
        if acc is not None and band is not None:
            out.append({"round": rec["round"], "accuracy": acc, "max_epsilon": band["max"]})
    return out


def _plot(report: dict) -> str:
    """Epsilon bands per round and accuracy against epsilon, as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    bands = report["epsilon_bands"]
    xs = [int(r) for r in bands]
    ax1.fill_between(
        xs,
        [b["min"] for b in bands.values()],
        [b["max"] for b in bands.values()],
        alpha=0.3,
        label="clients min-max",
    )
    ax1.plot(xs, [b["median"] for b in bands.values()], label="median client")
    ax1.set(xlabel="round", ylabel=f"epsilon (delta={report['delta']:g})", title="Privacy spent")
    ax1.legend()
    util = report["utility"]
    ax2.plot([u["max_epsilon"] for u in util], [u["accuracy"] for u in util], marker=".")
    ax2.set(
        xlabel="epsilon (max over clients)", ylabel="test accuracy", title="Utility against privacy"
    )
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _client_order(item: tuple[str, dict]) -> tuple[int, str]:
    name = item[0]
    return (1, name) if name == EVERY_CLIENT else (0, name.zfill(12))


def to_markdown(report: dict) -> str:
    lines = ["# Privacy report", "", *_guarantee_lines(report), ""]
    lines += [
        "## Mechanisms",
        "",
        "| mechanism | noise multiplier | sample rate | clip norm | sampling | neighbouring |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {m['mechanism']} | {m['noise_multiplier']:.4g} | {m['sample_rate']:.4g} | "
        f"{m['clip_norm']:g} | {m['sampling']} | {m['neighbouring']} |"
        for m in report["mechanisms"]
    ]
    lines += [
        "",
        "## Clients",
        "",
        "| client | epsilon | rounds | budget | remaining | status |",
        "|---|---|---|---|---|---|",
    ]
    for cid, c in sorted(report["clients"].items(), key=_client_order):
        cid = "every client (server-side DP)" if cid == EVERY_CLIENT else cid
        status = "exhausted" if c["exhausted"] else "ok"
        budget = "-" if c["budget"] is None else f"{c['budget']:g}"
        remaining = "-" if c["remaining"] is None else f"{c['remaining']:.3f}"
        lines.append(
            f"| {cid} | {c['epsilon']:.3f} | {c['rounds_participated']} | {budget} | "
            f"{remaining} | {status} |"
        )
    lines += [
        "",
        "## Utility beside privacy",
        "",
        "| round | test accuracy | max epsilon |",
        "|---|---|---|",
    ]
    lines += [
        f"| {u['round']} | {u['accuracy']:.4f} | {u['max_epsilon']:.3f} |"
        for u in report["utility"]
    ]
    lines += ["", "## Assumptions", ""] + [f"- {t}" for t in report["assumptions"].values()]
    return "\n".join(lines) + "\n"


def headline(guarantee: dict, delta: float) -> str:
    """The guarantee in one line: per client against every party, and (server-side DP)
    against observers of the released models; "no guarantee" for seeded randomness."""
    g = guarantee
    parts = []
    if g.get("against_every_party") is not None:
        parts.append(f"({g['against_every_party']:.3f}, {delta:g})-DP per client")
    if g.get("against_release_observers") is not None:
        parts.append(
            f"({g['against_release_observers']:.3f}, {delta:g})-DP against observers of the "
            f"released models"
        )
    if g.get("node_feature_epsilon") is not None:
        parts.append(f"({g['node_feature_epsilon']:.3f}, {delta:g})-DP per node's features")
    text = "; ".join(parts) or f"({g['max_client_epsilon']:.3f}, {delta:g})-DP"
    return ("NO GUARANTEE (seeded randomness); would be " + text) if g.get("seeded") else text


def _guarantee_lines(report: dict) -> list[str]:
    """The guarantee in words: against whom each figure holds, and who passed the target."""
    g, delta = report["guarantee"], report["delta"]
    lines = []
    if g.get("seeded"):
        lines += [
            "**No guarantee: this run's DP noise and sampling were drawn from the published "
            "run seed (privacy.seeded-noise, experiments only).** The figures below are what "
            "the same mechanisms give with secret randomness.",
            "",
        ]
    if g.get("against_every_party") is not None:
        lines.append(
            f"Against every party, the server included: ({g['against_every_party']:.3f}, "
            f"{delta:g})-DP for every client (median client epsilon "
            f"{g['median_client_epsilon']:.3f})."
        )
    if g.get("against_release_observers") is not None:
        whom = (
            "the server picks the cohorts and is not such an observer"
            if report.get("dp") == "distributed"
            else "the server itself is trusted with the updates"
        )
        lines.append(
            f"Against observers of the released models only ({whom}): "
            f"({g['against_release_observers']:.3f}, {delta:g})-DP for every client."
        )
    if g.get("node_feature_epsilon") is not None:
        lines.append(
            f"FedGCN pre-communication: ({g['node_feature_epsilon']:.3f}, {delta:g})-DP for "
            f"each node's features, against the server and any single client."
        )
    if not lines or lines[-1] == "":
        lines.append(f"No DP mechanism ran: ({g['max_client_epsilon']:.3f}, {delta:g}).")
    lines.append(
        f"Neighbouring relation: {', '.join(g['neighbouring']) or 'none'}; accountant: "
        f"{report['accountant']}; {report['events']} recorded mechanism applications."
    )
    if g.get("target_epsilon"):
        over = g.get("clients_over_target") or []
        lines.append(
            f"Target epsilon {g['target_epsilon']:g}: "
            + (f"exceeded by clients {', '.join(over)}." if over else "no client exceeds it.")
        )
    return lines


def _markdown_to_html(markdown: str) -> str:
    """HTML for the Markdown subset :func:`to_markdown` writes: headings, tables, bullets and
    paragraphs (all text escaped)."""
    out, table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue  # the header separator row
            tag = "td" if table else "th"
            if not table:
                out.append("<table>")
                table = True
            out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            out.append("</table>")
            table = False
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{html.escape(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if table:
        out.append("</table>")
    return "\n".join(out)


def to_html(report: dict, markdown: str) -> str:
    """A self-contained page: the Markdown report as HTML, with the plots embedded."""
    plot = _plot(report) if report["epsilon_bands"] else ""
    img = (
        f'<img alt="privacy and utility plots" src="data:image/png;base64,{plot}">' if plot else ""
    )
    style = (
        "body{font-family:sans-serif;max-width:62em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}img{max-width:100%}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Privacy report</title>"
        f"<style>{style}</style></head><body>{_markdown_to_html(markdown)}{img}"
        "</body></html>\n"
    )


def write_report(run_dir: Path) -> dict[str, Any]:
    """Write the three report files into ``run_dir`` and return the report."""
    run_dir = Path(run_dir)
    report = build_report(run_dir)
    markdown = to_markdown(report)
    (run_dir / "privacy_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "privacy_report.md").write_text(markdown)
    (run_dir / "privacy_report.html").write_text(to_html(report, markdown))
    return report
