"""DDPM speed: training throughput of our UNet next to diffusers' ``UNet2DModel`` in the same process, and
sampling throughput of DDPM and DDIM. Prints one JSON object.

    python benchmarks/ddpm_throughput.py                       # quickstart and CIFAR-10 networks, on CPU
    python benchmarks/ddpm_throughput.py --configs ddpm --threads 2 --device cuda

Training: one step is q_sample -> network -> MSE on epsilon -> backward -> Adam step, for a batch of
``--batch`` images; the time is the median over ``--rounds`` rounds, our network and the peer's back to
back in each round, the order flipping every round, so background load hits both alike
(``achieved_flops_ratio_paired_median`` compares the two within each round). Model FLOPs per image are
counted with ``torch.utils.flop_counter`` for forward + backward (convolutions, matmuls, attention;
elementwise ops and normalisation are not counted, as usual), so achieved FLOP/s = FLOPs per image x
images per second compare the two implementations of (nearly) the same network. The peer is
``diffusers.UNet2DModel`` with the same widths, blocks per level, attention levels, dropout, group norm and
one attention head; it is optional (``pip install diffusers`` into the environment that runs this; it is
not a dependency of difgan).

Sampling: images per second of ``DDPM.sample`` with the quickstart model: DDIM at 10, 50 and 100 steps, and
DDPM over all T steps (by default extrapolated from ``--ddpm-timed-steps`` timed steps, since every step costs
the same network evaluation; ``--full-ddpm`` runs all T).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import (
    FlopCounterMode,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from difgan.diffusion import NoiseSchedule, q_sample

CONFIGS = {"ddpm": "quickstart UNet (model=ddpm)", "ddpm_cifar": "Ho et al. CIFAR-10 UNet (model=ddpm_cifar)"}
SHAPES = {"ddpm": (1, 28, 28), "ddpm_cifar": (3, 32, 32)}

# FlopCounterMode knows the CUDA attention kernels but not the CPU one; count it with the same formula.
try:

    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _cpu_sdpa_backward_flop(
        grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
    ) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
except (AttributeError, RuntimeError, ValueError):  # older torch, or already registered
    pass


def model_config(name: str):
    from difgan.confdir import compose_config

    return compose_config("run", [f"model={name}"]).model


def build_ours(name: str):
    from difgan.build import build_model

    return build_model(model_config(name), SHAPES[name], 0)


def build_peer(module) -> tuple[torch.nn.Module | None, dict]:
    """diffusers' UNet2DModel configured like our UNet, or None with the reason."""
    try:
        import diffusers
        from diffusers import UNet2DModel
    except ImportError:
        return None, {"skipped": "diffusers is not installed (pip install diffusers to compare)"}
    o = module.unet_options
    mult = list(o["channel_mult"])
    c, res, _ = module.image_shape
    sizes = [res // 2**i for i in range(len(mult))]
    attn = set(module.unet.attention_at)
    config = dict(
        sample_size=res,
        in_channels=c,
        out_channels=c,
        layers_per_block=int(o["num_res_blocks"]),
        block_out_channels=tuple(int(o["channels"]) * m for m in mult),
        down_block_types=tuple("AttnDownBlock2D" if s in attn else "DownBlock2D" for s in sizes),
        up_block_types=tuple("AttnUpBlock2D" if s in attn else "UpBlock2D" for s in reversed(sizes)),
        dropout=float(o["dropout"]),
        attention_head_dim=None,
        norm_num_groups=32,
        norm_eps=1e-6,
        add_attention=bool(o["mid_attention"]),
        flip_sin_to_cos=False,
        freq_shift=1,
    )
    if int(o["attention_heads"]) != 1:
        return None, {"skipped": "peer mapping covers one attention head only"}
    peer = UNet2DModel(**config)
    return peer, {
        "class": "diffusers.UNet2DModel",
        "diffusers": diffusers.__version__,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
    }


def params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def make_step(
    net: torch.nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    is_peer: bool,
    with_optimizer: bool = True,
) -> Callable[[], None]:
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    T = schedule.num_timesteps

    def step() -> None:
        t = torch.randint(0, T, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        xt = q_sample(schedule, x0, t, noise)
        out = net(xt, t).sample if is_peer else net(xt, t)
        loss = F.mse_loss(out, noise)
        loss.backward()
        if with_optimizer:
            opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], iters: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def bench_training(name: str, batch: int, rounds: int, iters: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    module = build_ours(name).to(device)
    net = module.unet.train()
    schedule = module.schedule
    x0 = torch.rand((batch, *module.image_shape), device=device) * 2 - 1
    entries = {"ours": (net, False)}
    peer, peer_info = build_peer(module)
    if peer is not None:
        entries["diffusers"] = (peer.to(device).train(), True)
    steps = {k: make_step(n, schedule, x0, p) for k, (n, p) in entries.items()}
    flops = {
        k: count_flops(make_step(n, schedule, x0, p, with_optimizer=False)) / batch
        for k, (n, p) in entries.items()
    }
    for step in steps.values():  # warm-up (allocator, oneDNN primitive caches)
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds):  # the order flips every round, so drift in the machine's speed hits both alike
        for k in list(steps) if r % 2 == 0 else list(reversed(steps)):
            times[k].append(timed(steps[k], iters, device))
    result = {"description": CONFIGS[name], "image_shape": list(module.image_shape), "batch": batch}
    for k, (n, _) in entries.items():
        sec = statistics.median(times[k])
        ips = batch / sec
        result[k] = {
            "params": params(n),
            "train_flops_per_image": flops[k],
            "images_per_s": round(ips, 3),
            "achieved_gflops_per_s": round(flops[k] * ips / 1e9, 3),
            "step_s_median": round(sec, 4),
            "step_s_all": [round(s, 4) for s in times[k]],
        }
    if peer is None:
        result["diffusers"] = peer_info
    else:
        result["diffusers"].update(peer_info)
        result["ours_vs_peer"] = {
            "images_per_s_ratio": round(
                result["ours"]["images_per_s"] / result["diffusers"]["images_per_s"], 3
            ),
            "achieved_flops_ratio": round(
                result["ours"]["achieved_gflops_per_s"] / result["diffusers"]["achieved_gflops_per_s"], 3
            ),
            # paired within each round (the two ran back to back): steadier than the ratio of medians
            "achieved_flops_ratio_paired_median": round(statistics.median(
                (flops["ours"] / o) / (flops["diffusers"] / p)
                for o, p in zip(times["ours"], times["diffusers"])), 3),
        }
    return result


def bench_sampling(
    name: str, batch: int, ddim_steps: list[int], ddpm_timed_steps: int, full_ddpm: bool, device: torch.device
) -> dict:
    module = build_ours(name).to(device).eval()
    T = module.num_timesteps
    noise = torch.randn((batch, *module.image_shape), device=device)
    module.sample(batch, noise=noise, sampling_steps=2)  # warm-up
    out = {"model": f"model={name}", "batch": batch, "timesteps": T}

    def run(**opts) -> float:
        sync(device)
        start = time.perf_counter()
        module.sample(batch, noise=noise, **opts)
        sync(device)
        return time.perf_counter() - start

    for k in ddim_steps:
        sec = run(sampler="ddim", sampling_steps=k)
        out[f"ddim_{k}"] = {"images_per_s": round(batch / sec, 3), "seconds": round(sec, 3)}
    if full_ddpm or ddpm_timed_steps >= T:
        sec = run(sampler="ddpm")
        out["ddpm"] = {"images_per_s": round(batch / sec, 4), "seconds": round(sec, 3), "steps": T}
    else:  # every DDPM step is one network evaluation plus an update: time some, scale to T
        sec = run(sampler="ddim", sampling_steps=ddpm_timed_steps, eta=1.0) * T / ddpm_timed_steps
        out["ddpm"] = {
            "images_per_s": round(batch / sec, 4),
            "seconds": round(sec, 3),
            "steps": T,
            "extrapolated_from_steps": ddpm_timed_steps,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        help="training batch per config (default: 64 for ddpm, 8 for ddpm_cifar on CPU)",
    )
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=2, help="training steps per timed round")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sample-config", default="ddpm", choices=list(CONFIGS))
    ap.add_argument("--sample-batch", type=int, default=16)
    ap.add_argument("--ddim-steps", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--ddpm-timed-steps", type=int, default=100)
    ap.add_argument("--full-ddpm", action="store_true")
    ap.add_argument("--skip-sampling", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    defaults = {"ddpm": 64, "ddpm_cifar": 8 if device.type == "cpu" else 128}
    batches = args.batch or [defaults[c] for c in args.configs]
    if len(batches) == 1:
        batches = batches * len(args.configs)
    report = {
        "benchmark": "ddpm_throughput",
        "command": "python benchmarks/ddpm_throughput.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v not in (None, False) and v is not True
        )
        + (" --full-ddpm" if args.full_ddpm else "")
        + (" --skip-sampling" if args.skip_sampling else ""),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "training": {},
    }
    for name, batch in zip(args.configs, batches):
        report["training"][name] = bench_training(name, batch, args.rounds, args.iters, device)
    if not args.skip_sampling:
        report["sampling"] = bench_sampling(
            args.sample_config,
            args.sample_batch,
            args.ddim_steps,
            args.ddpm_timed_steps,
            args.full_ddpm,
            device,
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
