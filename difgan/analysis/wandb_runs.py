"""Runs from W&B instead of run folders: ``python -m difgan.compare --wandb entity/project[/group]``.

Each W&B run of the suite carries the resolved run config (``config``), the final metrics in its summary
(``final/<metric>``), the in-training metrics in its history (``val/*`` against ``val/kimg``) and the
resource numbers (``resources/*``). The metric protocol is rebuilt from the config's ``metrics`` section
(feature space, n, reference split), without the feature networks' hashes that metrics.json holds; sample
grids stay on W&B. Needs network access and a logged-in W&B (``wandb login``)."""

from __future__ import annotations

from difgan.analysis.runs import Run


def _protocol(config: dict, final: dict) -> dict:
    m, data = config.get("metrics") or {}, config.get("data") or {}
    sec = m.get("final") or {}
    spaces = [k.split("_", 1)[1] for k in final if k.startswith("fid_")] or [str(sec.get("feature_space")
                                                                                  or m.get("feature_space"))]
    n = sec.get("n")
    return {"feature_spaces": {s: {"weights": "from W&B config"} for s in spaces}, "metric_spaces": spaces,
            "n_generated": n, "n_real": sec.get("n_real") or n,
            "reference": {"dataset": data.get("name"), "split": m.get("reference_split"),
                          "resolution": data.get("resolution")},
            "weights": "ema" if sec.get("use_ema", True) else "raw"}


def load_wandb_runs(path: str, api=None) -> list[Run]:
    """Runs of ``entity/project`` (all) or ``entity/project/group`` (one sweep or experiment)."""
    parts = path.strip("/").split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"--wandb takes entity/project or entity/project/group, got {path!r}")
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {"group": parts[2]} if len(parts) == 3 else None
    runs = []
    for wr in api.runs("/".join(parts[:2]), filters=filters):
        config = {k: v for k, v in dict(wr.config).items() if not k.startswith("_")}
        summary = dict(wr.summary)
        final = {k[len("final/"):]: float(v) for k, v in summary.items()
                 if k.startswith("final/") and isinstance(v, int | float)}
        history = []
        for row in wr.scan_history():
            if row.get("val/kimg") is not None:
                history.append({"kimg": row["val/kimg"], "wall_s": row.get("_runtime"),
                                **{k[4:]: v for k, v in row.items() if k.startswith("val/")
                                   and k not in ("val/kimg", "val/metrics_time_s") and v is not None}})
        resources = {k[len("resources/"):]: float(v) for k, v in summary.items()
                     if k.startswith("resources/") and isinstance(v, int | float)}
        status = "completed" if wr.state == "finished" else wr.state
        runs.append(Run(path=f"wandb:{'/'.join(wr.path)}", config=config, metrics=final,
                        protocol=_protocol(config, final) if final else {}, history=history,
                        resources=resources, status=status))
    return runs
