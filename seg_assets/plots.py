"""Small matplotlib plots embedded in asset metadata (Dagster has no image type: PNG in markdown).

Figures are made with ``matplotlib.figure.Figure``, not pyplot (no global state, no GUI backend, safe in
any thread), and matplotlib is imported on first use: loading the code location does not pay for it.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def _figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _to_markdown(fig, title: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return f"**{title}**\n\n![{title}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def k_selection_plot(ks, silhouettes, davies_bouldin=None, chosen=None) -> str:
    fig, ax = _figure((5, 3))
    ax.plot(ks, silhouettes, marker="o", label="silhouette (higher is better)")
    if davies_bouldin is not None:
        ax.plot(ks, davies_bouldin, marker="s", label="Davies-Bouldin (lower is better)")
    if chosen is not None:
        ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen k={chosen}")
    ax.set_xlabel("k")
    ax.legend(fontsize=7)
    return _to_markdown(fig, "k selection")


def projection_plot(points: np.ndarray, labels, names: dict) -> str:
    """Users in 2-D (e.g. PCA of the model space), coloured by segment."""
    fig, ax = _figure((5, 4))
    labels = np.asarray(labels)
    for seg in sorted(set(labels.tolist())):
        mask = labels == seg
        ax.scatter(points[mask, 0], points[mask, 1], s=3, alpha=0.5, label=f"{seg}: {names.get(seg, seg)}")
    ax.legend(fontsize=6, markerscale=3)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    return _to_markdown(fig, "Users by segment (2-D projection)")
