"""Runs -> the comparison table: one row per (model, data, settings, metric protocol), mean +- std over seeds.

Runs whose metrics were measured differently (feature network, n generated, n real, reference split,
weights) never share a row: each row names its protocol (P1, P2, ...), the legend under the table spells
each one out, and the table says so when a column mixes protocols.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from difgan.analysis.runs import Run, flatten, is_setting

#: Metric families in table order; each appears once per feature space found (fid_domain, fid_inception...).
METRIC_ORDER = ("fid", "kid", "is", "precision", "recall", "class_accuracy")


def protocol_key(run: Run) -> tuple:
    """What must be equal for two runs' final metrics to be comparable."""
    p = run.protocol
    if not p:
        return ()
    ref = p.get("reference", {})
    spaces = tuple(
        (name, str(space.get("weights_sha256") or space.get("weights") or space.get("network", ""))[:12])
        for name, space in sorted(p.get("feature_spaces", {}).items()))
    return (spaces, p.get("n_generated"), p.get("n_real"), ref.get("dataset"), ref.get("split"),
            ref.get("resolution"), p.get("weights"))


def describe_protocol(run: Run) -> str:
    p = run.protocol
    if not p:
        return "no final metrics"
    ref = p.get("reference", {})
    spaces = ", ".join(f"{name} [{str(s.get('weights_sha256') or s.get('weights') or '')[:8]}]"
                       for name, s in sorted(p.get("feature_spaces", {}).items()))
    return (f"features {spaces}; n_generated={p.get('n_generated')}, n_real={p.get('n_real')}, reference "
            f"{ref.get('dataset')}/{ref.get('split')} at {ref.get('resolution')} px; "
            f"{p.get('weights')} weights")


def settings_label(runs: list[Run], run: Run) -> str:
    """The settings that tell this run apart from the others of its model and data (seed aside), e.g.
    ``lr=0.0002``; empty when all share them."""
    same = [r for r in runs if r.model == run.model and r.data == run.data]
    flat = [{k: v for k, v in flatten(r.config).items() if is_setting(k)} for r in same]
    keys = sorted({k for f in flat for k in f})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    mine = {k: v for k, v in flatten(run.config).items() if is_setting(k)}
    return " ".join(f"{k.split('.', 1)[-1] if k.startswith('model.') else k}={mine.get(k)}" for k in varying)


def sampling_nfe(run: Run) -> float | None:
    """Network evaluations per sample of the final metrics' sampler: its ``nfe`` if it states one, else its
    sampling steps (twice with classifier-free guidance), else 1 (a one-step generator)."""
    model = run.protocol.get("sampler", {}).get("model") if run.protocol else None
    if model is None:
        return None
    if "nfe" in model:
        return float(model["nfe"])
    steps = model.get("sampling_steps") if model.get("sampler") != "ddpm" else model.get("timesteps")
    if steps is None:
        return 1.0
    guided = (model.get("guidance_scale") or 1.0) != 1.0 and run.protocol.get("conditional")
    return float(steps) * (2 if guided else 1)


def sampling_images_per_s(run: Run) -> float | None:
    t = (run.protocol or {}).get("time_s", {}).get("generate")
    n = (run.protocol or {}).get("n_generated")
    return n / t if t and n else None


def parameter_count(run: Run) -> float | None:
    params = run.meta.get("parameters") or {}
    if "trainable" in params:
        return float(params["trainable"])
    return None


@dataclass
class Row:
    model: str
    data: str
    settings: str
    protocol: str                    # P1, P2, ... (legend in the table)
    runs: list[Run] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def stat(self, key: str) -> tuple[float, float] | None:
        xs = [x for x in self.values.get(key, []) if x is not None and math.isfinite(x)]
        if not xs:
            return None
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


@dataclass
class Comparison:
    rows: list[Row]
    columns: list[str]               # metric and resource keys shown, in order
    protocols: dict[str, str]        # P1 -> description
    mixed: list[str]                 # columns that hold more than one protocol
    not_completed: list[Run]


def metric_columns(runs: list[Run]) -> list[str]:
    keys = {k for r in runs for k in r.metrics if not k.endswith("_std")}

    def order(k: str) -> tuple:
        fam = next((i for i, f in enumerate(METRIC_ORDER) if k == f or k.startswith(f + "_")),
                   len(METRIC_ORDER))
        return fam, k

    return sorted(keys, key=order)


RESOURCE_COLUMNS = ("parameters", "kimg", "wall_clock_min", "peak_memory_mb", "sampling_nfe",
                    "sampling_images_per_s")


def build(runs: list[Run]) -> Comparison:
    completed = [r for r in runs if r.status == "completed" or (r.status == "no metrics" and r.resources)]
    keys: dict[tuple, str] = {}
    descriptions: dict[str, str] = {}
    rows: dict[tuple, Row] = {}
    for run in completed:
        pk = protocol_key(run)
        if pk not in keys:
            keys[pk] = f"P{len(keys) + 1}" if pk else "-"
            descriptions[keys[pk]] = describe_protocol(run)
        label = settings_label(completed, run)
        gk = (run.model, run.data, label, keys[pk])
        row = rows.setdefault(gk, Row(run.model, run.data, label, keys[pk]))
        row.runs.append(run)
        for k, v in run.metrics.items():
            row.values.setdefault(k, []).append(v)
        res = run.resources
        extra = {"parameters": parameter_count(run),
                 "kimg": (res.get("images_seen") / 1000 if "images_seen" in res else res.get("kimg_logged")),
                 "wall_clock_min": res["wall_clock_s"] / 60 if "wall_clock_s" in res else None,
                 "peak_memory_mb": res.get("cuda_peak_mb", res.get("peak_rss_mb")),
                 "sampling_nfe": sampling_nfe(run), "sampling_images_per_s": sampling_images_per_s(run)}
        for k, v in extra.items():
            row.values.setdefault(k, []).append(v)
    columns = metric_columns(completed)
    ordered = sorted(rows.values(), key=lambda r: (r.protocol, r.data, r.model, r.settings))
    mixed = [c for c in columns if len({r.protocol for r in ordered if r.stat(c) is not None}) > 1]
    return Comparison(ordered, columns + [c for c in RESOURCE_COLUMNS
                                          if any(r.stat(c) is not None for r in ordered)],
                      {k: v for k, v in descriptions.items() if k != "-"}, mixed,
                      [r for r in runs if r not in completed])


def _fmt(value: float, key: str) -> str:
    if key == "parameters":
        return f"{value / 1e6:.2f}M"
    a = abs(value)
    if key.startswith("kid"):
        return f"{value:.4g}"
    return f"{value:.0f}" if a >= 1000 else f"{value:.3g}" if a < 1 else f"{value:.2f}"


#: Columns that describe the setup rather than a measurement: their mean alone (the std is shown only when
#: the runs of a row disagree, e.g. a budget that was extended for one seed).
SETUP_COLUMNS = ("parameters", "kimg", "sampling_nfe")


def cell(row: Row, key: str) -> str:
    s = row.stat(key)
    if s is None:
        return ""
    mean, std = s
    n = len([x for x in row.values.get(key, []) if x is not None])
    show_std = n > 1 and (key not in SETUP_COLUMNS or std > 0)
    return _fmt(mean, key) + (f" ± {_fmt(std, key)}" if show_std else "")


def seeds(row: Row) -> str:
    return ",".join(str(r.seed) for r in sorted(row.runs, key=lambda r: str(r.seed)))


def to_markdown(c: Comparison) -> str:
    head = ["model", "data", "settings", "seeds", "n", "protocol", *c.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in c.rows:
        cells = [row.model, row.data, row.settings or "-", seeds(row), str(len(row.runs)), row.protocol,
                 *(cell(row, k) for k in c.columns)]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["Mean ± std over seeds (n runs per row).", "", *lines, ""]
    if c.protocols:
        out.append("Metric protocols (numbers are comparable only within one protocol):")
        out += [f"- {k}: {v}" for k, v in c.protocols.items()]
    if any(r.protocol == "-" for r in c.rows):
        out.append("- protocol `-`: no metrics.json (final metrics disabled, or the run is still going)")
    if c.mixed:
        out.append(f"\n**Warning:** column(s) {', '.join(c.mixed)} hold numbers from different protocols; "
                   "compare rows only within the same protocol.")
    if c.not_completed:
        out.append("\nRuns left out (did not complete):")
        out += [f"- {r.model} {r.data} seed {r.seed}: {r.status}" + (f": {r.error}" if r.error else "")
                + f" ({r.path})" for r in c.not_completed]
    return "\n".join(out) + "\n"


def write_csv(c: Comparison, path: Path) -> Path:
    """One line per row: mean and std of every column in separate fields, and the protocol spelled out."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "data", "settings", "seeds", "n_runs", "protocol", "protocol_description",
                    *[x for k in c.columns for x in (k, f"{k}_std")]])
        for row in c.rows:
            vals = []
            for k in c.columns:
                s = row.stat(k)
                vals += [s[0], s[1]] if s else ["", ""]
            w.writerow([row.model, row.data, row.settings, seeds(row), len(row.runs), row.protocol,
                        c.protocols.get(row.protocol, ""), *vals])
    return path


def write_runs_csv(runs: list[Run], path: Path) -> Path:
    """Every run on its own line (status, seed, final metrics, resources), for anyone's own analysis."""
    metric_keys = sorted({k for r in runs for k in r.metrics})
    res_keys = sorted({k for r in runs for k in r.resources})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "model", "data", "seed", "status", "error", "protocol", *metric_keys,
                    *(f"resources/{k}" for k in res_keys)])
        for r in runs:
            w.writerow([r.path, r.model, r.data, r.seed, r.status, r.error or "", describe_protocol(r),
                        *(r.metrics.get(k, "") for k in metric_keys),
                        *(r.resources.get(k, "") for k in res_keys)])
    return path
