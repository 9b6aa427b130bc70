"""Turning run folders (or W&B runs) into comparison tables and plots: ``python -m difgan.compare``.

``runs`` reads run folders, ``table`` groups them (model, data, settings, metric protocol) with mean +- std
over seeds, ``plots`` draws them, ``wandb_runs`` reads the same from W&B's public API. ``compare`` does all
of it into one folder (the notebook notebooks/compare.ipynb calls the same functions)."""

from difgan.analysis.report import compare
from difgan.analysis.runs import Run, load_run, load_runs
from difgan.analysis.table import build

__all__ = ["Run", "build", "compare", "load_run", "load_runs"]
