"""Reading runs: a run folder (config.yaml, run.json, metrics.json, metrics_history.json, logs/metrics.csv,
samples/, job.json) becomes one ``Run``; sweep folders and globs expand to the run folders under them."""

from __future__ import annotations

import csv
import glob
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Config keys that never make two runs different settings (besides the seed, which is what we average).
NOT_SETTINGS = ("seed", "name", "tags", "study", "paths", "logger", "ckpt_path", "resume", "optimized_metric",
                "task", "callbacks", "metrics", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                "trainer.log_every_n_steps", "data.num_workers", "data.root", "data.download",
                "data.pin_memory", "data.persistent_workers", "hydra")


@dataclass
class Run:
    """One training run as the comparison sees it. ``metrics`` are the final ones (metrics.json), ``protocol``
    how they were measured; ``history`` the in-training evaluations (kimg, wall_s, metric values);
    ``resources`` the last wall clock / images seen / memory numbers logged."""

    path: str
    config: dict
    metrics: dict[str, float] = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    status: str = "completed"
    error: str | None = None
    sample_grid: str | None = None

    @property
    def model(self) -> str:
        return str(self.config.get("model", {}).get("name", "?"))

    @property
    def data(self) -> str:
        d = self.config.get("data", {})
        res = d.get("resolution")
        return f"{d.get('name', '?')}" + (f"@{res}px" if res else "")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(node, list):
        return {prefix[:-1]: json.dumps(node)}
    return {prefix[:-1]: node}


def is_setting(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_csv_log(path: Path) -> list[dict[str, float]]:
    """logs/metrics.csv as rows of numbers (empty cells left out)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: v for k, v in ((k, _number(x)) for k, x in row.items() if k) if v is not None}
                for row in csv.DictReader(f)]


def history_from_csv(rows: list[dict[str, float]]) -> list[dict]:
    """In-training evaluations from the CSV log (when metrics_history.json is missing): the ``val/*`` rows,
    with the wall clock of the nearest resources row at or before the same step."""
    out, wall = [], None
    for row in rows:
        if "resources/wall_clock_s" in row:
            wall = row["resources/wall_clock_s"]
        if "val/kimg" in row:
            entry = {"kimg": row["val/kimg"], "wall_s": wall}
            entry.update({k[4:]: v for k, v in row.items()
                          if k.startswith("val/") and k not in ("val/kimg", "val/metrics_time_s")})
            out.append(entry)
    return out


def load_run(folder: str | Path) -> Run:
    """The run in ``folder`` (which holds config.yaml). A run without metrics.json is kept, with its status
    from job.json (failed, incomplete) or ``no metrics``."""
    folder = Path(folder)
    # A job that failed before training has only Hydra's copy of its (unresolved) config.
    cfg_file = folder / "config.yaml"
    if not cfg_file.is_file():
        cfg_file = folder / ".hydra" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else {}
    config = config or {}
    run = Run(path=str(folder), config=config, meta=_read_json(folder / "run.json") or {})
    result = _read_json(folder / "metrics.json")
    if result:
        run.metrics = {k: float(v) for k, v in result.get("metrics", {}).items()
                       if isinstance(v, int | float)}
        run.protocol = result.get("protocol", {})
    rows = read_csv_log(folder / "logs" / "metrics.csv")
    hist = _read_json(folder / "metrics_history.json")
    run.history = hist["history"] if hist and hist.get("history") else history_from_csv(rows)
    for row in rows:
        for k, v in row.items():
            if k.startswith("resources/"):
                run.resources[k[len("resources/"):]] = v
            elif k == "train/kimg":
                run.resources.setdefault("kimg_logged", v)
                run.resources["kimg_logged"] = max(run.resources["kimg_logged"], v)
    job = _read_json(folder / "job.json")
    if job:
        run.status = "incomplete" if job.get("status") == "running" else job.get("status", "completed")
        run.error = job.get("error")
    elif not result:
        run.status = "no metrics"
    for name in ("final.png", "latest.png"):
        if (folder / "samples" / name).is_file():
            run.sample_grid = str(folder / "samples" / name)
            break
    return run


def _is_run_folder(path: Path) -> bool:
    """A run's folder: its resolved config and run.json, or a sweep job's job.json (failed jobs too)."""
    resolved = (path / "config.yaml").is_file() and (path / "run.json").is_file()
    return resolved or (path / "job.json").is_file()


def find_run_folders(targets: list[str]) -> list[Path]:
    """Run folders named by ``targets``: run folders, folders holding runs at any depth (a sweep, a runs
    directory), or glob patterns of either. Each folder once, in a stable order."""
    found: dict[str, Path] = {}
    for target in targets:
        matches = sorted(glob.glob(target)) if any(c in target for c in "*?[") else [target]
        if not matches:
            raise FileNotFoundError(f"no run folder matches {target!r}")
        for m in matches:
            p = Path(m)
            if not p.is_dir():
                raise FileNotFoundError(f"{m} is not a folder")
            if _is_run_folder(p):
                found.setdefault(str(p.resolve()), p)
                continue
            for marker in sorted([*p.rglob("run.json"), *p.rglob("job.json")]):
                if _is_run_folder(marker.parent):
                    found.setdefault(str(marker.parent.resolve()), marker.parent)
    return sorted(found.values(), key=lambda q: str(q))


def load_runs(targets: list[str]) -> list[Run]:
    folders = find_run_folders(targets)
    if not folders:
        raise FileNotFoundError(f"no run folders (config.yaml + run.json) under {', '.join(targets)}")
    return [load_run(f) for f in folders]
