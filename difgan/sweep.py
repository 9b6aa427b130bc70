"""Sweeps that survive their jobs: a Hydra callback that records every job of a multirun and keeps the sweep
going when one fails.

Configured in conf/run.yaml (``hydra.callbacks.sweep_summary``). For each job it writes ``job.json`` in the
job's run folder (overrides, status, attempts, error line); after each job and at the end of the multirun it
writes ``sweep_summary.json`` next to ``multirun.yaml`` listing all of them. A job that raises is recorded as
``failed`` (its traceback in ``<run folder>/error.log``) and, with ``keep_going`` (default), handed back to
the launcher as a job without a result, so the other jobs run and the launcher (basic, joblib, submitit)
does not stop the sweep at the first failure. ``python -m difgan.run -m ...`` then exits with status 1 and
names the summary. A job that never reached its end (killed, out of memory) stays ``running`` in its
``job.json`` and shows as ``incomplete`` in the final summary.

Requeued jobs (SLURM preemption or timeout, through submitit) run again in the same run folder: ``attempts``
counts the starts, and ``difgan.resume`` continues from that folder's ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

JOB_FILE = "job.json"
SUMMARY_FILE = "sweep_summary.json"
ERROR_LOG = "error.log"

#: The summary written by the last ``on_multirun_end`` of this process (``difgan.run.main`` reads it to set
#: the exit status of a sweep).
LAST_SUMMARY: dict | None = None


def error_line(exc: BaseException) -> str:
    """One line naming what went wrong: a user error's own message (it names the key), else the error's type
    and the first line of its message."""
    from difgan.errors import DifganError

    text = str(exc).strip().splitlines()
    if isinstance(exc, DifganError) and text:
        return text[0]
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _write_json(path: Path, data: dict) -> None:
    """Atomic: another job process may read (or write) the same file at the same moment."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_jobs(sweep_dir: Path, final: bool = False) -> list[dict]:
    """The ``job.json`` records under a sweep folder, ordered by job number. In the ``final`` summary a job
    still marked running never ended (killed): ``incomplete``."""
    jobs = []
    for path in sorted(Path(sweep_dir).rglob(JOB_FILE)):
        job = _read_json(path)
        if job is None:
            continue
        if final and job.get("status") == "running":
            job["status"] = "incomplete"
            job.setdefault("error", "the job never reached its end (killed, out of memory or time?)")
        jobs.append(job)
    return sorted(jobs, key=lambda j: (j.get("num") if isinstance(j.get("num"), int) else 1 << 30,
                                       j.get("run_dir", "")))


def summarize(sweep_dir: Path, final: bool = False) -> dict:
    jobs = collect_jobs(sweep_dir, final)
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return {"sweep_dir": str(Path(sweep_dir).resolve()), "final": final,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "counts": counts, "jobs": jobs}


class SweepSummary(Callback):
    """Hydra callback: per-job ``job.json`` and the sweep's ``sweep_summary.json`` (see the module doc)."""

    def __init__(self, keep_going: bool = True):
        self.keep_going = bool(keep_going)

    @staticmethod
    def _job_dir(config: DictConfig) -> Path:
        return Path(config.hydra.runtime.output_dir)

    @staticmethod
    def _sweep_dir(config: DictConfig) -> Path | None:
        try:
            return Path(str(config.hydra.sweep.dir))
        except Exception:  # noqa: BLE001 - an unresolvable sweep dir must not break the job
            return None

    def _multirun(self, config: DictConfig) -> bool:
        from hydra.types import RunMode

        return config.hydra.get("mode") == RunMode.MULTIRUN

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self._multirun(config):
            return
        job_dir = self._job_dir(config)
        previous = _read_json(job_dir / JOB_FILE) or {}
        job = {"num": config.hydra.job.get("num"), "id": config.hydra.job.get("id"),
               "overrides": list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False)),
               "status": "running", "run_dir": str(job_dir.resolve()),
               "attempts": int(previous.get("attempts", 0)) + 1,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "error": None}
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / ERROR_LOG).unlink(missing_ok=True)
        _write_json(job_dir / JOB_FILE, job)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self._multirun(config):
            return
        job_dir = self._job_dir(config)
        job = _read_json(job_dir / JOB_FILE) or {"num": config.hydra.job.get("num"),
                                                 "run_dir": str(job_dir.resolve())}
        job["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        if job_return.status == JobStatus.FAILED:
            exc = job_return._return_value
            job["status"], job["error"] = "failed", error_line(exc)
            (job_dir / ERROR_LOG).write_text("".join(traceback.format_exception(exc)))
            print(f"error: job {job.get('num')} ({' '.join(job.get('overrides', []))}) failed: {job['error']}"
                  f" -- traceback in {job_dir / ERROR_LOG}", flush=True)
            if self.keep_going:
                # The job is over and recorded; the launcher and the sweeper carry on. An objective for a
                # hyperparameter search is NaN (the sweeper records a failed trial).
                job_return.status = JobStatus.COMPLETED
                job_return.return_value = math.nan if config.get("optimized_metric") else None
        else:
            job["status"] = "completed"
        _write_json(job_dir / JOB_FILE, job)
        sweep_dir = self._sweep_dir(config)
        if sweep_dir is not None and sweep_dir.is_dir():
            _write_json(sweep_dir / SUMMARY_FILE, summarize(sweep_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global LAST_SUMMARY
        sweep_dir = self._sweep_dir(config)
        if sweep_dir is None or not sweep_dir.is_dir():
            return
        summary = summarize(sweep_dir, final=True)
        _write_json(sweep_dir / SUMMARY_FILE, summary)
        LAST_SUMMARY = {**summary, "path": str(sweep_dir / SUMMARY_FILE)}
        counts = ", ".join(f"{v} {k}" for k, v in sorted(summary["counts"].items())) or "no jobs"
        print(f"sweep: {counts} -> {sweep_dir / SUMMARY_FILE}", flush=True)


def sweep_failed() -> str | None:
    """After a multirun in this process: a line naming the failed jobs, or None if every job completed."""
    if LAST_SUMMARY is None:
        return None
    bad = [j for j in LAST_SUMMARY["jobs"] if j["status"] != "completed"]
    if not bad:
        return None
    first = bad[0].get("error")
    return (f"{len(bad)} of {len(LAST_SUMMARY['jobs'])} sweep jobs did not complete "
            f"(job {', '.join(str(j.get('num')) for j in bad)})"
            + (f"; job {bad[0].get('num')}: {first}" if first else "") + f"; see {LAST_SUMMARY['path']}")
