"""Fixtures the metrics tests share: a tiny digits datamodule and a cache folder, one per test module."""

from __future__ import annotations

import pytest

from tests.unit.test_metrics_support import digits, session_cache


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    return digits(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return session_cache(tmp_path_factory)
