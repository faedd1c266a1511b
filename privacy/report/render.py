"""The privacy report as Markdown and as self-contained HTML (plots embedded)."""

from __future__ import annotations

import base64
import html
import io

from privacy.report.build import EVERY_CLIENT

NO_DP = "no differential privacy"


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


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.4g}"


def to_markdown(report: dict) -> str:
    lines = ["# Privacy report", "", *_guarantee_lines(report), ""]
    lines += [
        "## Mechanisms",
        "",
        "| mechanism | noise multiplier | sample rate | clip norm | sampling | neighbouring |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {m['mechanism']} | {m['noise_multiplier']:.4g} | {_rate(m['sample_rate'])} | "
        f"{m['clip_norm']:g} | {m['sampling'] or 'composed'} | {m['neighbouring']} |"
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
    against observers of the released models; "no guarantee" for seeded randomness; "no
    differential privacy" for a run without it."""
    g = guarantee
    if g.get("differential_privacy") is False:
        return NO_DP
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
    if g.get("differential_privacy") is False:
        lines.append(
            f"**{NO_DP[0].upper()}{NO_DP[1:]}**: privacy.dp = 'off' and no DP mechanism ran, so "
            "nothing bounds what the released models reveal about a client or an example."
        )
    elif not lines or lines[-1] == "":
        lines.append(f"No DP mechanism ran: ({g['max_client_epsilon']:.3f}, {delta:g}).")
    lines.append(
        f"Neighbouring relation: {', '.join(g['neighbouring']) or 'none'}; accountant: "
        f"{report['accountant']}; {report['events']} recorded mechanism applications."
        + (
            f" {report['rerun_events']} of them ran in rounds that a resumed run ran again;"
            " their releases were seen, so they count."
            if report.get("rerun_events")
            else ""
        )
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
