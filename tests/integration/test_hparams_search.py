"""``hparams_search=<name>``: an Optuna search (the optional extra ``.[optuna]``, part of ``.[dev]``) whose
objective is a final metric of each trial's run; here two trials of a tiny DCGAN on the offline digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.runner import hydra_main

SWEEP_CONF = Path(__file__).parent / "sweep_conf"


def test_a_two_trial_optuna_search_minimises_the_final_fid(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper",
                        reason="the Optuna sweeper is an optional extra: pip install -e '.[optuna]'")
    sweep_dir = tmp_path / "search"
    result = hydra_main("hparams_search=dcgan_digits", "experiment=sweep_test", "model=tiny_dcgan",
                        "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                        f"hydra.searchpath=[file://{SWEEP_CONF}]", f"hydra.sweep.dir={sweep_dir}",
                        f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = json.loads((sweep_dir / "sweep_summary.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    fids, lrs = [], []
    for job in jobs:
        run_dir = Path(job["run_dir"])
        fids.append(json.loads((run_dir / "metrics.json").read_text())["metrics"]["fid_domain"])
        lrs.append(yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["lr"])
    assert lrs[0] != lrs[1] and all(5e-5 <= lr <= 1e-3 for lr in lrs)   # the search space was sampled
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(fids))                 # the objective: final FID
