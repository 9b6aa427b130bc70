"""Sampling and training speed of the few-step hybrids (DDGAN, DifGAN) next to DDPM (1000 ancestral steps),
DDIM (50 steps) and DCGAN at the same resolution, in one process. Prints JSON.

    python benchmarks/hybrid_sampling_speed.py                       # 32 px, the configs' default widths, CPU
    python benchmarks/hybrid_sampling_speed.py --n 256 --ddpm-n 64 --device cuda --repeats 5

Every model is built from its config (``model=<name>``, the widths ``experiment=digits_budget`` trains) for
``--resolution`` px, 1 channel, with its initial weights (speed does not depend on training).

- Sampling: ``module.sample(n)`` (EMA network, eval mode, no gradients), ``--n`` images per call
  (``--ddpm-n`` for the 1000-step sampler, which is otherwise too slow for a CPU benchmark); images/s per
  call, median over ``--repeats`` rounds, the models in a different order each round so background load
  hits all alike. ``network_calls`` per image is what the count of generator/UNet evaluations says.
- Training: one batch of ``--batch`` random images through the model's own training math outside
  Lightning (GANs: ``make_fake``, the discriminator update, the generator update, as ``training_step``
  does; DDPM: its loss and an Adam step), median images/s over ``--train-batches`` batches after one warm-up.

Ratios are against DCGAN and against DDPM-1000 measured in the same process and rounds. On a shared CPU
wall time measures the neighbours as much as the code: ``cpu_*`` figures use this process's CPU time
(exact with ``--threads 1``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from difgan.build import build_model
from difgan.confdir import compose_config
from difgan.models.gan import GANModule, GANStep

SAMPLERS = {  # name -> (model config, sample options, network calls per image)
    "dcgan": ("dcgan", {}, 1),
    "ddgan": ("ddgan", {}, None),
    "difgan": ("difgan", {}, None),
    "ddim50": ("ddpm", {"sampler": "ddim", "sampling_steps": 50}, 50),
    "ddpm1000": ("ddpm", {"sampler": "ddpm"}, 1000),
}
TRAIN = ("dcgan", "ddgan", "difgan", "ddpm")


def build(name: str, resolution: int, device: torch.device):
    cfg = compose_config("run", [f"model={name}", f"data.resolution={resolution}"])
    return build_model(cfg.model, (1, resolution, resolution), 0).to(device)


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall s, process CPU s) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    w, c = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - w, time.process_time() - c


def train_step_fn(module, batch: torch.Tensor):
    if isinstance(module, GANModule):
        opt_g, opt_d = module.build_optimizer("g"), module.build_optimizer("d")

        def step():
            s = GANStep(batch, None)
            s.fake = module.make_fake(s)
            d_loss = module.discriminator_loss(s)[0]
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = module.generator_loss(s)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        return step
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)

    def step():
        loss = module.loss(batch, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--n", type=int, default=64, help="images per sampling call")
    p.add_argument("--ddpm-n", type=int, default=4, help="images per DDPM-1000 call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train-batches", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip", nargs="*", default=[], help="sampler names to leave out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    models = {name: build(name, args.resolution, device) for name in {"dcgan", "ddgan", "difgan", "ddpm"}}
    names = [s for s in SAMPLERS if s not in args.skip]
    rounds: dict[str, list[tuple[float, float]]] = {s: [] for s in names}
    for r in range(args.repeats):
        order = names if r % 2 == 0 else list(reversed(names))
        for s in order:
            cfg_name, options, _ = SAMPLERS[s]
            n = args.ddpm_n if s == "ddpm1000" else args.n
            wall, cpu = timed(lambda m=models[cfg_name], n=n, o=options: m.sample(n, **o), device)
            rounds[s].append((n / wall, n / max(cpu, 1e-9)))
    sampling = {}
    for s in names:
        calls = SAMPLERS[s][2] or models[SAMPLERS[s][0]].steps
        sampling[s] = {"images_per_s": statistics.median(v[0] for v in rounds[s]),
                       "cpu_images_per_s": statistics.median(v[1] for v in rounds[s]),
                       "network_calls_per_image": calls, "rounds": [round(v[0], 3) for v in rounds[s]]}
    for s in names:
        for ref in ("dcgan", "ddpm1000"):
            if ref in sampling:
                for key in ("images_per_s", "cpu_images_per_s"):
                    sampling[s][f"{key.replace('images_per_s', 'ratio')}_vs_{ref}"] = (
                        sampling[s][key] / sampling[ref][key])

    batch = torch.rand(args.batch, 1, args.resolution, args.resolution, device=device) * 2 - 1
    training = {}
    steps = {name: train_step_fn(models[name], batch) for name in TRAIN}
    for name in TRAIN:
        steps[name]()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in TRAIN}
    for r in range(args.train_batches):
        for name in (TRAIN if r % 2 == 0 else reversed(TRAIN)):
            times[name].append(timed(steps[name], device))
    for name in TRAIN:
        training[name] = {"images_per_s": args.batch / statistics.median(t[0] for t in times[name]),
                          "cpu_images_per_s": args.batch / statistics.median(t[1] for t in times[name])}
    for name in TRAIN:
        training[name]["ratio_vs_dcgan"] = training[name]["images_per_s"] / training["dcgan"]["images_per_s"]
    params = {name: sum(p.numel() for p in m.sampling_network().parameters()) for name, m in models.items()}
    print(json.dumps({"resolution": args.resolution, "device": str(device), "threads": args.threads,
                      "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                      "sampling_network_params": params, "sampling": sampling, "training": training,
                      "settings": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
