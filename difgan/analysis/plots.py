"""Comparison plots (matplotlib, PNG): metric curves against images seen and wall clock, precision against
recall, and one sample grid per row of the table side by side."""

from __future__ import annotations

from pathlib import Path

from difgan.analysis.table import Comparison, Row


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def row_label(row: Row) -> str:
    return " ".join(x for x in (row.model, row.settings, f"({row.protocol})" if row.protocol != "-" else "")
                    if x)


def curve_metrics(c: Comparison) -> list[str]:
    keys: list[str] = []
    for row in c.rows:
        for run in row.runs:
            for h in run.history:
                keys += [k for k in h if k not in ("kimg", "wall_s", "epoch", "global_step", "metrics_time_s")
                         and not k.endswith("_std") and k not in keys]
    return keys


def plot_curves(c: Comparison, path: Path) -> Path | None:
    """One row per metric of the in-training evaluations: against kimg (left) and wall clock (right), one
    colour per table row, one line per seed."""
    keys = curve_metrics(c)
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(keys), 2, figsize=(10, 2.8 * len(keys)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(c.rows):
        color = colors[i % len(colors)]
        for j, run in enumerate(row.runs):
            for m, key in enumerate(keys):
                pts = [(h.get("kimg"), h.get("wall_s"), h.get(key)) for h in run.history
                       if h.get(key) is not None]
                if not pts:
                    continue
                label = row_label(row) if j == 0 else None
                axes[m][0].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", ms=3, color=color,
                                label=label, alpha=0.8)
                walls = [(p[1] / 60, p[2]) for p in pts if p[1] is not None]
                if walls:
                    axes[m][1].plot(*zip(*walls), marker="o", ms=3, color=color, alpha=0.8)
    for m, key in enumerate(keys):
        axes[m][0].set_ylabel(key)
        axes[m][0].set_xlabel("kimg (images seen / 1000)")
        axes[m][1].set_xlabel("wall clock (min)")
        for ax in axes[m]:
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_precision_recall(c: Comparison, path: Path) -> Path | None:
    """Final precision against recall, one point per run, one colour per table row, per feature space."""
    spaces = sorted({k[len("precision_"):] for row in c.rows for run in row.runs for k in run.metrics
                     if k.startswith("precision_") and f"recall_{k[len('precision_'):]}" in run.metrics})
    if not spaces:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.5 * len(spaces), 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for s, space in enumerate(spaces):
        ax = axes[0][s]
        for i, row in enumerate(c.rows):
            pts = [(r.metrics[f"recall_{space}"], r.metrics[f"precision_{space}"]) for r in row.runs
                   if f"precision_{space}" in r.metrics]
            if pts:
                ax.scatter(*zip(*pts), color=colors[i % len(colors)], label=row_label(row))
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"recall ({space})")
        ax.set_ylabel(f"precision ({space})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_samples(c: Comparison, path: Path) -> Path | None:
    """The final sample grid of the first seed of each table row, side by side."""
    import matplotlib.image as mpimg

    shown = [(row, run.sample_grid) for row in c.rows
             for run in sorted(row.runs, key=lambda r: str(r.seed))[:1] if run.sample_grid]
    if not shown:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.6), squeeze=False)
    for ax, (row, grid) in zip(axes[0], shown):
        ax.imshow(mpimg.imread(grid), cmap="gray")
        ax.set_title(row_label(row), fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
