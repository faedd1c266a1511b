"""PNG plots of a run's per-round metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from fedcore.keys import ACCURACY, LOSS


def plot_rounds(rounds: list[dict], out: Path) -> list[Path]:
    """Write ``accuracy.png`` and ``loss.png``: server-side and mean client-side per round."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    xs = [r["round"] for r in rounds]
    written = []
    for metric in (ACCURACY, LOSS):
        fig, ax = plt.subplots(figsize=(6, 4))
        for part, label in (("server-eval", "server test set"), ("client-eval", "clients (mean)")):
            ys = [(r.get(part) or {}).get(metric) for r in rounds]
            if any(y is not None for y in ys):
                ax.plot(xs, ys, marker=".", label=label)
        if metric == ACCURACY:
            worst = [(r.get("client-eval") or {}).get(f"{ACCURACY}-worst10") for r in rounds]
            if any(w is not None for w in worst):
                ax.plot(xs, worst, linestyle="--", label="clients (worst 10%)")
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
