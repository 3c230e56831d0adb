"""PNG plots of benchmark results (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.report import RESULTS


def _save(fig: Figure, name: str) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(RESULTS.parent.parent))


def latency_cdf(
    ax: Axes, series: Mapping[str, Sequence[float]], title: str, target_ms: float | None
) -> None:
    """Cumulative distributions of latencies (seconds in, milliseconds drawn)."""
    for label, samples_s in series.items():
        ms = sorted(s * 1000 for s in samples_s)
        if not ms:
            continue
        ys = [(i + 1) / len(ms) for i in range(len(ms))]
        ax.plot(ms, ys, label=f"{label} (n={len(ms)})")
    if target_ms is not None:
        ax.axvline(target_ms, color="red", linestyle="--", label=f"target p99 {target_ms:g} ms")
    ax.axhline(0.99, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(title)
    ax.legend(fontsize=8)


def bars(
    ax: Axes, values: Mapping[str, float], title: str, unit: str, target: float | None
) -> None:
    labels = list(values)
    ax.bar(
        labels,
        [values[k] for k in labels],
        color=["tab:grey", "tab:blue", "tab:green"][: len(labels)],
    )
    for i, label in enumerate(labels):
        ax.text(i, values[label], f"{values[label]:,.0f}", ha="center", va="bottom")
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", label=f"target {target:,.0f} {unit}")
        ax.legend(fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title)


def figure(name: str, panels: int) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2))
    return fig, list(axes) if panels > 1 else [axes]


def save(fig: Figure, name: str) -> str:
    """Write ``results/NAME.png``; returns its path relative to the repository."""
    return _save(fig, name)
