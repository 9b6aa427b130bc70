"""The one device choice of the entry points: under torchrun each rank takes its own GPU."""

from __future__ import annotations

import torch

from difgan.devices import pick_device


def test_auto_takes_the_local_rank_gpu_and_explicit_names_pass_through(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu") and pick_device("cuda:2") == torch.device("cuda", 2)
