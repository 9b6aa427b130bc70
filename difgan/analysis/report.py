"""Everything ``python -m difgan.compare`` writes, into one folder."""

from __future__ import annotations

from pathlib import Path

from difgan.analysis import plots
from difgan.analysis.runs import Run
from difgan.analysis.table import Comparison, build, to_markdown, write_csv, write_runs_csv


def compare(runs: list[Run], out_dir: str | Path) -> tuple[Comparison, dict[str, Path]]:
    """table.md, table.csv, runs.csv and the plots (curves.png, precision_recall.png, samples.png, each when
    the runs have what it shows) in ``out_dir``; returns the comparison and the written files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = build(runs)
    files: dict[str, Path] = {}
    md = to_markdown(c)
    pngs = {"curves": plots.plot_curves(c, out / "curves.png"),
            "precision_recall": plots.plot_precision_recall(c, out / "precision_recall.png"),
            "samples": plots.plot_samples(c, out / "samples.png")}
    shown = [f"![{k}]({p.name})" for k, p in pngs.items() if p is not None]
    (out / "table.md").write_text(md + ("\n" + "\n\n".join(shown) + "\n" if shown else ""))
    files["table.md"] = out / "table.md"
    files["table.csv"] = write_csv(c, out / "table.csv")
    files["runs.csv"] = write_runs_csv(runs, out / "runs.csv")
    files.update({f"{k}.png": p for k, p in pngs.items() if p is not None})
    return c, files
