"""DCGAN training speed through the suite next to a plain PyTorch loop doing the same work. Prints JSON.

    python benchmarks/dcgan_throughput.py                                  # batch 64, 28 px, CPU
    python benchmarks/dcgan_throughput.py --batch 128 --batches 300 --repeats 5 --threads 2 --device cuda

The suite: the real ``DCGAN`` LightningModule, ``ImageDataModule`` (mnist_offline, in memory) and Lightning
``Trainer`` built from the run config exactly as ``python -m difgan.run`` builds them (``build_callbacks``:
checkpoint every epoch, sample grid, resource monitor; CSV logger; the progress bar on; ``metrics=none``).
The plain loop: the same generator, discriminator, EMA and Adam optimizers (same initial weights), the same
uint8 images served in the same order (``EpochSeededSampler``) and turned into floats the same way, and per
batch the same work as ``GANModule.training_step``: one generator forward, a discriminator step on real and
detached fakes, a generator step through a frozen discriminator (non-saturating loss), an EMA update.
Neither loop does anything else.

Throughput is images per second over ``--batches`` batches after ``--warmup`` batches (timed inside the
run: the suite's time includes its data loading, hooks, logging, progress bar and the epoch-end checkpoints
that fall in the window; Trainer construction is reported apart as ``setup_s``). Suite and plain runs
alternate (suite first in even rounds, plain first in odd ones) so background load hits both alike; the
report gives each round and the medians, and ``ratio`` = median suite / median plain images/s. On a shared
CPU, wall time measures the neighbours as much as the code: ``cpu_ratio`` compares images per CPU-second of
this process instead (exact with ``--threads 1``; more threads add OpenMP spin time to both loops).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate

from difgan.build import build_datamodule, build_model
from difgan.confdir import compose_config
from difgan.data.datamodule import EpochSeededSampler, to_signed_float
from difgan.loggers import build_loggers
from difgan.losses import discriminator_bce, generator_nonsaturating
from difgan.run import build_callbacks


class Clock(L.Callback):
    """Wall and CPU time from the end of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.batches = warmup, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = _now(pl_module.device)
        if pl_module.batches_seen == self.warmup:
            self.t0 = now
        self.t1, self.batches = now, pl_module.batches_seen - self.warmup


def _now(device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process), after the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def _rates(images: int, t0: tuple[float, float], t1: tuple[float, float]) -> dict:
    wall, cpu = t1[0] - t0[0], t1[1] - t0[1]
    return {"images_per_s": images / wall, "images_per_cpu_s": images / cpu, "seconds": wall, "cpu_s": cpu}


def compose_run(batch: int, base_channels: int, device: str, extra: list[str]):
    return compose_config("run", overrides=[
            "model=dcgan", "data=mnist_offline", f"data.batch_size={batch}",
            f"model.base_channels={base_channels}", "logger=csv", "metrics=none",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", "trainer.precision=32-true",
            *extra])


def suite(cfg, datamodule, warmup: int, batches: int, workdir: Path) -> dict:
    t_setup = time.perf_counter()
    L.seed_everything(cfg.seed, verbose=False)
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    model = build_model(cfg.model, datamodule.image_shape, datamodule.num_classes)
    clock = Clock(warmup)
    callbacks = build_callbacks(cfg, run_dir, datamodule) + [clock]
    loggers = build_loggers(cfg.logger, run_dir, run_name="bench", config={})
    trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), logger=loggers, callbacks=callbacks,
                          max_steps=2 * (warmup + batches), max_epochs=-1, enable_model_summary=False)
    setup_s = time.perf_counter() - t_setup
    t_fit = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the progress bar and summary lines; stdout is the JSON
        trainer.fit(model, datamodule=datamodule)
    fit_s = time.perf_counter() - t_fit
    assert clock.batches == batches, (clock.batches, batches)
    return {**_rates(batches * cfg.data.batch_size, clock.t0, clock.t1), "setup_s": setup_s, "fit_s": fit_s}


def plain(cfg, datamodule, warmup: int, batches: int, device: torch.device) -> dict:
    L.seed_everything(cfg.seed, verbose=False)
    # the same initial weights as the suite's module (same seed, same constructor)
    module = build_model(cfg.model, datamodule.image_shape, datamodule.num_classes)
    G, D, ema = module.generator.to(device), module.discriminator.to(device), module.ema.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=module.lr, betas=module.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=module.lr, betas=module.betas)
    images = datamodule.split("train").images
    batch, n = cfg.data.batch_size, images.shape[0]
    sampler = EpochSeededSampler(n, cfg.seed)
    seen, done, t0 = 0, 0, None
    epoch = 0
    while done < warmup + batches:
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(sampler))
        for i in range(n // batch):
            real = to_signed_float(images[order[i * batch:(i + 1) * batch]].to(device, non_blocking=True))
            z = torch.randn(batch, module.latent_dim, device=device)
            fake = G(z)
            d_loss = discriminator_bce(D(real), D(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            D.requires_grad_(False)
            g_loss = generator_nonsaturating(D(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            D.requires_grad_(True)
            seen += batch
            ema.update(G, batch, seen)
            done += 1
            if done == warmup:
                t0 = _now(device)
            if done == warmup + batches:
                break
        epoch += 1
    return _rates(batches * batch, t0, _now(device))


def per_round(rounds: list[dict], metric: str) -> list[float]:
    return [round(r["suite"][metric] / r["plain"][metric], 4) for r in rounds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--base-channels", type=int, default=64)
    # Many short alternating rounds: on a shared machine the speed drifts by +-10% from minute to minute,
    # so the median of many paired rounds is steadier than a few long ones.
    parser.add_argument("--batches", type=int, default=60, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches before them")
    parser.add_argument("--repeats", type=int, default=8, help="rounds of (suite, plain), alternating order")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--override", nargs="*", default=[],
                        help="further run-config overrides (e.g. trainer.enable_progress_bar=false)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            cfg = compose_run(batch, args.base_channels, args.device, args.override)
            datamodule = build_datamodule(cfg.data, seed=cfg.seed)
            datamodule.setup()
            rounds = []
            for r in range(args.repeats):
                order = ("suite", "plain") if r % 2 == 0 else ("plain", "suite")
                row = {}
                for which in order:
                    if which == "suite":
                        row[which] = suite(cfg, datamodule, args.warmup, args.batches, Path(tmp))
                    else:
                        row[which] = plain(cfg, datamodule, args.warmup, args.batches, device)
                rounds.append(row)
                print(f"batch {batch} round {r}: suite {row['suite']['images_per_s']:.1f} img/s, "
                      f"plain {row['plain']['images_per_s']:.1f} img/s", file=sys.stderr)
            med = {(w, m): statistics.median(r[w][m] for r in rounds)
                   for w in ("suite", "plain") for m in ("images_per_s", "images_per_cpu_s")}
            results.append({
                "batch": batch, "resolution": cfg.data.resolution, "base_channels": args.base_channels,
                "suite_images_per_s": round(med["suite", "images_per_s"], 1),
                "plain_images_per_s": round(med["plain", "images_per_s"], 1),
                "ratio": round(med["suite", "images_per_s"] / med["plain", "images_per_s"], 4),
                "ratio_per_round": per_round(rounds, "images_per_s"),
                "suite_images_per_cpu_s": round(med["suite", "images_per_cpu_s"], 1),
                "plain_images_per_cpu_s": round(med["plain", "images_per_cpu_s"], 1),
                "cpu_ratio": round(med["suite", "images_per_cpu_s"] / med["plain", "images_per_cpu_s"], 4),
                "cpu_ratio_per_round": per_round(rounds, "images_per_cpu_s"),
                "suite_setup_s": round(statistics.median(r["suite"]["setup_s"] for r in rounds), 2),
                "rounds": [{k: {m: round(v, 3) for m, v in d.items()} for k, d in r.items()} for r in rounds],
            })
    print(json.dumps({
        "benchmark": "dcgan_throughput", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": args.threads, "timed_batches": args.batches, "warmup_batches": args.warmup,
        "repeats": args.repeats, "torch": torch.__version__, "lightning": L.__version__,
        "cpu": platform.processor() or platform.machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
