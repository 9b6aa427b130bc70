"""Nothing foreign runs and bad inputs are handled (issue 12): Inception weights files are read without
unpickling code; truncated images in an image folder are skipped with a counted warning naming them; an
evaluation size that cannot fit in memory is refused; equal domain-network settings hit the same cache."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from difgan.metrics.config import MetricsError
from difgan.metrics.features import InceptionFeatures, default_inception_path, resolve_inception_weights


class Payload:
    """Unpickling this creates a folder: proof that the file was unpickled with full pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("where", ["inception_weights", "hub_cache"])
def test_an_inception_weights_payload_never_runs(tmp_path, monkeypatch, where):
    marker = tmp_path / "payload_ran"
    if where == "hub_cache":  # the file torch-fidelity would otherwise find by itself
        monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
        path = default_inception_path()
        path.parent.mkdir(parents=True)
    else:
        path = tmp_path / "weights.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "x": Payload(marker)}, path)
    assert pickle.loads(pickle.dumps(Payload(tmp_path / "probe"))) is None and (tmp_path / "probe").is_dir()
    resolved = resolve_inception_weights(str(path) if where == "inception_weights" else None, download=False)
    with pytest.raises(MetricsError, match="not a plain state dict of tensors.*refused to unpickle"):
        InceptionFeatures(resolved)
    assert not marker.exists()
