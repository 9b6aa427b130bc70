"""StyleGAN2 and Diffusion-GAN training speed and memory, and our StyleGAN2 step against a public
plain-PyTorch StyleGAN2 (the ``stylegan2-pytorch`` package) in achieved FLOP/s. Prints JSON (and writes it
with --out).

    python benchmarks/stylegan2_throughput.py                               # 32 and 64 px, CPU
    python benchmarks/stylegan2_throughput.py --peer-path /work/benchpeers  # plus the peer comparison
    python benchmarks/stylegan2_throughput.py --device cuda --batch 32 --batches 50

1. ``throughput``: for ``model=stylegan2`` and ``model=diffusion_gan`` at equal settings (``--channel-base``,
   ``--channel-max``, ``--w-dim``, lazy R1 and path length on, as trained), training images/s of the real
   LightningModule under a Lightning ``Trainer`` over ``--batches`` batches after ``--warmup``, each in its
   own process so peak memory (RSS on CPU, ``max_memory_allocated`` on CUDA) is its own; the two models
   alternate over ``--repeats`` rounds so background load hits both alike. ``ratio_diffusion_over_stylegan2``
   = median Diffusion-GAN / median StyleGAN2 images/s per resolution (the issue asks >= 0.90).
2. ``peer``: one generator + discriminator forward and backward (non-saturating losses, no regularisers) of
   our networks and of stylegan2-pytorch's at the same resolution and batch; FLOPs counted by
   ``torch.utils.flop_counter``, time measured, achieved FLOP/s compared (``ratio_ours_over_peer``; >= 1.0
   asked). The peer is installed outside the project environment (``pip install --target DIR
   stylegan2-pytorch einops kornia kornia_rs --no-deps``) and only ``--peer-path`` puts it on ``sys.path``. It
   asserts ``torch.cuda.is_available()`` at import and imports ``aim``, ``fire``, ``retry`` and
   ``vector_quantize_pytorch``, none of which its networks use: the import runs with the assert patched
   (PITFALLS) and stand-in modules for the four.
3. ``params``: total parameters (generator with mapping + discriminator) of ``stylegan2_seed001`` and
   ``diffusion_gan_seed001`` at 32/48/64 px, like seed 001's table 6 (48 px: power-of-two resolutions only
   here, so none).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _overrides(args) -> list[str]:
    return [f"model.channel_base={args.channel_base}", f"model.channel_max={args.channel_max}",
            f"model.w_dim={args.w_dim}", f"model.latent_dim={args.w_dim}",
            f"model.mapping_layers={args.mapping}"]


def _build(name: str, resolution: int, overrides: list[str]):
    from difgan.build import build_model
    from difgan.confdir import compose_config

    cfg = compose_config("run", [f"model={name}", *overrides])
    return build_model(cfg.model, (3, resolution, resolution), 0)


def _now(device: torch.device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def worker(args) -> dict:
    """One model at one resolution: images/s of ``Trainer.fit`` and peak memory, in this process."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = _build(args.model, args.resolution, _overrides(args))
    n = args.batch * (args.warmup + args.batches)
    data = TensorDataset(torch.rand(n, 3, args.resolution, args.resolution) * 2 - 1, torch.zeros(n).long())
    marks: dict[str, tuple[float, float]] = {}

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if pl_module.batches_seen == args.warmup:
                marks["start"] = _now(device)
            marks["end"] = _now(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Clock()])
    trainer.fit(model, DataLoader(data, batch_size=args.batch, shuffle=False))
    wall = marks["end"][0] - marks["start"][0]
    cpu = marks["end"][1] - marks["start"][1]
    images = args.batch * args.batches
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"images_per_s": images / wall, "images_per_cpu_s": images / max(cpu, 1e-9),
            "peak_memory_mb": peak, "memory_kind": "cuda_allocated" if device.type == "cuda" else "rss",
            "params": sum(p.numel() for p in model.generator.parameters())
            + sum(p.numel() for p in model.discriminator.parameters())}


def run_worker(args, model: str, resolution: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model, "--resolution",
           str(resolution), *(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                               if k in ("batch", "batches", "warmup", "threads", "device", "channel_base",
                                        "channel_max", "w_dim", "mapping"))]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{model} @ {resolution}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(args) -> dict:
    results = {}
    for res in args.resolutions:
        rounds = {"stylegan2": [], "diffusion_gan": []}
        for r in range(args.repeats):
            order = ["stylegan2", "diffusion_gan"] if r % 2 == 0 else ["diffusion_gan", "stylegan2"]
            for model in order:
                rounds[model].append(run_worker(args, model, res))
        summary = {}
        for model, runs in rounds.items():
            summary[model] = {"images_per_s": statistics.median(x["images_per_s"] for x in runs),
                              "images_per_cpu_s": statistics.median(x["images_per_cpu_s"] for x in runs),
                              "peak_memory_mb": max(x["peak_memory_mb"] for x in runs),
                              "params": runs[0]["params"], "rounds": runs}
        summary["ratio_diffusion_over_stylegan2"] = (summary["diffusion_gan"]["images_per_s"]
                                                     / summary["stylegan2"]["images_per_s"])
        summary["cpu_ratio_diffusion_over_stylegan2"] = (summary["diffusion_gan"]["images_per_cpu_s"]
                                                         / summary["stylegan2"]["images_per_cpu_s"])
        results[str(res)] = summary
    return results


# ----------------------------------------------------------------------------- the peer
def import_peer(path: str):
    """stylegan2-pytorch's networks, imported from ``path`` with its CUDA assert patched and stand-ins for the
    modules its networks never use."""
    sys.path.insert(0, path)
    for name in ("aim", "fire", "retry"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    try:
        __import__("vector_quantize_pytorch")
    except ImportError:
        vq = types.ModuleType("vector_quantize_pytorch")
        vq.VectorQuantize = None  # only used with fq_layers
        sys.modules["vector_quantize_pytorch"] = vq
    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        from stylegan2_pytorch import stylegan2_pytorch as peer
    finally:
        torch.cuda.is_available = real
    return peer


def _measure(step, device: torch.device, repeats: int) -> tuple[float, float]:
    """(FLOPs of one call, median seconds of a call)."""
    from torch.utils.flop_counter import FlopCounterMode

    step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        step()
    times = []
    for _ in range(repeats):
        t0 = _now(device)[0]
        step()
        times.append(_now(device)[0] - t0)
    return float(counter.get_total_flops()), statistics.median(times)


def peer_comparison(args) -> dict:
    peer = import_peer(args.peer_path)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    results = {}
    for res in args.resolutions:
        results[str(res)] = compare_at(peer, args, res, device)
    return results


def compare_at(peer, args, res: int, device: torch.device) -> dict:
    """Our generator + discriminator step against the peer's at one resolution."""
    import torch.nn.functional as F

    from difgan.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

    torch.manual_seed(0)
    b, w = args.batch, args.w_dim
    g = StyleGAN2Generator(w, w, 3, res, args.mapping, args.channel_base, args.channel_max).to(device)
    d = StyleGAN2Discriminator(3, res, args.channel_base, args.channel_max).to(device)
    real = torch.rand(b, 3, res, res, device=device) * 2 - 1

    def ours():
        fake = g(torch.randn(b, w, device=device))
        (F.softplus(-d(fake)).mean() + F.softplus(-d(real)).mean()).backward()

    # the peer's widths: network_capacity * 2^(i+1) per block, capped at fmap_max
    pg = peer.Generator(res, w, network_capacity=args.peer_capacity, fmap_max=args.channel_max).to(device)
    pv = peer.StyleVectorizer(w, args.mapping).to(device)
    pd = peer.Discriminator(res, network_capacity=args.peer_capacity, fmap_max=args.channel_max).to(device)

    def theirs():
        styles = pv(torch.randn(b, w, device=device))[:, None].expand(-1, pg.num_layers, -1)
        fake = pg(styles, torch.rand(b, res, res, 1, device=device))
        (F.softplus(-pd(fake)[0]).mean() + F.softplus(-pd(real)[0]).mean()).backward()

    of, ot = _measure(ours, device, args.repeats)
    pf, pt = _measure(theirs, device, args.repeats)

    def count(*modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    return {"ours": {"flops": of, "seconds": ot, "flop_per_s": of / ot, "params": count(g, d)},
            "peer": {"flops": pf, "seconds": pt, "flop_per_s": pf / pt, "params": count(pg, pv, pd)},
            "ratio_ours_over_peer": (of / ot) / (pf / pt)}


def param_table() -> dict:
    table = {}
    for name in ("stylegan2_seed001", "diffusion_gan_seed001"):
        row = {}
        for res in (32, 48, 64):
            try:
                m = _build(name, res, [])
            except Exception as e:  # noqa: BLE001 - the config's own one-line error
                row[str(res)] = f"n/a ({str(e).split(': ', 1)[-1][:60]})"
                continue
            row[str(res)] = sum(p.numel() for p in m.generator.parameters()) + sum(
                p.numel() for p in m.discriminator.parameters())
        table[name] = row
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--channel-base", type=int, default=2048)
    p.add_argument("--channel-max", type=int, default=64)
    p.add_argument("--w-dim", type=int, default=128)
    p.add_argument("--mapping", type=int, default=4)
    p.add_argument("--peer-path", default=None, help="folder with stylegan2-pytorch installed (pip --target)")
    p.add_argument("--peer-capacity", type=int, default=4)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--resolution", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "model", "resolution")},
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch": torch.__version__}}
    if not args.skip_throughput:
        report["throughput"] = throughput(args)
    if args.peer_path:
        report["peer"] = peer_comparison(args)
    report["params"] = param_table()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
