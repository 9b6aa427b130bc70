"""Feature spaces: Inception-v3 (torch-fidelity, the literature's protocol) and the in-domain network.

A ``FeatureSpace`` maps uint8 images (n, C, H, W) to ``{"features": (n, d), "logits": (n, classes)}`` in
float32. Both spaces take the same uint8 images (generated images are rounded to uint8 with
``difgan.data.to_uint8`` first, exactly like real ones), and each carries a ``fingerprint`` of its weights
so cached reference statistics are recomputed when the network changes.

Inception-v3 is torch-fidelity's ``FeatureExtractorInceptionV3`` with the 2015-12-05 TensorFlow weights and
torch-fidelity's own TF1-compatible bilinear resize to 299 (no antialiasing; torchmetrics >= 1.8 antialiases
by default and no longer matches the papers). Features: the 2048-d pool3; IS logits: ``logits_unbiased``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import socket
from pathlib import Path

import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

from difgan.data.datamodule import to_signed_float
from difgan.metrics.config import MetricsError
from difgan.metrics.domain_net import DomainNet

INCEPTION_FILE = URL_INCEPTION_V3.rsplit("/", 1)[1]  # weights-inception-2015-12-05-6726825d.pth


def file_sha256(path: Path, _cache: dict = {}) -> str:  # noqa: B006 - a per-process memo on purpose
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]


def default_inception_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_inception_weights(configured: str | None, download: bool = True) -> Path:
    """The Inception-v3 weights file: the configured path, or torch hub's cache (downloaded when missing and
    allowed). Offline without the file: a MetricsError that says where to put it."""
    if configured:
        path = Path(str(configured)).expanduser()
        if not path.is_file():
            raise MetricsError(f"Inception-v3 weights not found at {path} (metrics.inception_weights); "
                               f"download {URL_INCEPTION_V3} there")
        return path
    path = default_inception_path()
    if path.is_file():
        return path
    reason = "downloads disabled (inception_download=false)"
    if download:
        path.parent.mkdir(parents=True, exist_ok=True)
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)
        try:
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(path), progress=True)
            return path
        except Exception as e:  # noqa: BLE001 - no network, proxy, HTTP error: all the same to the user
            reason = f"download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        finally:
            socket.setdefaulttimeout(old)
    raise MetricsError(f"Inception-v3 weights not found: put {INCEPTION_FILE} (from {URL_INCEPTION_V3}) at "
                       f"{path}, or set inception_weights=/path/to/{INCEPTION_FILE} ({reason})")


def load_weights_safely(path: Path) -> dict[str, Tensor]:
    """A state dict (names -> tensors) read with ``weights_only=True``: a file holding anything else (pickled
    objects, code) is refused before anything unpickles it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unreadable or holding objects: refused alike
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MetricsError(f"cannot load Inception-v3 weights from {path}: not a plain state dict of tensors "
                           f"(refused to unpickle it; {first[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                              for k, v in state.items()):
        raise MetricsError(f"cannot load Inception-v3 weights from {path}: not a state dict of tensors")
    return state


class _TorchWithLoad:
    """``torch`` as torch-fidelity's Inception module sees it, except that ``load`` returns a state dict
    already read safely (torch-fidelity itself loads the weights file with ``weights_only=False``)."""

    def __init__(self, state: dict):
        self._state = state

    def load(self, *args, **kwargs):
        return self._state

    def __getattr__(self, name):
        return getattr(torch, name)


@contextlib.contextmanager
def _inception_weights(state: dict):
    saved = tf_inception.torch
    tf_inception.torch = _TorchWithLoad(state)
    try:
        yield
    finally:
        tf_inception.torch = saved


def build_inception(weights_path: Path) -> FeatureExtractorInceptionV3:
    """torch-fidelity's Inception-v3 extractor with weights read by ``load_weights_safely`` only."""
    state = load_weights_safely(weights_path)
    with _inception_weights(state):
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                           feature_extractor_weights_path=str(weights_path))


class FeatureSpace(nn.Module, abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def forward(self, images: Tensor) -> dict[str, Tensor]: ...

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str: ...

    @abc.abstractmethod
    def describe(self) -> dict:
        """The protocol fields that identify this space in metrics.json."""


class InceptionFeatures(FeatureSpace):
    name = "inception"

    def __init__(self, weights_path: str | Path):
        super().__init__()
        self.weights_path = Path(weights_path)
        try:
            self.net = build_inception(self.weights_path)
        except MetricsError:
            raise
        except Exception as e:  # noqa: BLE001
            raise MetricsError(f"cannot load Inception-v3 weights from {self.weights_path}: "
                               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        self._sha = file_sha256(self.weights_path)

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError("feature spaces take uint8 images; convert with difgan.data.to_uint8")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        features, logits = self.net(images.contiguous())
        return {"features": features.float(), "logits": logits.float()}

    @property
    def fingerprint(self) -> str:
        return f"inception-{self._sha[:16]}"

    def describe(self) -> dict:
        return {"network": "Inception-v3 (torch-fidelity FeatureExtractorInceptionV3, 2015-12-05 weights)",
                "weights": str(self.weights_path), "weights_sha256": self._sha,
                "official_weights": self.weights_path.name == INCEPTION_FILE,
                "features": "pool3, 2048-d", "is_logits": "logits_unbiased (1008 classes)",
                "resize": "torch-fidelity TF1-compatible bilinear to 299x299, no antialiasing",
                "grayscale": "replicated to 3 channels"}


class DomainFeatures(FeatureSpace):
    name = "domain"

    def __init__(self, net: DomainNet, info: dict, path: Path):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.info, self.path = info, Path(path)
        self._sha = file_sha256(self.path)

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError("feature spaces take uint8 images; convert with difgan.data.to_uint8")
        expected = self.net.arch["in_channels"]
        if images.shape[1] != expected:
            raise MetricsError(f"the domain network takes {expected}-channel images, got {images.shape[1]}")
        features, logits = self.net.features_and_logits(to_signed_float(images))
        return {"features": features.float(), "logits": logits.float()}

    @property
    def fingerprint(self) -> str:
        return f"domain-{self._sha[:16]}"

    def describe(self) -> dict:
        return {"network": "difgan DomainNet (classifier trained on the dataset; penultimate features)",
                "weights": str(self.path), "weights_sha256": self._sha,
                "classifier_accuracy": self.info.get("accuracy"),
                "accuracy_split": self.info.get("accuracy_split"),
                "features": "penultimate layer (fully connected, after ReLU), "
                            f"{self.net.arch['feature_dim']}-d",
                "is_logits": f"classifier logits ({self.net.arch['num_classes']} classes)",
                "train_settings": self.info.get("settings")}


@torch.no_grad()
def extract(space: FeatureSpace, images: Tensor, batch_size: int = 250,
            device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Run ``space`` over uint8 ``images`` in batches; CPU float32 outputs in the input order."""
    device = torch.device(device) if device is not None else next(space.parameters()).device
    outs: dict[str, list[Tensor]] = {}
    for i in range(0, images.shape[0], batch_size):
        for k, v in space(images[i:i + batch_size].to(device)).items():
            outs.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


def load_feature_space(name: str, settings, datamodule, cache_dir: Path,
                       device: torch.device | str = "cpu", progress: bool = True) -> FeatureSpace:
    """Build the ``inception`` or ``domain`` space (training and caching the domain network if missing)."""
    from difgan.metrics.domain_net import ensure_domain_net

    if name == "inception":
        space = InceptionFeatures(resolve_inception_weights(settings.inception_weights,
                                                            settings.inception_download))
    elif name == "domain":
        net, info, path = ensure_domain_net(datamodule, settings.domain_net, cache_dir, device, progress)
        space = DomainFeatures(net, info, path)
    else:
        raise MetricsError(f"unknown feature space {name!r}")
    return space.to(device)
