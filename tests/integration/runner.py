"""Running ``difgan.run`` from tests: as a real process (``cli``, ``start_cli``) or in this process through
the same Hydra ``main`` (``hydra_main``), which costs no interpreter start or Lightning import (~8 s a
process here).

Both go through ``difgan.run.main``: Hydra composes the command line, ``main`` turns ``DifganError`` into
one ``error: ...`` line and exit status 1. ``tiny(...)`` gives the overrides of a run small enough for a CPU
test: an 8-channel DCGAN on the ``mnist_root`` fixture's 40 IDX digits (36 train images after the 10%
validation hold-out; loading them takes milliseconds, unlike mnist_offline's CSV).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[2]
PROBE = "tests.integration.probes"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def tiny(run_dir: Path, data_dir: Path, *more: str, batch_size: int = 8) -> list[str]:
    """Overrides for a tiny, quiet, offline DCGAN run writing to ``run_dir``."""
    return ["model=dcgan", "model.base_channels=8", "model.latent_dim=16", "data=mnist",
            f"paths.data_dir={data_dir}", f"data.batch_size={batch_size}", "data.num_workers=0",
            "metrics=none", "logger=csv", "trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false", "callbacks.samples.n=4",
            f"paths.cache_dir={run_dir.parent / 'cache'}", f"hydra.run.dir={run_dir}", *more]


def cli_env(**extra: str | None) -> dict[str, str]:
    """The environment of a child process: W&B disabled, the repo importable (for ``probes``);
    ``extra`` sets variables, or removes them when given ``None``."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1",  # tiny models: one thread each is fastest on a busy machine
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m difgan.run *args`` started in the background (stdin closed: nothing may prompt). Its
    output goes to files in ``cwd`` (a pipe nobody reads could fill up and stall it); ``finish`` reads
    them."""
    stem = f"cli-{os.getpid()}-{id(args)}"
    out, err = (open(cwd / f"{stem}.{s}", "w+") for s in ("out", "err"))  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "difgan.run", *args], cwd=cwd, env=env or cli_env(),
                            stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True)
    proc.output_files = (out, err)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> Result:
    """Wait for a ``start_cli`` process (killing it after ``timeout`` s) and return what it printed."""
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        timed_out = True
    texts = []
    for f in proc.output_files:
        f.flush()
        f.seek(0)
        texts.append(f.read())
        f.close()
    result = Result(proc.returncode, *texts)
    if timed_out:
        raise AssertionError(f"timed out after {timeout} s\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


@contextlib.contextmanager
def running(*args: str, cwd: Path, env: dict[str, str] | None = None):
    """A CLI run started in the background for the duration of a (module-scoped) fixture, so the in-process
    tests of the module run meanwhile (an interpreter start costs ~8 s of one core); the test that checks the
    run's result (``finish``) comes last in its module. Killed if still running at the end."""
    proc = start_cli(*args, cwd=cwd, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    return finish(start_cli(*args, cwd=cwd, env=env), timeout)


def hydra_main(*args: str) -> Result:
    """``python -m difgan.run *args`` in this process (see ``entry``)."""
    return entry("difgan.run", *args)


def entry(module: str, *args: str) -> Result:
    """``python -m <module> *args`` in this process: its real Hydra ``main`` with ``sys.argv`` set, stdout and
    stderr captured. Returns exit status 0 unless ``main`` exits."""
    main = importlib.import_module(module).main
    GlobalHydra.instance().clear()
    out, err = io.StringIO(), io.StringIO()
    argv, threads, code = sys.argv, torch.get_num_threads(), 0
    sys.argv = [module, *args]
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a busy machine (no OpenMP barriers)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
        GlobalHydra.instance().clear()
    return Result(code, out.getvalue(), err.getvalue())


def one_line_error(result: Result) -> str:
    """The single ``error: ...`` line a user mistake must produce: exit status 1, no traceback, and nothing
    else on stderr but Lightning/Python warnings."""
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def load(path: Path) -> dict:
    """A checkpoint as every reader of the suite must be able to load it: no unpickling beyond tensors."""
    return torch.load(path, map_location="cpu", weights_only=True)


def probe(name: str, cls: str, **kwargs) -> list[str]:
    """Overrides adding a test callback from ``probes`` to the run (``callbacks.extra``)."""
    return [f"++callbacks.extra.{name}._target_={PROBE}.{cls}",
            *(f"++callbacks.extra.{name}.{k}={v}" for k, v in kwargs.items())]
