"""From one run to a study: a two-model x two-seed sweep on the offline digits through submitit's local
executor (the real submitit path: pickled jobs, one process each, submitit's requeue on USR2). One job is
preempted mid-run and requeued, and resumes from its run folder's last.ckpt; one job fails mid-run and the
others finish; the sweep summary lists all four. W&B runs offline in every job and its run files are read
back; ``difgan.compare`` turns the sweep folder into a table and plots; notebooks/compare.ipynb executes
on it.

The sweep runs in the background while this module's other tests run (tests/integration/runner.py)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from tests.integration.runner import REPO, cli_env, entry, finish, running
from tests.integration.wandb_files import summary as wandb_summary

SWEEP_CONF = Path(__file__).parent / "sweep_conf"
JOBS = {"dcgan-0": "completed", "dcgan-1": "completed", "ddpm-0": "completed", "ddpm-1": "failed"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp / "sweep"
    args = ["-m", "experiment=sweep_test", "model=tiny_dcgan,tiny_ddpm", "seed=0,1",
            "hydra/launcher=slurm_local", f"hydra.searchpath=[file://{SWEEP_CONF}]",
            f"hydra.sweep.dir={sweep_dir}", f"paths.runs_dir={tmp / 'runs'}",
            f"paths.cache_dir={tmp / 'cache'}"]
    env = cli_env(WANDB_MODE="offline", HOME=str(tmp))   # offline W&B files, no ~/.netrc: never a prompt
    with running(*args, cwd=tmp, env=env) as proc:
        yield sweep_dir, proc


@pytest.fixture(scope="module")
def finished(sweep):
    sweep_dir, proc = sweep
    result = finish(proc, timeout=600)
    jobs = {}
    for job in json.loads((sweep_dir / "sweep_summary.json").read_text())["jobs"]:
        cfg = (Path(job["run_dir"]) / ".hydra" / "config.yaml").read_text()
        model = "dcgan" if "name: dcgan" in cfg else "ddpm"
        seed = next(o.split("=")[1] for o in job["overrides"] if o.startswith("seed="))
        jobs[f"{model}-{seed}"] = job
    return sweep_dir, result, jobs


def test_compare_refuses_an_empty_selection(tmp_path):
    result = entry("difgan.compare", str(tmp_path))
    assert result.returncode == 1 and "no run folders" in result.stderr


def test_the_basic_launcher_goes_on_after_failed_jobs_too(tmp_path):
    """In-process sweep (Hydra's default launcher): jobs that fail their config check are recorded, the
    sweep ends with exit status 1 and one line, no traceback."""
    result = entry("difgan.run", "-m", "seed=first,second", "metrics=none", "logger=csv",
                   f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "2 of 2 sweep jobs did not complete" in result.stderr
    jobs = json.loads((tmp_path / "sweep_summary.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["failed", "failed"]
    assert jobs[1]["error"].startswith("config error: seed: impossible value, got 'second'")
    assert jobs[1]["overrides"] == ["seed=second", "metrics=none", "logger=csv"]


def test_a_failed_job_does_not_stop_the_sweep_and_the_summary_lists_every_job(finished):
    sweep_dir, result, jobs = finished
    assert result.returncode == 1, result.stderr[-3000:]            # the sweep reports its failure ...
    assert "1 of 4 sweep jobs did not complete" in result.stderr
    assert "Traceback" not in result.stderr
    assert {k: j["status"] for k, j in jobs.items()} == JOBS         # ... after every other job finished
    failed = jobs["ddpm-1"]
    assert failed["error"] == "RuntimeError: deliberate failure at batch 2"
    assert "deliberate failure" in (Path(failed["run_dir"]) / "error.log").read_text()
    for key, job in jobs.items():
        run_dir = Path(job["run_dir"])
        assert run_dir.parent == sweep_dir and run_dir.name.startswith(f"{job['num']}_")
        assert f"seed={key[-1]}" in job["overrides"]
        if JOBS[key] == "completed":
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert metrics["protocol"]["n_generated"] == 24 and "fid_domain" in metrics["metrics"]


def test_a_preempted_job_is_requeued_and_resumes_from_its_run_folder(finished):
    _, _, jobs = finished
    job = jobs["dcgan-1"]
    run_dir = Path(job["run_dir"])
    assert job["attempts"] == 2                                      # submitit requeued it once
    starts = [int(x) for x in (run_dir / "starts.txt").read_text().split()]
    assert starts[0] == 0 and starts[1] in (3, 4), starts            # the second start resumed mid-run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["difgan"]["images_seen"] == 96                       # and finished the budget exactly
    assert [int(x) for x in (Path(jobs["dcgan-0"]["run_dir"]) / "starts.txt").read_text().split()] == [0]


def test_each_job_is_a_wandb_run_grouped_by_the_sweep(finished):
    sweep_dir, _, jobs = finished
    run_dir = Path(jobs["ddpm-0"]["run_dir"])
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    s = wandb_summary(run_file)
    assert s["group"] == sweep_dir.name and s["job_type"] == "ddpm"
    assert {"model:ddpm", "data:mnist_offline", "seed:0"} <= set(s["tags"])
    assert s["config"]["model"]["unet"]["channels"] == 8 and s["config"]["seed"] == 0       # resolved config
    names = {"train/loss", "train/kimg", "val/fid_domain", "val/kimg", "resources/wall_clock_s"}
    assert names <= s["history"]
    assert any(k.startswith("samples/grid") for k in s["history"])  # sample grids as images
    assert s["axes"].get("train/*") == "train/kimg" and s["axes"].get("val/*") == "val/kimg"
    assert "final/metrics" in s["tables"] and "final/fid_domain" in s["summary"]


def test_compare_writes_the_table_and_plots_of_the_sweep(finished):
    sweep_dir, _, jobs = finished
    out = sweep_dir / "compare"
    result = entry("difgan.compare", str(sweep_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "table.md").read_text()
    rows = {r["model"]: r for r in csv.DictReader(open(out / "table.csv"))}
    assert set(rows) == {"dcgan", "ddpm"}
    assert rows["dcgan"]["n_runs"] == "2" and rows["ddpm"]["n_runs"] == "1"   # the failed job is left out
    fids = [json.loads((Path(jobs[k]["run_dir"]) / "metrics.json").read_text())["metrics"]["fid_domain"]
            for k in ("dcgan-0", "dcgan-1")]
    assert float(rows["dcgan"]["fid_domain"]) == pytest.approx(sum(fids) / 2)
    assert float(rows["dcgan"]["fid_domain_std"]) == pytest.approx(abs(fids[0] - fids[1]) / 2 ** 0.5)
    assert rows["dcgan"]["protocol"] == rows["ddpm"]["protocol"] == "P1"      # one protocol: one column
    assert "n_generated=24" in table and "±" in table
    assert "deliberate failure" in table                                       # and it says why
    assert float(rows["ddpm"]["sampling_nfe"]) == 4 and float(rows["dcgan"]["sampling_nfe"]) == 1
    assert float(rows["dcgan"]["parameters"]) > 0 and float(rows["dcgan"]["kimg"]) == pytest.approx(0.096)
    for name in ("curves.png", "precision_recall.png", "samples.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_the_compare_notebook_executes_on_the_sweep(finished, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="notebook tests need the dev extra (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="notebook tests need the dev extra (nbclient)")
    sweep_dir, _, _ = finished
    nb = nbformat.read(REPO / "notebooks" / "compare.ipynb", as_version=4)
    env = {"DIFGAN_COMPARE_TARGETS": str(sweep_dir), "DIFGAN_COMPARE_OUT": str(tmp_path / "out"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                      # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = "".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells
                   for o in c.get("outputs", []))
    assert "4 runs" in text and "| dcgan |" in text and "image/png" in text
    assert (tmp_path / "out" / "samples.png").is_file()
