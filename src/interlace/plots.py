"""Figures written next to each result: the plan diagram and the healing curve (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from interlace.methods import Plan  # noqa: E402

ROLE_COLOURS = {"dropped": "#d62728", "finetuned": "#2ca02c", "anchor": "#1f77b4", "frozen": "#c7c7c7"}


def layer_roles(plan: Plan) -> list[str]:
    anchors, finetuned, dropped = set(plan.anchors), set(plan.finetuned), set(plan.dropped)
    return [
        "dropped" if i in dropped else "finetuned" if i in finetuned else "anchor" if i in anchors else "frozen"
        for i in range(plan.num_layers)
    ]


def plot_plan(plan: Plan, path: str | Path) -> None:
    """One box per dense decoder layer, coloured by its role; accepted groups bracketed."""
    roles = layer_roles(plan)
    width = max(6.0, 0.32 * plan.num_layers)
    fig, ax = plt.subplots(figsize=(width, 1.9))
    for i, role in enumerate(roles):
        ax.add_patch(plt.Rectangle((i, 0), 0.9, 1, color=ROLE_COLOURS[role]))
        ax.text(i + 0.45, 0.5, str(i), ha="center", va="center", fontsize=7)
    for group in plan.groups:
        size = 3 if group.kind == "triplet" else 2
        ax.plot([group.start, group.start + size - 0.1], [-0.15, -0.15], color="black", lw=1.5)
    ax.set_xlim(-0.2, plan.num_layers + 0.1)
    ax.set_ylim(-0.4, 1.1)
    ax.axis("off")
    ax.set_title(f"{plan.method}: drop {len(plan.dropped)} of {plan.num_layers} layers ({plan.path})", fontsize=9)
    ax.legend(
        handles=[Patch(color=c, label=r) for r, c in ROLE_COLOURS.items()],
        loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4, fontsize=7, frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_line(x: list[float], y: list[float], path: str | Path, xlabel: str, ylabel: str, title: str = "", marker: str = "") -> None:
    """One line plot, saved as PNG."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(x, y, marker or "-", lw=1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curve(losses: list[float], path: str | Path, title: str = "healing loss") -> None:
    plot_line(list(range(1, len(losses) + 1)), losses, path, "optimizer step", "loss (answer tokens)", title)
