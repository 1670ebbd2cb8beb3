"""Attention heatmaps: the picture of Bahdanau et al. (2015), Figure 3.

Source subwords run along the top, output subwords down the side, and each cell is the weight
α_ij the decoder gave source position j when it produced output i (white 0, black 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nmt.fileio import atomic_write_bytes

CELL_INCHES = 0.3  # per subword, so that labels stay readable
MARGIN_INCHES = 1.6  # room for the labels
DPI = 100


def figure_size(n_src: int, n_out: int) -> tuple[int, int]:
    """Width and height in pixels of the PNG for a source and an output of these lengths."""
    return (
        round((MARGIN_INCHES + CELL_INCHES * n_src) * DPI),
        round((MARGIN_INCHES + CELL_INCHES * n_out) * DPI),
    )


def plot_attention(
    weights: Sequence[Sequence[float]],
    source: Sequence[str],
    output: Sequence[str],
    path: Path,
) -> None:
    """Write the heatmap of `weights` [len(output)][len(source)] as a PNG (atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib.figure import Figure

    width, height = figure_size(len(source), len(output))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes(
        (
            MARGIN_INCHES * DPI / width,
            0.2 * DPI / height,
            CELL_INCHES * len(source) * DPI / width,
            CELL_INCHES * len(output) * DPI / height,
        )
    )
    ax.imshow(weights, cmap="gray_r", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(source)), source, rotation=90, fontsize=8)
    ax.set_yticks(range(len(output)), output, fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())
