"""Checks of config values: each failure is a ``ConfigError`` naming the key (one line, no traceback)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from difgan.errors import ConfigError


def require(key: str, value: Any, ok: bool, expected: str | None = None) -> None:
    """Raise ``ConfigError(key, ...)`` unless ``ok``; the message shows the value (and what was expected)."""
    if not ok:
        raise ConfigError(key, f"impossible value, got {value!r}" + (f" ({expected})" if expected else ""))


def check_int(key: str, value: Any, minimum: int | None = 1, allow_none: bool = False,
              alternatives: str | None = None) -> None:
    """An integer (bools are not) of at least ``minimum``; ``None`` only when ``allow_none``.
    ``alternatives`` names other accepted values in the message (e.g. "'square' or null")."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        kind = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        kind += f" or {alternatives}" if alternatives else ""
        raise ConfigError(key, f"must be {kind}, got {value!r}")


def check_choice(key: str, value: Any, choices: tuple | list | dict) -> None:
    if value not in choices:
        raise ConfigError(key, f"unknown value {value!r}; valid: {', '.join(map(str, choices))}")


def check_resolution(fits: Callable[[int], Any], resolution: int) -> None:
    """``fits(resolution)`` is a network's own check (raising ValueError for sizes it cannot build); its
    message becomes a ``ConfigError`` naming ``data.resolution``."""
    try:
        fits(resolution)
    except ValueError as e:
        raise ConfigError("data.resolution", str(e)) from None
