"""Small torch.distributed helpers for metrics: every rank computes, nobody hangs (torchmetrics #2684)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) without an initialized process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(t: Tensor) -> list[Tensor]:
    """Every rank's 2-D (or 1-D) tensor, on CPU, in rank order (rows may differ in number)."""
    rank, size = world()
    if size == 1:
        return [t.cpu()]
    dev = _comm_device()
    n = torch.tensor([t.shape[0]], device=dev)
    counts = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(counts, n)
    counts = [int(c) for c in counts]
    padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[: t.shape[0]] = t.to(dev)
    out = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(out, padded)
    return [o[:c].cpu() for o, c in zip(out, counts)]


def broadcast_flag(value: bool) -> bool:
    """Rank 0's ``value`` on every rank."""
    rank, size = world()
    if size == 1:
        return value
    obj = [value]
    dist.broadcast_object_list(obj, src=0)
    return bool(obj[0])


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def my_chunks(n: int, chunk: int, rank: int | None = None, size: int | None = None) -> list[tuple[int, int]]:
    """The (start, end) ranges of ``n`` items in chunks of ``chunk`` that this rank handles (round-robin).

    The chunking depends only on ``n`` and ``chunk``, never on the number of ranks, so the items (and the
    random seeds tied to chunk numbers) are the same in one process and under DDP.
    """
    if rank is None or size is None:
        rank, size = world()
    starts = range(0, n, chunk)
    return [(s, min(n, s + chunk)) for k, s in enumerate(starts) if k % size == rank]


def gather_chunks(local: Tensor, n: int, chunk: int) -> Tensor:
    """Reassemble the rows each rank produced for its ``my_chunks(n, chunk)`` (concatenated in that order)
    into all ``n`` rows in global order, on every rank."""
    rank, size = world()
    if size == 1:
        return local.cpu()
    parts = gather_rows(local)
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        offset = 0
        for s, e in my_chunks(n, chunk, r, size):
            out[s:e] = part[offset:offset + e - s]
            offset += e - s
    return out
