"""The evaluation loop: generate -> round to uint8 -> extract features -> compute metrics -> protocol.

``Evaluator`` is shared by the in-training callback and the final/standalone evaluation. Under DDP each rank
generates and extracts its share (fixed chunks of ``batch_size`` samples, dealt round-robin), features are
gathered to every rank in the global order, and every rank computes the same numbers, so the result equals
the single-process one. Sample i's initial noise depends on (``seed``, i) alone, and a chunk's other
sampler randomness (e.g. DDPM's per-step noise) on (``seed``, chunk number); conditional models get labels
``i mod num_classes`` (balanced classes).
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from difgan.data.datamodule import ImageDataModule, to_uint8
from difgan.metrics.config import NEEDS_REAL, MetricsError, MetricsSettings
from difgan.metrics.distributed import gather_chunks, my_chunks, world
from difgan.metrics.features import FeatureSpace, extract, load_feature_space
from difgan.metrics.formulas import fid_against_features, inception_score, kid, precision_recall
from difgan.metrics.realdata import CANONICAL
from difgan.metrics.reference import Reference, reference_statistics


def chunk_seed(seed: int, chunk: int) -> int:
    return (int(seed) * 1_000_003 + int(chunk) * 7919 + 12345) % (2**63 - 1)


def sample_noise(seed: int, start: int, end: int, shape) -> Tensor:
    """Initial noise of samples start..end-1; sample i's noise depends on (seed, i) only, so the images do
    not change with the batch size or the number of processes."""
    out = torch.empty((end - start, *shape))
    g = torch.Generator()
    for j, i in enumerate(range(start, end)):
        g.manual_seed(chunk_seed(seed, i) ^ 0x5DEECE66D)
        out[j] = torch.randn(shape, generator=g)
    return out


def versions() -> dict:
    import lightning
    import torch_fidelity
    import torchmetrics

    import difgan
    return {"difgan": difgan.__version__, "torch": torch.__version__,
            "torchmetrics": torchmetrics.__version__,
            "torch_fidelity": torch_fidelity.__version__, "lightning": lightning.__version__,
            "python": platform.python_version()}


def _sampler_protocol(module, options: dict) -> dict:
    """What sampled the images: the options passed and the model's own description of them
    (``GenerativeModule.sample_protocol``)."""
    return {"options": dict(options), "model": module.sample_protocol(**options)}


class Evaluator:
    """Metrics of a ``GenerativeModule`` against one dataset, with its feature spaces and references."""

    def __init__(self, datamodule: ImageDataModule, settings: MetricsSettings, cache_dir: str | Path,
                 metrics: Sequence[str], spaces: Sequence[str] | None = None, n_real: int | None = None,
                 progress: bool = True, kid_subsets: int | None = None):
        self.dm, self.settings, self.cache_dir = datamodule, settings, Path(cache_dir)
        self.metrics = list(metrics)
        self.space_names = list(spaces) if spaces else settings.spaces_for(datamodule.source)
        self.n_real, self.progress = n_real, progress
        self.kid_subsets = kid_subsets or settings.kid_subsets
        self.spaces: dict[str, FeatureSpace] = {}
        self.references: dict[str, Reference] = {}
        self.device: torch.device | None = None
        self.prepare_time_s = 0.0

    # ----------------------------------------------------------------- setup
    def _wants_class_accuracy(self) -> bool:
        ca = self.settings.class_accuracy
        return ca is True or (ca == "auto" and "domain" in self.space_names)

    def prepare(self, device: torch.device | str = "cpu") -> Evaluator:
        """Load the feature networks and reference statistics (idempotent; moves them to ``device``)."""
        device = torch.device(device)
        start = time.perf_counter()
        names = list(self.space_names)
        if self._wants_class_accuracy() and "domain" not in names and self.dm.num_classes > 1:
            names.append("domain")
        for name in names:
            if name not in self.spaces:
                self.spaces[name] = load_feature_space(name, self.settings, self.dm, self.cache_dir, device,
                                                       self.progress)
            self.spaces[name].to(device)
        if NEEDS_REAL & set(self.metrics):
            for name in self.space_names:
                if name not in self.references:
                    self.references[name] = reference_statistics(
                        self.spaces[name], self.dm, self.settings.reference_split, self.n_real,
                        self.cache_dir, self.settings.batch_size, device, verbose=self.progress)
        self.device = device
        self.prepare_time_s += time.perf_counter() - start
        return self

    # ----------------------------------------------------------------- generation and features
    @torch.no_grad()
    def generate_features(self, module, n: int, use_ema: bool = True, sample_options: dict | None = None,
                          ) -> tuple[dict[str, dict[str, Tensor]], Tensor | None, dict]:
        """Features of ``n`` generated images in every loaded space, in global sample order, on every rank."""
        device = module.device
        opts = dict(sample_options or {})
        b = self.settings.batch_size
        chunks = my_chunks(n, b)
        local: dict[str, dict[str, list[Tensor]]] = {k: {"features": [], "logits": []} for k in self.spaces}
        t_gen = t_feat = 0.0
        conditional = module.is_conditional
        fork_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):  # training's RNG stream is left untouched
            bar = tqdm(chunks, desc=f"generating {n} images", disable=not self.progress or len(chunks) < 4,
                       leave=False, dynamic_ncols=True)
            for s, e in bar:
                k = s // b
                t0 = time.perf_counter()
                noise = sample_noise(self.settings.seed, s, e, module.noise_shape).to(device)
                g_dev = torch.Generator(device=device).manual_seed(chunk_seed(self.settings.seed, k) + 1)
                labels = (torch.arange(s, e) % module.num_classes).to(device) if conditional else None
                images = to_uint8(module.sample(e - s, labels, use_ema=use_ema, generator=g_dev, noise=noise,
                                                **opts))
                if tuple(images.shape[1:]) != (self.dm.channels, self.dm.resolution, self.dm.resolution):
                    raise MetricsError(f"the model makes images of shape {tuple(images.shape[1:])}, the "
                                       f"dataset {self.dm.name} has {self.dm.image_shape}")
                t1 = time.perf_counter()
                for name, space in self.spaces.items():
                    out = extract(space, images, b, self.device or device)
                    local[name]["features"].append(out["features"])
                    local[name]["logits"].append(out["logits"])
                t_gen += t1 - t0
                t_feat += time.perf_counter() - t1
        feats: dict[str, dict[str, Tensor]] = {}
        for name, parts in local.items():
            feats[name] = {}
            for key, lst in parts.items():
                if lst:
                    t = torch.cat(lst)
                else:  # this rank had no chunk: an empty tensor of the right width
                    blank = torch.zeros((1, *self.dm.image_shape), dtype=torch.uint8)
                    probe = extract(self.spaces[name], blank, 1, self.device or device)[key]
                    t = probe[:0]
                feats[name][key] = gather_chunks(t, n, b)
        labels = (torch.arange(n) % module.num_classes) if conditional else None
        return feats, labels, {"generate": t_gen, "features": t_feat}

    # ----------------------------------------------------------------- metrics
    def compute(self, feats: dict[str, dict[str, Tensor]], labels: Tensor | None) -> tuple[dict, dict]:
        """(values, details) for the configured metrics in every metric space."""
        s = self.settings
        dev = self.device or torch.device("cpu")
        values, details = {}, {}
        for name in self.space_names:
            fake = feats[name]["features"]
            ref = self.references.get(name)
            if "fid" in self.metrics:
                values[f"fid_{name}"] = fid_against_features(real=(ref.mu, ref.sigma), fake=fake,
                                                             real_sqrt=ref.sigma_sqrt)
            if "kid" in self.metrics:
                # subsets of at most half the smaller set, so they differ and the std means something
                size = min(s.kid_subset_size, max(2, min(ref.n, fake.shape[0]) // 2))
                mean, std, size = kid(real=ref.features.to(dev), fake=fake.to(dev), subsets=self.kid_subsets,
                                      subset_size=size, degree=s.kid_degree, coef0=s.kid_coef0, seed=s.seed)
                values[f"kid_{name}"], values[f"kid_{name}_std"] = mean, std
                details["kid_subset_size"] = size
            if "is" in self.metrics:
                mean, std = inception_score(feats[name]["logits"], s.is_splits)
                values[f"is_{name}"], values[f"is_{name}_std"] = mean, std
            if "pr" in self.metrics:
                pr = precision_recall(real=ref.features.to(dev), fake=fake.to(dev), k=s.pr_k)
                values[f"precision_{name}"], values[f"recall_{name}"] = pr["precision"], pr["recall"]
        if labels is not None and "domain" in feats and self.settings.class_accuracy is not False:
            pred = feats["domain"]["logits"].argmax(1)
            values["class_accuracy"] = float((pred == labels).float().mean())
        return values, details

    # ----------------------------------------------------------------- the whole thing
    def run(self, module, n: int, use_ema: bool = True, sample_options: dict | None = None) -> dict:
        """Generate ``n`` images, compute the metrics, return ``{"metrics": ..., "protocol": ...}``."""
        if n < 2:
            raise MetricsError(f"n must be at least 2 generated images, got {n}")
        start = time.perf_counter()
        if self.device is None:
            self.prepare(module.device)
        feats, labels, times = self.generate_features(module, n, use_ema, sample_options)
        t0 = time.perf_counter()
        values, details = self.compute(feats, labels)
        times["metrics"] = time.perf_counter() - t0
        times["total"] = time.perf_counter() - start
        times["prepare"] = self.prepare_time_s
        protocol = self.protocol(module, n, use_ema, sample_options or {}, details, times)
        return {"metrics": values, "protocol": protocol}

    def protocol(self, module, n, use_ema, sample_options, details, times) -> dict:
        s = self.settings
        has_ema = getattr(module, "ema", None) is not None
        _, size = world()
        any_ref = next(iter(self.references.values()), None)
        p = {
            "feature_spaces": {k: v.describe() for k, v in self.spaces.items()},
            "metric_spaces": list(self.space_names),
            "metrics": list(self.metrics),
            "n_generated": n,
            "n_real": any_ref.n if any_ref is not None else 0,
            "reference": {"dataset": self.dm.name, "source": self.dm.source, "split": s.reference_split,
                          "resolution": self.dm.resolution, "channels": self.dm.channels,
                          "data_seed": CANONICAL["seed"], "val_fraction": CANONICAL["val_fraction"],
                          "cache": {k: r.info.get("cache_file") for k, r in self.references.items()}},
            "weights": "ema" if use_ema and has_ema else "raw",
            "model": type(module).__name__,
            "images_seen": int(getattr(module, "images_seen", 0)),
            "conditional": bool(module.is_conditional),
            "labels": "i mod num_classes (balanced)" if module.is_conditional else None,
            "sampler": _sampler_protocol(module, sample_options),
            "latent_seed": s.seed,
            "settings": {"kid": {"subsets": self.kid_subsets, "subset_size": details.get("kid_subset_size"),
                                 "degree": s.kid_degree, "gamma": "1/d", "coef0": s.kid_coef0,
                                 "std": "over subsets, ddof 0"},
                         "is": {"splits": s.is_splits, "shuffle": False},
                         "pr": {"k": s.pr_k, "method": "Kynkaanniemi et al. 2019, ties inside"},
                         "fid": {"covariance": "unbiased (n-1)",
                                 "trace_sqrt": "symmetric eigendecomposition, float64"},
                         "batch_size": s.batch_size, "image_rounding": "to uint8 with rounding"},
            "world_size": size,
            "device": str(module.device),
            "time_s": {k: round(v, 3) for k, v in times.items()},
            "versions": versions(),
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        if use_ema and not has_ema:
            p["weights_note"] = "EMA requested but the model has none: raw weights used"
        return p


# ----------------------------------------------------------------------------------------------- output


def format_table(result: dict) -> str:
    """A small text table of the metric values with the protocol line that qualifies them."""
    m, p = result["metrics"], result["protocol"]
    rows = []
    for key, value in m.items():
        if key.endswith("_std"):
            continue
        std = m.get(f"{key}_std")
        if key.startswith("kid"):
            text = f"{value:.6f}" + (f" ± {std:.6f}" if std is not None else "")
        else:
            text = f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else "")
        rows.append((key, text))
    width = max([len(k) for k, _ in rows] + [6])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 24}"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"n_generated={p['n_generated']} n_real={p['n_real']} reference={p['reference']['dataset']}/"
                 f"{p['reference']['split']} weights={p['weights']} spaces={','.join(p['metric_spaces'])} "
                 f"time={p['time_s'].get('total', math.nan):.1f}s")
    return "\n".join(lines)


def write_metrics_json(result: dict, path: Path) -> Path:
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return path
