"""One writer per run folder: ``<run folder>/.lock``, held for the whole run.

The lock is an exclusive ``flock`` on the file (the kernel drops it when the holder dies, however it dies),
and the file names the holder (host, pid, start time) for the error a second writer gets. A lock file that
names a holder but is not locked is stale (its process was killed): it is taken over with a one-line
warning. A cleanly finished run empties the file. Under DDP only global rank 0 takes it.

Not guaranteed: filesystems without working ``flock`` across machines (some NFS setups) let two hosts both
take the lock; there the folder's ``.lock`` still names the first holder for a human to see.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from difgan.errors import DifganError

LOCK_NAME = ".lock"


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank 0 as its launcher set it, read before any process group exists:
    every rank variable a launcher may set (torchrun RANK, Lightning's relaunch LOCAL_RANK/NODE_RANK, SLURM,
    LSF) is unset or 0. A plain process is rank 0."""
    return all(os.environ.get(var) in (None, "", "0")
               for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"))


class RunFolderLocked(DifganError):
    """Another process is writing to this run folder."""


def _describe(info: dict) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "unknown time"
    return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {when}"


def _read(f) -> dict:
    f.seek(0)
    text = f.read()
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {"host": "?", "pid": text.strip()[:40]}


class RunLock:
    """``with RunLock(run_dir): ...`` or ``acquire()`` / ``release()``."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._file = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(f)
            f.close()
            raise RunFolderLocked(
                f"run folder {self.path.parent} is in use by another run ({_describe(holder)}; lock file "
                f"{self.path}). Wait for it to finish, or choose another hydra.run.dir") from None
        previous = _read(f)
        if previous:
            print(f"warning: taking over the stale lock of run folder {self.path.parent} "
                  f"({_describe(previous)}: no longer running)", file=sys.stderr)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
            fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
