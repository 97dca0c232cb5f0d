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
