"""The pieces of a study without training: reading run folders into the comparison table (mean and std over
seeds, one protocol per row, settings told apart), the sweep summary, SLURM requeue ownership and the
launcher checks."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from difgan.analysis import build, compare, load_runs
from difgan.analysis.table import to_markdown
from difgan.errors import ConfigError


def protocol(n: int = 100, space_sha: str = "abc123", split: str = "train") -> dict:
    return {"feature_spaces": {"domain": {"weights_sha256": space_sha}}, "metric_spaces": ["domain"],
            "n_generated": n, "n_real": n, "weights": "ema",
            "reference": {"dataset": "mnist_offline", "split": split, "resolution": 32},
            "sampler": {"model": {}}, "time_s": {"generate": 2.0}}


def write_run(folder: Path, model: str, seed: int, fid: float | None, lr: float = 2e-4, proto=None,
              job: dict | None = None, wall: float = 60.0) -> Path:
    folder.mkdir(parents=True)
    cfg = {"seed": seed, "name": f"{model}_x", "paths": {"runs_dir": str(folder.parent)},
           "model": {"name": model, "lr": lr}, "data": {"name": "mnist_offline", "resolution": 32}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "run.json").write_text(json.dumps({"seed": seed, "parameters": {"trainable": 2_000_000}}))
    if fid is not None:
        (folder / "metrics.json").write_text(json.dumps(
            {"metrics": {"fid_domain": fid, "precision_domain": 0.5, "recall_domain": 0.4},
             "protocol": proto or protocol()}))
    (folder / "logs").mkdir()
    (folder / "logs" / "metrics.csv").write_text(
        "step,resources/images_seen,resources/wall_clock_s,resources/peak_rss_mb,val/fid_domain,val/kimg\n"
        f"5,,,,{(fid or 0) + 10},0.5\n9,1000,{wall},512,,\n")
    if job is not None:
        (folder / "job.json").write_text(json.dumps(job))
    return folder


def test_mean_and_std_over_seeds_and_one_row_per_setting(tmp_path):
    for seed, fid in enumerate([10.0, 14.0, 15.0]):
        write_run(tmp_path / f"a{seed}", "dcgan", seed, fid)
    write_run(tmp_path / "b0", "dcgan", 0, 30.0, lr=1e-3)
    write_run(tmp_path / "c0", "ddpm", 0, 5.0)
    c = build(load_runs([str(tmp_path)]))
    rows = {(r.model, r.settings): r for r in c.rows}
    assert set(rows) == {("dcgan", "lr=0.0002"), ("dcgan", "lr=0.001"), ("ddpm", "")}
    mean, std = rows["dcgan", "lr=0.0002"].stat("fid_domain")
    assert mean == pytest.approx(13.0) and std == pytest.approx(statistics.stdev([10, 14, 15]))
    assert rows["ddpm", ""].stat("fid_domain") == (5.0, 0.0)
    assert rows["ddpm", ""].stat("wall_clock_min") == (1.0, 0.0)
    assert rows["ddpm", ""].stat("kimg") == (1.0, 0.0) and rows["ddpm", ""].stat("peak_memory_mb")[0] == 512
    assert rows["ddpm", ""].stat("sampling_images_per_s") == (50.0, 0.0)     # n_generated / generate time
    assert not c.mixed and list(c.protocols) == ["P1"]
    assert "13.00 ± 2.65" in to_markdown(c)


def test_different_metric_protocols_never_share_a_row_and_the_table_says_so(tmp_path):
    write_run(tmp_path / "r0", "dcgan", 0, 10.0, proto=protocol(n=100))
    write_run(tmp_path / "r1", "dcgan", 1, 12.0, proto=protocol(n=2000))
    write_run(tmp_path / "r2", "dcgan", 2, 11.0, proto=protocol(n=100, space_sha="other"))
    write_run(tmp_path / "r3", "dcgan", 3, 11.0, proto=protocol(n=100, split="test"))
    c = build(load_runs([str(tmp_path / "r*")]))                             # a glob
    assert len(c.rows) == 4 and len(c.protocols) == 4
    assert c.mixed == ["fid_domain", "precision_domain", "recall_domain"]
    md = to_markdown(c)
    assert "n_generated=2000" in md and "different protocols" in md


def test_failed_and_killed_jobs_are_listed_not_averaged(tmp_path):
    write_run(tmp_path / "0_ok", "dcgan", 0, 10.0, job={"num": 0, "status": "completed"})
    write_run(tmp_path / "1_bad", "dcgan", 1, None, job={"num": 1, "status": "failed", "error": "boom"})
    write_run(tmp_path / "2_killed", "dcgan", 2, None, job={"num": 2, "status": "running"})
    c, files = compare(load_runs([str(tmp_path)]), tmp_path / "out")
    assert len(c.rows) == 1 and len(c.rows[0].runs) == 1
    assert sorted(r.status for r in c.not_completed) == ["failed", "incomplete"]
    table = files["table.md"].read_text()
    assert "failed: boom" in table and "incomplete" in table
    assert {"table.csv", "runs.csv", "curves.png", "precision_recall.png"} <= set(files)


def test_sweep_summary_marks_jobs_that_never_ended(tmp_path):
    from difgan.sweep import summarize

    for num, status in enumerate(["completed", "failed", "running"]):
        (tmp_path / str(num)).mkdir()
        (tmp_path / str(num) / "job.json").write_text(json.dumps({"num": num, "status": status}))
    assert summarize(tmp_path)["counts"] == {"completed": 1, "failed": 1, "running": 1}
    final = summarize(tmp_path, final=True)
    assert final["counts"] == {"completed": 1, "failed": 1, "incomplete": 1}
    assert [j["num"] for j in final["jobs"]] == [0, 1, 2]


def test_submitit_owns_requeueing_on_slurm(monkeypatch):
    from omegaconf import OmegaConf

    from difgan.cluster import cluster_plugins

    trainer = OmegaConf.create({"accelerator": "cpu"})
    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    assert cluster_plugins(trainer) == []
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "difgan")
    (env,) = cluster_plugins(trainer)
    assert env.auto_requeue is False                                          # Lightning's requeue is off


def test_the_trainer_layout_must_match_the_slurm_allocation(monkeypatch):
    from omegaconf import OmegaConf

    from difgan.cluster import check_slurm_layout

    for key, value in {"SLURM_NTASKS": "8", "SLURM_JOB_NAME": "difgan", "SLURM_NNODES": "2",
                       "SLURM_NTASKS_PER_NODE": "4"}.items():
        monkeypatch.setenv(key, value)
    check_slurm_layout(OmegaConf.create({"devices": 4, "num_nodes": 2}))
    with pytest.raises(ConfigError, match="trainer.num_nodes=2"):
        check_slurm_layout(OmegaConf.create({"devices": 4, "num_nodes": 1}))
    with pytest.raises(ConfigError, match="trainer.devices"):
        check_slurm_layout(OmegaConf.create({"devices": 1, "num_nodes": 2}))


def test_local_parallel_sweeps_refuse_ddp(compose_run):
    from difgan.config import validate_run_config

    cfg = compose_run(["trainer=ddp_spawn"])
    with pytest.raises(ConfigError, match="joblib"):
        validate_run_config(cfg, ("train",), multirun=True,
                            launcher="hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")
    validate_run_config(cfg, ("train",), multirun=True,
                        launcher="hydra._internal.core_plugins.basic_launcher.BasicLauncher")


@pytest.mark.parametrize("launcher", ["slurm", "slurm_local", "local_parallel"])
def test_launcher_configs_compose(compose_run, launcher):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher" if "slurm" in launcher
                        else "hydra_plugins.hydra_joblib_launcher", reason="launcher plugins: the dev extra")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from difgan.confdir import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    node = cfg.hydra.launcher
    if launcher == "slurm":
        for key in ("partition", "account", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task",
                    "mem_gb", "timeout_min", "constraint", "additional_parameters", "setup",
                    "max_num_timeout"):
            assert key in node, key
    assert "sweeps" in str(cfg.hydra.sweep.dir)
    assert "SweepSummary" in cfg.hydra.callbacks.sweep_summary._target_


def test_hparams_search_configs_compose(compose_run):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper",
                        reason="the Optuna sweeper is an optional extra: pip install -e '.[optuna]'")
    from difgan.confdir import CONF_DIR

    for path in sorted((CONF_DIR / "hparams_search").glob("*.yaml")):
        cfg = compose_run([f"hparams_search={path.stem}", "experiment=digits_budget"])
        assert cfg.optimized_metric and cfg.model._target_


def test_runs_from_the_wandb_api_become_the_same_table():
    from types import SimpleNamespace

    from difgan.analysis.wandb_runs import load_wandb_runs

    def fake_run(seed, fid):
        config = {"seed": seed, "model": {"name": "ddpm"},
                  "data": {"name": "mnist_offline", "resolution": 32},
                  "metrics": {"reference_split": "train", "final": {"n": 2000}}, "_wandb": {}}
        history = [{"val/kimg": 1.0, "val/fid_domain": fid + 5, "_runtime": 30.0}, {"train/loss": 0.1}]
        summary = {"final/fid_domain": fid, "resources/wall_clock_s": 120}
        return SimpleNamespace(config=config, summary=summary, scan_history=lambda: history,
                               state="finished", path=["me", "difgan", str(seed)])

    calls = []

    class Api:
        def runs(self, path, filters=None):
            calls.append((path, filters))
            return [fake_run(0, 10.0), fake_run(1, 20.0)]

    runs = load_wandb_runs("me/difgan/digits_sweep", api=Api())
    assert calls == [("me/difgan", {"group": "digits_sweep"})]
    (row,) = build(runs).rows
    assert row.stat("fid_domain")[0] == 15.0 and row.stat("wall_clock_min") == (2.0, 0.0)
    assert runs[0].history == [{"kimg": 1.0, "wall_s": 30.0, "fid_domain": 15.0}]
    with pytest.raises(ValueError, match="entity/project"):
        load_wandb_runs("just-a-project", api=Api())
