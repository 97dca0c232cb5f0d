"""Figures written next to results: headless matplotlib, saved atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from oncoseg.io.atomic import atomic_path


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg back end (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str]) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    pyplot().close(fig)


def plot_distribution(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                      path: str | os.PathLike[str], title: str = "") -> None:
    """One box with every case as a dot per metric column: the spread a mean hides."""
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(columns), 4), dpi=100)
    data = [[float(r[c]) for r in rows if r.get(c) is not None and np.isfinite(float(r[c]))]
            for c in columns]
    ax.boxplot(data, showfliers=False)
    jitter = np.random.default_rng(0)
    for index, values in enumerate(data, start=1):
        ax.scatter(index + jitter.uniform(-0.12, 0.12, len(values)), values, s=14, alpha=0.7)
    ax.set_xticks(range(1, len(columns) + 1), list(columns))
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)



def plot_reliability(curves: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
                     path: str | os.PathLike[str], title: str = "",
                     quantity: str = "P(T3)", positive: str = "T3") -> None:
    """A reliability diagram: for each curve (a label and its bins, each with ``low``,
    ``high``, ``cases``, ``mean_p_t3`` and ``t3_share`` as
    :func:`oncoseg.staging.calibration.reliability_table` gives them), the observed share of
    positives against the mean predicted probability per bin (the diagonal is perfect
    calibration), and the cases per bin below. What an ECE alone hides: where a model is over-
    or under-confident, and how few cases some bins hold."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), dpi=100, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    colours = ("tab:red", "tab:blue", "tab:green", "tab:orange")
    for offset, (label, bins) in enumerate(curves):
        filled = [b for b in bins if b["cases"]]
        colour = colours[offset % len(colours)]
        top.plot([b["mean_p_t3"] for b in filled], [b["t3_share"] for b in filled],
                 marker="o", color=colour, label=label)
        width = (filled[0]["high"] - filled[0]["low"]) / len(curves) if filled else 0
        bottom.bar([b["low"] + (offset + 0.5) * width for b in filled],
                   [b["cases"] for b in filled], width=width, color=colour, alpha=0.7)
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel(f"observed share of {positive}")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or "reliability")
    bottom.set_xlabel(f"predicted {quantity}")
    bottom.set_ylabel("cases")
    fig.tight_layout()
    save_figure(fig, path)
