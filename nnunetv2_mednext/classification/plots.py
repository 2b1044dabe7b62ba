"""PNG figures with matplotlib's Agg canvas (no global backend switch, safe in headless runs)."""

from __future__ import annotations

import os
from collections.abc import Sequence


def new_figure(w: float, h: float):
    """A matplotlib figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike,
                          title: str = "") -> None:
    import numpy as np

    cm = np.asarray(matrix)
    k = len(labels)
    fig = new_figure(1.6 + 0.9 * k, 1.2 + 0.8 * k)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{100 * frac[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), labels, rotation=30, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def plot_training_curve(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Loss (train, val) and validation accuracy / balanced accuracy per epoch, learning rate on a twin axis."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(9, 3.4)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ep = [h["epoch"] for h in history]
    ax1.plot(ep, [h["train_loss"] for h in history], label="train loss")
    val = [(h["epoch"], h) for h in history if h.get("val_loss") is not None]
    if val:
        ax1.plot([e for e, _ in val], [h["val_loss"] for _, h in val], label="val loss")
        ax2.plot([e for e, _ in val], [h["val_accuracy"] for _, h in val], label="val accuracy")
        ax2.plot([e for e, _ in val], [h["val_balanced_accuracy"] for _, h in val], label="val balanced acc.")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=8)
    lr = ax1.twinx()
    lr.plot(ep, [h["lr"] for h in history], color="tab:grey", lw=1.2, ls="--", label="learning rate")
    lr.set_ylabel("learning rate", color="grey", fontsize=8)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
