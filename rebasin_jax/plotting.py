"""Figures. The only module that imports matplotlib.

Every figure is drawn by one function, :func:`plot`, from :class:`Panel` and
:class:`Line` data; the ``*_panels`` builders turn results (``results.json``
curves, training histories, barrier tables) into panels without touching
matplotlib, so no experiment carries its own plotting code.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files
import matplotlib.pyplot as plt  # noqa: E402

__all__ = [
    "Line",
    "Panel",
    "plot",
    "interpolation_panel",
    "summary_panels",
    "history_panels",
    "TRAIN_COLOR",
    "TEST_COLOR",
]

TRAIN_COLOR = "tab:blue"
TEST_COLOR = "tab:orange"


@dataclasses.dataclass(frozen=True)
class Line:
    """One series: ``y`` against ``x``; ``style`` is a matplotlib line style
    (``""`` for markers only, i.e. a scatter)."""

    x: Sequence[float]
    y: Sequence[float]
    label: str | None = None
    color: str | None = None
    style: str = "-"
    marker: str | None = None


@dataclasses.dataclass(frozen=True)
class Panel:
    """One set of axes."""

    lines: Sequence[Line]
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    xlog: bool = False
    ylog: bool = False
    xticks: tuple | None = None  # (positions, labels)
    ylim: tuple | None = None


def plot(path: str | os.PathLike, panels: Sequence[Panel], *, title: str | None = None, ncols: int | None = None) -> Path:
    """Draws ``panels`` side by side into a PNG at ``path`` and returns the path."""
    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for line in panel.lines:
            ax.plot(line.x, line.y, linestyle=line.style or "none", marker=line.marker, color=line.color,
                    label=line.label, markersize=4)
        if panel.xlog:
            ax.set_xscale("log")
        if panel.ylog:
            ax.set_yscale("log")
        if panel.xticks is not None:
            ax.set_xticks(panel.xticks[0], panel.xticks[1])
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if any(line.label for line in panel.lines):
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_AB_TICKS = ([0.0, 1.0], ["Model A", "Model B"])


def interpolation_panel(curves: Mapping, lambdas: Sequence[float], key: str, metric: str, title: str) -> Panel:
    """Naive (dashed) and permuted (solid) interpolation, train and test.

    Args:
        curves: ``results["curves"]``.
        key: the permuted curve, e.g. ``"weight/all"``.
        metric: ``"loss"`` or ``"acc"``.
    """
    lines = []
    for split, color in (("train", TRAIN_COLOR), ("test", TEST_COLOR)):
        lines.append(Line(lambdas, curves["naive"][f"{split}_{metric}"], f"{split.capitalize()}, naive", color, "--"))
        lines.append(Line(lambdas, curves[key][f"{split}_{metric}"], f"{split.capitalize()}, permuted", color, "-"))
    ylabel = "Loss" if metric == "loss" else "Accuracy"
    return Panel(lines, title, "λ", ylabel, xticks=_AB_TICKS)


def summary_panels(curves: Mapping, lambdas: Sequence[float], split: str = "test") -> list[Panel]:
    """Loss and accuracy along the path for naive and every method/variant (one split)."""
    cmap = plt.get_cmap("tab10")
    panels = []
    for metric, ylabel in (("loss", "Loss"), ("acc", "Accuracy")):
        lines = []
        for i, (name, curve) in enumerate(curves.items()):
            style = "--" if name == "naive" else "-"
            color = "black" if name == "naive" else cmap(i % 10)
            lines.append(Line(lambdas, curve[f"{split}_{metric}"], name, color, style))
        panels.append(Panel(lines, f"{split.capitalize()} {ylabel.lower()} along the path", "λ", ylabel, xticks=_AB_TICKS))
    return panels


def history_panels(histories: Mapping[str, Sequence[Mapping]], xlabel: str = "step", xlog: bool = True) -> list[Panel]:
    """Accuracy and loss (train solid, test dashed) against training step, one colour per model."""
    cmap = plt.get_cmap("tab10")
    panels = []
    for metric, ylabel, ylog in (("acc", "Accuracy", False), ("loss", "Loss", True)):
        lines = []
        for i, (name, hist) in enumerate(histories.items()):
            x = [h["step"] for h in hist]
            lines.append(Line(x, [h[f"train_{metric}"] for h in hist], f"{name} train", cmap(i), "-"))
            lines.append(Line(x, [h[f"test_{metric}"] for h in hist], f"{name} test", cmap(i), "--"))
        panels.append(Panel(lines, ylabel, xlabel, ylabel, xlog=xlog, ylog=ylog))
    return panels
