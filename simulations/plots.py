"""PNG plots of a run's per-round metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from fedcore.keys import ACCURACY, LOSS

PLOTTED = (ACCURACY, LOSS, "mse", "mae")  # the evaluation metrics of fedcore's tasks


def plot_rounds(rounds: list[dict], out: Path) -> list[Path]:
    """Write ``<metric>.png`` for each evaluation metric the run has (``accuracy.png`` and
    ``loss.png`` for classifiers, ``mse.png`` and ``mae.png`` for recommenders): server-side
    and mean client-side per round."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    xs = [r["round"] for r in rounds]
    written = []
    for metric in PLOTTED:
        curves = []
        for part, label in (("server-eval", "server test set"), ("client-eval", "clients (mean)")):
            ys = [(r.get(part) or {}).get(metric) for r in rounds]
            if any(y is not None for y in ys):
                curves.append((ys, label, "-"))
        if metric == ACCURACY:
            worst = [(r.get("client-eval") or {}).get(f"{ACCURACY}-worst10") for r in rounds]
            if any(w is not None for w in worst):
                curves.append((worst, "clients (worst 10%)", "--"))
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for ys, label, style in curves:
            ax.plot(xs, ys, marker=".", linestyle=style, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
