"""The one device choice of the command-line entry points (sample, evaluate, interpolate)."""

from __future__ import annotations

import os

import torch


def pick_device(name: str) -> torch.device:
    """``auto``: this process's GPU (``LOCAL_RANK`` under torchrun) when CUDA is available, else the CPU;
    anything else is passed to ``torch.device`` (cpu, cuda, cuda:1)."""
    if name == "auto":
        if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
