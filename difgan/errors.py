"""User-facing errors: raised for user mistakes, printed as one line by the entry points (no traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class DifganError(Exception):
    """Base class of errors that are the user's to fix; entry points print them without a traceback."""


class ConfigError(DifganError):
    """An impossible or unknown config value. The message names the config key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config error: {key}: {message}")


class DatasetNotFoundError(DifganError):
    """A dataset is missing on disk and may not be downloaded."""


class CheckpointError(DifganError):
    """A checkpoint is missing, corrupt, or not a difgan checkpoint."""


class NonFiniteLossError(DifganError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, name: str, value: float, batch: int, step: int):
        super().__init__(
            f"non-finite loss: {name}={value} at batch {batch} (global_step {step}); "
            "training stopped, the last good checkpoint is kept"
        )


def run_reporting_errors(task: Callable[..., Any], *args: Any,
                         errors: tuple[type[Exception], ...] = ()) -> Any:
    """``task(*args)`` for an entry point: a ``DifganError`` (or one of ``errors``) becomes one line on stderr
    and exit status 1, without a traceback."""
    try:
        return task(*args)
    except (DifganError, *errors) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
