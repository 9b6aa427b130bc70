"""Checkpoints that survive kills and full disks: ``checkpoints/last.ckpt`` kept current, written atomically,
never with non-finite weights.

``LastCheckpoint`` is Lightning's ModelCheckpoint with two gaps closed. With ``save_top_k=0`` (no periodic
files kept) Lightning refreshes ``last.ckpt`` at an epoch end only after a top-k save, i.e. never, so a killed
run lost every finished epoch; and at the end of training it writes ``last.ckpt`` only if no ``last.ckpt`` was
written before, so a run that stops between two save points (``max_steps``, ``max_kimg``) kept an older
state. Here ``last.ckpt`` is written at every save point and at the end of training. A run stopped by an
exception writes nothing more (its last good checkpoint stays). The loggers are flushed before each save, so
the metrics on disk reach at least as far as the checkpoint a requeued run continues from.

``AtomicCheckpointIO`` is how every checkpoint file is written (Lightning's trainer -> strategy ->
CheckpointIO): into a temporary file in the destination folder, flushed and fsynced, then ``os.replace``d
over the destination (and the folder fsynced). Lightning's own writer stages the file in ``$TMPDIR`` and
moves it, which is a copy, not a rename, when ``$TMPDIR`` is on another filesystem: a kill during that copy
left a 0-byte ``last.ckpt``. Here the previous checkpoint stays whole until the new one is complete; a failed
write (a full disk) removes its temporary file and stops the run with one line. A checkpoint whose
parameters or buffers hold NaN or inf is not written at all (a warning names them): a finite checkpoint is
never replaced by a non-finite one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from difgan.errors import CheckpointError

TMP_PREFIX = "."       # temporary files: .<name>.<random>.tmp next to the destination
TMP_SUFFIX = ".tmp"


def _serialize(obj: Any, f) -> None:
    """Write ``obj`` to the open binary file ``f`` (the one place bytes are produced; tests patch it)."""
    torch.save(obj, f)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some filesystems refuse directory fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` such that ``path`` holds either its previous content or all of ``obj``,
    whatever happens meanwhile (kill, power loss, full disk): temp file in the same folder, fsync, replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _serialize(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous "
                                  "checkpoint there is kept unchanged") from None
        raise
    _fsync_dir(path.parent)


_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _finite(value: torch.Tensor) -> bool:
    # numpy on CPU: torch's isfinite().all() cost ~0.5 s for a DCGAN checkpoint on a busy 2-core machine
    # (thread-pool overhead per small tensor), numpy ~2 ms.
    if value.device.type == "cpu" and value.dtype in _NUMPY_FLOATS:
        return bool(np.isfinite(value.detach().numpy()).all())
    return bool(torch.isfinite(value).all())


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of floating-point tensors in ``state`` (a state dict) holding NaN or inf."""
    return [name for name, value in state.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not _finite(value)]


def leftover_temporaries(folder: Path) -> list[Path]:
    """Temporary files of saves that were killed before their rename (never a checkpoint)."""
    return sorted(p for p in Path(folder).glob(f"{TMP_PREFIX}*{TMP_SUFFIX}") if p.is_file())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO writing with ``atomic_save`` after the non-finite check (see module doc)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            warnings.warn(f"not saving checkpoint {path}: non-finite values in {', '.join(bad[:3])}{more}; "
                          "the previous checkpoint is kept", RuntimeWarning, stacklevel=2)
            return
        for stale in leftover_temporaries(Path(path).parent):
            with contextlib.suppress(OSError):
                stale.unlink()
        atomic_save(checkpoint, path)


class LastCheckpoint(ModelCheckpoint):
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if trainer.is_global_zero:  # metrics on disk reach at least as far as the checkpoint
            for logger in trainer.loggers:
                logger.save()
        super()._save_checkpoint(trainer, filepath)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (self.save_last and self.save_top_k == 0 and self._every_n_epochs >= 1
                and (trainer.current_epoch + 1) % self._every_n_epochs == 0
                and self._should_save_on_train_epoch_end(trainer)
                and not self._should_skip_saving_checkpoint(trainer)):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
