"""Metric speed on this machine. Prints one JSON object.

    python benchmarks/metrics_speed.py                 # CPU, 2 threads: n = 2,000 and 10,000
    python benchmarks/metrics_speed.py --n 2000 --threads 4 --device cuda

Reports, in seconds:
- ``domain``: for each n, feature extraction of n real and n generated-like images (28 px digits) with the
  in-domain network (default architecture), and the computation of FID, KID (100 subsets of 1,000),
  IS (10 splits) and precision/recall (k = 3) from those features.
- ``inception``: extraction per 1,000 images (timed on ``--inception-images`` and scaled), and the metric
  computation from 2,048-d features at n = 1,000 (KID per subset, as 100 subsets would dominate on CPU).
  Inception uses the real 2015-12-05 weights when they are in torch hub's cache, else a random-weight file of
  the same architecture (same speed).
- ``training_overhead``: one in-training evaluation at the default settings (domain space, n = 500, FID and
  KID over 20 subsets) against one epoch of the quickstart DCGAN on the offline digits (the default interval
  is one epoch): ``fraction`` must stay below 0.10.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t, 3)


def digits_datamodule(root: Path, batch_size: int = 64):
    from difgan.data import ImageDataModule

    dm = ImageDataModule(source="mnist_offline", root=str(root), resolution=28, channels=1,
                         batch_size=batch_size, val_fraction=0.1)
    dm.setup()
    return dm


def images_like(dm, n: int, seed: int) -> torch.Tensor:
    """n digit images (drawn with repeats from the training split, with a little pixel noise)."""
    g = torch.Generator().manual_seed(seed)
    base = dm.split("train").images
    x = base[torch.randint(0, len(base), (n,), generator=g)].float()
    return (x + 8 * torch.randn(x.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


def metric_times(real: torch.Tensor, fake: torch.Tensor, logits: torch.Tensor, device,
                 kid_subsets: int = 100) -> dict:
    from difgan.metrics.formulas import (
        feature_statistics,
        fid_against_features,
        inception_score,
        kid,
        precision_recall,
    )
    from difgan.metrics.reference import Reference

    ref = Reference(real, *feature_statistics(real))
    out = {}
    _, out["fid"] = timed(fid_against_features, real=(ref.mu, ref.sigma), fake=fake, real_sqrt=ref.sigma_sqrt)
    _, out["kid"] = timed(kid, real=real.to(device), fake=fake.to(device), subsets=kid_subsets,
                          subset_size=1000)
    _, out["is"] = timed(inception_score, logits, 10)
    _, out["pr"] = timed(precision_recall, real=real.to(device), fake=fake.to(device), k=3)
    out["total"] = round(sum(out.values()), 3)
    return out


def bench_domain(dm, ns, device) -> dict:
    from difgan.metrics.domain_net import DomainNet
    from difgan.metrics.features import DomainFeatures, extract

    net = DomainNet(1, 28, 10)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.pt"
        torch.save({"state_dict": net.state_dict()}, path)
        space = DomainFeatures(net, {}, path).to(device)
    out = {}
    for n in ns:
        real_u8, fake_u8 = images_like(dm, n, 0), images_like(dm, n, 1)
        real, t_real = timed(extract, space, real_u8, 250, device)
        fake, t_fake = timed(extract, space, fake_u8, 250, device)
        out[str(n)] = {"extract_real_s": t_real, "extract_fake_s": t_fake,
                       "metrics_s": metric_times(real["features"], fake["features"], fake["logits"], device)}
    return out


def inception_space(device):
    from difgan.metrics.features import InceptionFeatures, default_inception_path

    path = default_inception_path()
    if path.is_file():
        return InceptionFeatures(path).to(device), "official 2015-12-05 weights"
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    no_download = mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url",
                             return_value={})
    with no_download, mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    tmp = Path(tempfile.mkdtemp()) / "inception_random.pth"
    torch.save(net.state_dict(), tmp)
    return InceptionFeatures(tmp).to(device), "random weights, same architecture (offline)"


def bench_inception(dm, n_images, device) -> dict:
    from difgan.metrics.features import extract

    space, weights = inception_space(device)
    x = images_like(dm, n_images, 2)
    extract(space, x[:2], 2, device)  # warm-up
    _, t = timed(extract, space, x, 50, device)
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(1000, 2048, generator=g).abs(), torch.randn(1000, 2048, generator=g).abs()
    logits = torch.randn(1000, 1008, generator=g)
    metrics = metric_times(real, fake, logits, device, kid_subsets=1)
    metrics["kid_per_subset"] = metrics.pop("kid")
    return {"weights": weights, "timed_images": n_images, "extract_per_1000_s": round(t / n_images * 1000, 1),
            "metrics_n1000_s": metrics}


def bench_overhead(dm, cache_dir: Path, device) -> dict:
    """One epoch of the quickstart DCGAN vs one in-training evaluation at the default settings."""
    import lightning as L

    from difgan.build import build_model
    from difgan.confdir import compose_config
    from difgan.metrics.config import settings_from_config
    from difgan.metrics.evaluation import Evaluator

    cfg = compose_config("run", ["experiment=quickstart"])
    model = build_model(cfg.model, dm.image_shape, dm.num_classes)
    trainer = L.Trainer(max_epochs=1, accelerator=device.type, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    _, epoch_s = timed(trainer.fit, model, datamodule=dm)
    model.to(device)
    sec = cfg.metrics.during_training
    settings = settings_from_config(cfg.metrics)
    ev = Evaluator(dm, settings, cache_dir, list(sec.metrics), settings.spaces_for(dm.source), n_real=sec.n,
                   kid_subsets=sec.kid_subsets)
    _, prepare_s = timed(ev.prepare, device)
    ev.run(model, int(sec.n))  # first call pays one-off costs (as the callback's on_fit_start does)
    _, eval_s = timed(ev.run, model, int(sec.n))
    return {"epoch_s": epoch_s, "batches": trainer.num_training_batches, "evaluation_s": eval_s,
            "prepare_once_s": prepare_s, "fraction": round(eval_s / epoch_s, 4),
            "settings": {"n": sec.n, "metrics": list(sec.metrics), "kid_subsets": sec.kid_subsets,
                         "every_n_epochs": sec.every_n_epochs, "space": ev.space_names}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[2000, 10000])
    p.add_argument("--inception-images", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=".cache/difgan", help="where the default domain network is cached")
    p.add_argument("--skip", nargs="*", default=[], choices=["domain", "inception", "overhead"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = {"device": str(device), "threads": args.threads, "torch": torch.__version__,
           "machine": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        dm = digits_datamodule(Path(tmp))
        if "domain" not in args.skip:
            out["domain"] = bench_domain(dm, args.n, device)
        if "inception" not in args.skip:
            out["inception"] = bench_inception(dm, args.inception_images, device)
        if "overhead" not in args.skip:
            out["training_overhead"] = bench_overhead(dm, Path(args.cache_dir), device)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
