"""Finding and safely loading checkpoints (``weights_only=True``: nothing is unpickled but tensors and
plain containers)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from difgan.errors import CheckpointError

LAST = Path("checkpoints") / "last.ckpt"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its ``checkpoints/last.ckpt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / LAST, p / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"no checkpoint in run folder {p}: expected {p / LAST}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load a difgan checkpoint with ``weights_only=True``; clear errors for corrupt or foreign files.
    ``mmap=True`` maps tensors from the file instead of reading them (a cheap check before a full load)."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - zipfile, EOF, unpickling, key and decode errors alike: unreadable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {p}: corrupt, truncated, or holds objects that are "
                              f"not allowed with weights_only=True ({first})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt.get("difgan", {}):
        raise CheckpointError(f"{p} is not a difgan checkpoint (no state_dict or difgan run config)")
    return ckpt


def check_compatible(ckpt: dict, module: torch.nn.Module, path: str | Path) -> None:
    """A checkpoint's weights must fit ``module``: same parameter and buffer names and shapes."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    if want == have:
        return
    trained_as = (ckpt["difgan"].get("config") or {}).get("model", {}).get("_target_", "another model")
    missing, unexpected = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    shapes = [f"{k} {have[k]} vs {want[k]}" for k in sorted(want.keys() & have.keys()) if want[k] != have[k]]
    detail = "; ".join(f"{what} {items[:3]}" for what, items in
                       (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items)
    raise CheckpointError(f"checkpoint {path} does not fit this run's model (it was trained as {trained_as} "
                          f"with its own model/data settings): {detail}")


def load_generative_module(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model a checkpoint was trained as, with its raw and EMA weights. Returns (module, cfg)."""
    from difgan.build import build_model

    ckpt = load_checkpoint(path, map_location)
    meta = ckpt["difgan"]
    cfg: DictConfig = OmegaConf.create(meta["config"])
    module = build_model(cfg.model, tuple(meta["image_shape"]), int(meta["num_classes"]))
    missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not match model {cfg.model._target_}: "
                              f"missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}")
    module.on_load_checkpoint(ckpt)
    return module.to(map_location).eval(), cfg
