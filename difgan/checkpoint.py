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


def _module_prefix(module: torch.nn.Module, net: torch.nn.Module) -> str:
    for name, sub in module.named_modules():
        if sub is net:
            return f"{name}." if name else ""
    raise ValueError("network is not a submodule of the model")


def load_pretrained(module, path: str | Path, networks: list[str] | None = None,
                    use_ema: bool = True) -> dict:
    """Start ``module`` from another run's trained weights (fine-tuning, guidance, feedback), not a resume:
    optimizers, counters and adaptive state start fresh.

    Each network named by ``module.pretrained_networks()`` that the checkpoint holds (or each of
    ``networks``, which must all be there) is loaded strictly, by the same attribute path. With ``use_ema``
    the sampling network takes the checkpoint's EMA weights when it has them (they are what that run
    sampled with). The EMA then restarts from the loaded weights. Returns {network: source prefix}."""
    p = resolve_checkpoint(path)
    state = load_checkpoint(p)["state_dict"]
    candidates = module.pretrained_networks()
    wanted = list(networks) if networks else list(candidates)
    unknown = sorted(set(wanted) - set(candidates))
    if unknown:
        raise CheckpointError(f"model.pretrained_networks: {unknown[0]!r} is not a network of "
                              f"{type(module).__name__}; valid: {', '.join(candidates)}")
    sampling = module.sampling_network()
    loaded = {}
    for name in wanted:
        net = candidates[name]
        prefix = _module_prefix(module, net)
        if use_ema and net is sampling and any(k.startswith("ema.averaged.") for k in state):
            prefix = "ema.averaged."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            if networks:
                raise CheckpointError(f"{p} holds no weights for network {name!r} (looked for {prefix}*)")
            continue
        try:
            net.load_state_dict(sub, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"{p}: network {name!r} does not fit this model: "
                                  f"{' '.join(first[1:3]) if len(first) > 1 else first[0]}") from None
        loaded[name] = prefix
    if not loaded:
        raise CheckpointError(f"{p} holds none of this model's networks ({', '.join(wanted)})")
    module.on_pretrained_loaded()
    return loaded
