"""Kill-and-requeue on the offline digits (issue 12): is a SIGKILLed, requeued run the same as one that never
stopped, and what do atomic checkpoint saves cost?

    python benchmarks/kill_resume.py --out /tmp/kill_resume [--kimg 6.4] [--kill-after-batches 30]

1. ``straight``: ``experiment=digits_budget model=dcgan`` for ``--kimg`` thousand images (metrics off, a
   checkpoint every 10 batches), uninterrupted.
2. ``requeued``: the same command in its own folder, SIGKILLed once its checkpoint has passed
   ``--kill-after-batches`` batches (mid-epoch: 78 batches an epoch), then the same command again in the same
   folder (what a requeued cluster job does).
3. Compares the two final checkpoints tensor by tensor (weights, EMA, BatchNorm statistics, optimizer states),
   and the CSV history (every logged step once).
4. Times checkpoint saves of that model: Lightning's TorchCheckpointIO vs difgan's AtomicCheckpointIO
   (temp file in the folder + fsync + rename), alternating, ``--saves`` each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def command(run_dir: Path, kimg: float) -> list[str]:
    return [sys.executable, "-m", "difgan.run", "experiment=digits_budget", "model=dcgan", f"max_kimg={kimg}",
            "metrics=none", "logger=csv", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
            "callbacks.checkpoint.every_n_train_steps=20", f"hydra.run.dir={run_dir}"]


def run(run_dir: Path, kimg: float, kill_after: int | None = None) -> float:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    log = open(run_dir.with_suffix(".log"), "a")  # noqa: SIM115
    start = time.perf_counter()
    proc = subprocess.Popen(command(run_dir, kimg), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if kill_after is not None:
        last = run_dir / "checkpoints" / "last.ckpt"
        while proc.poll() is None:
            if last.is_file():
                try:
                    seen = torch.load(last, weights_only=True, mmap=True)["difgan"]["batches_seen"]
                except Exception:  # noqa: BLE001 - never happens with atomic saves; retry
                    seen = 0
                if seen >= kill_after:
                    proc.kill()
                    break
            time.sleep(0.2)
    proc.wait()
    log.close()
    return time.perf_counter() - start


def compare(a: dict, b: dict, path: str = "") -> list[str]:
    if isinstance(a, torch.Tensor):
        return [] if torch.equal(a, b) else [path]
    if isinstance(a, dict):
        return [d for k in a for d in compare(a[k], b[k], f"{path}.{k}")] if a.keys() == b.keys() else [path]
    if isinstance(a, list | tuple):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in compare(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def time_saves(ckpt: dict, folder: Path, n: int) -> dict:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from difgan.callbacks.checkpoint import AtomicCheckpointIO

    ios = {"lightning": TorchCheckpointIO(), "atomic": AtomicCheckpointIO()}
    times: dict[str, list[float]] = {k: [] for k in ios}
    for i in range(n):
        for name in (list(ios) if i % 2 == 0 else list(ios)[::-1]):
            t = time.perf_counter()
            ios[name].save_checkpoint(ckpt, folder / f"{name}.ckpt")
            times[name].append(time.perf_counter() - t)
    size = (folder / "atomic.ckpt").stat().st_size
    medians = {f"{k}_median_ms": round(1000 * statistics.median(v), 2) for k, v in times.items()}
    return {"bytes": size, **medians}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--kimg", type=float, default=6.4)
    p.add_argument("--kill-after-batches", type=int, default=30)
    p.add_argument("--saves", type=int, default=20)
    p.add_argument("--requeue-again", action="store_true",
                   help="only requeue the existing requeued/ folder once more (after another interruption)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    straight, requeued = args.out / "straight", args.out / "requeued"
    t_straight = t_first = float("nan")
    if not args.requeue_again:
        t_straight = run(straight, args.kimg)
        t_first = run(requeued, args.kimg, kill_after=args.kill_after_batches)
    killed_at = torch.load(requeued / "checkpoints" / "last.ckpt",
                           weights_only=True)["difgan"]["batches_seen"]
    t_second = run(requeued, args.kimg)
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(requeued / "checkpoints" / "last.ckpt", weights_only=True)
    diffs = compare({"state_dict": a["state_dict"], "optimizer_states": a["optimizer_states"]},
                    {"state_dict": b["state_dict"], "optimizer_states": b["optimizer_states"]})
    sys.path.insert(0, str(REPO))
    from difgan.loggers import read_metrics

    steps = [int(r["step"]) for r in read_metrics(requeued) if "train/d_loss" in r]
    result = {
        "kimg": args.kimg, "batches": int(a["difgan"]["batches_seen"]),
        "killed_after_batches": int(killed_at),
        "identical_tensors": not diffs, "differing": diffs[:5],
        "csv_steps_once": sorted(steps) == list(range(int(a["difgan"]["batches_seen"]))),
        "csv_rows": len(steps),
        "superseded_files": sorted(p.name for p in (requeued / "logs").glob("*superseded*")),
        "wall_s": {"straight": round(t_straight, 1), "killed_part": round(t_first, 1),
                   "requeued_part": round(t_second, 1)},
        "save_timing": time_saves(a, args.out, args.saves),
        "torch": torch.__version__,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
