"""Per-step cost of discriminator guidance relative to unguided sampling. Prints one JSON object.

    python benchmarks/guidance_cost.py                              # quickstart-size DDPM, 28 px, CPU
    python benchmarks/guidance_cost.py --device cuda --batch 256 --channels 64

One guided DDIM step is the UNet forward plus, inside the t window, one discriminator forward and backward
with respect to x_t (per discriminator of an ensemble). The time per step is the median over ``--rounds``
rounds of ``--steps``-step DDIM runs; unguided and guided runs alternate within each round (the order flips
every round) so background load hits both alike; ``ratio_paired_median`` is the median of the per-round
ratios. Discriminators are fresh ``TimeConvDiscriminator``s (the cost does not depend on their weights).
Wall-clock ratios on a loaded machine are noisy, so the FLOPs of one step are counted too
(``torch.utils.flop_counter``: convolutions and matmuls): ``flops_ratio`` = (UNet forward + k x (D forward
+ backward to x_t)) / UNet forward, a load-independent estimate of the same ratio.

    python -m benchmarks.guidance_cost --batch 16 --steps 5 --rounds 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from difgan.diffusion.discriminator_guidance import DiscriminatorGuidance
from difgan.models.ddpm import DDPM
from difgan.nets.time_discriminator import TimeConvDiscriminator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--channels", type=int, default=32, help="UNet base width (quickstart: 32)")
    ap.add_argument("--d-channels", type=int, default=32, help="discriminator base width")
    ap.add_argument("--d-depth", type=int, default=3)
    ap.add_argument("--ensemble", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = DDPM((1, args.resolution, args.resolution), timesteps=1000,
                 unet={"channels": args.channels, "channel_mult": (1, 2, 2), "num_res_blocks": 1,
                       "attention_resolutions": (), "dropout": 0.0}).to(device).eval()
    discs = [TimeConvDiscriminator(1, args.resolution, args.d_channels, args.d_depth).to(device).eval()
             .requires_grad_(False) for _ in range(max(args.ensemble))]
    noise = torch.randn(args.batch, 1, args.resolution, args.resolution, device=device)

    def run(hook) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.sample(args.batch, noise=noise, sampler="ddim", sampling_steps=args.steps, use_ema=False,
                     guidance=hook)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.steps

    hooks = {f"guided_{k}d": DiscriminatorGuidance(discs[:k], weight=1.0) for k in args.ensemble}
    run(None)
    for h in hooks.values():
        run(h)  # warm-up
    times: dict[str, list[float]] = {"unguided": [], **{k: [] for k in hooks}}
    for r in range(args.rounds):
        order = [("unguided", None), *hooks.items()]
        for name, hook in (order if r % 2 == 0 else order[::-1]):
            times[name].append(run(hook))
    t = torch.full((args.batch,), 500, device=device)
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model.unet(noise, t)
    unet_flops = fc.get_total_flops()
    x = noise.detach().clone().requires_grad_(True)
    with FlopCounterMode(display=False) as fc:  # what logit_gradient does: D forward, backward to x_t
        discs[0](x, t).sum().backward()
    d_flops = fc.get_total_flops()
    result = {
        "benchmark": "guidance_cost", "device": str(device), "batch": args.batch,
        "resolution": args.resolution, "unet_channels": args.channels, "d_channels": args.d_channels,
        "d_depth": args.d_depth, "steps": args.steps, "rounds": args.rounds,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "s_per_step_median": {k: statistics.median(v) for k, v in times.items()},
        "ratio_paired_median": {k: statistics.median(g / u for g, u in zip(times[k], times["unguided"]))
                                for k in hooks},
        "flops_per_step": {"unet_forward": unet_flops, "discriminator_forward_backward": d_flops},
        "flops_ratio": {f"guided_{k}d": (unet_flops + k * d_flops) / unet_flops for k in args.ensemble},
        "params": {"unet": sum(p.numel() for p in model.unet.parameters()),
                   "discriminator": sum(p.numel() for p in discs[0].parameters())},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
