"""Starting from another run's weights (``model.pretrained``) is not resuming, and a run folder's own
``last.ckpt`` is continued only under the ``resume`` policy. Tiny DCGANs through the real Hydra entry point
(in this process)."""

from __future__ import annotations

import pytest
import torch

from difgan.build import build_model
from difgan.confdir import compose_config
from tests.integration.runner import hydra_main, load, one_line_error, probe, tiny

BATCH = 8  # mnist_root: 36 training images -> 4 batches an epoch


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, mnist_root):
    """A trained run to start from: 3 batches (its EMA and raw generator differ)."""
    run_dir = tmp_path_factory.mktemp("pretrained") / "source"
    result = hydra_main(*tiny(run_dir, mnist_root.data_dir, "trainer.max_steps=6"))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, load(run_dir / "checkpoints" / "last.ckpt")


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrained_run_starts_from_the_weights_with_fresh_ema_optimizers_and_counters(
        tmp_path, mnist_root, source_run):
    source_dir, source = source_run
    src = source["state_dict"]
    assert not _same(_sub(src, "_generator."), _sub(src, "ema.averaged."))  # so the test can tell them apart
    result = hydra_main(*tiny(tmp_path / "tuned", mnist_root.data_dir, "trainer.max_steps=2",
                              f"model.pretrained={source_dir}",
                              *probe("start", "StateAtStart", path=tmp_path / "start.pt")))
    assert result.returncode == 0, result.stderr[-3000:]
    start = load(tmp_path / "start.pt")
    state = start["state_dict"]
    # the sampling network from the source's EMA weights (what it sampled with), the discriminator raw
    assert _same(_sub(state, "_generator."), _sub(src, "ema.averaged."))
    assert _same(_sub(state, "_discriminator."), _sub(src, "_discriminator."))
    # the EMA restarts from the loaded weights; optimizers and counters start fresh (not a resume)
    assert _same(_sub(state, "ema.averaged."), _sub(state, "_generator."))
    assert all(not opt["state"] for opt in start["optimizer_states"])
    assert (start["global_step"], start["batches_seen"], start["images_seen"]) == (0, 0, 0)
    final = load(tmp_path / "tuned" / "checkpoints" / "last.ckpt")
    assert final["difgan"]["batches_seen"] == 1 and final["global_step"] == 2


def test_pretrained_raw_weights_and_named_networks(tmp_path, source_run, mnist_root):
    source_dir, source = source_run
    src = source["state_dict"]
    base = tiny(tmp_path, mnist_root.data_dir)[:3]  # model=dcgan, base_channels, latent_dim
    cfg = compose_config("run", [*base, f"model.pretrained={source_dir}", "model.pretrained_use_ema=false",
                                 "model.pretrained_networks=[generator]"])
    module = build_model(cfg.model, (1, 28, 28), 10)
    state = module.state_dict()
    assert _same(_sub(state, "_generator."), _sub(src, "_generator."))  # raw weights this time
    fresh = build_model(compose_config("run", list(base)).model, (1, 28, 28), 10)
    assert not _same(_sub(state, "_discriminator."), _sub(src, "_discriminator."))  # not named: not loaded
    assert _sub(fresh.state_dict(), "_discriminator.").keys() == _sub(state, "_discriminator.").keys()


def test_pretrained_network_that_does_not_fit_is_one_line_naming_it(tmp_path, mnist_root, source_run):
    source_dir, _ = source_run
    line = one_line_error(hydra_main(*tiny(tmp_path / "wide", mnist_root.data_dir, "trainer.max_steps=2",
                                           "model.base_channels=16", f"model.pretrained={source_dir}")))
    assert "network 'generator' does not fit this model" in line and str(source_dir) in line, line
    line = one_line_error(hydra_main(*tiny(tmp_path / "named", mnist_root.data_dir, "trainer.max_steps=2",
                                           f"model.pretrained={source_dir}",
                                           "model.pretrained_networks=[mapping]")))
    assert "'mapping' is not a network of DCGAN; valid: generator, discriminator" in line, line
    assert not any((tmp_path / name / "checkpoints").exists() for name in ("wide", "named"))


def test_resume_policy_for_a_run_folder_that_holds_a_checkpoint(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"

    def train(*more: str):
        return hydra_main(*tiny(run_dir, mnist_root.data_dir, *more))

    def batches() -> int:
        return load(last)["difgan"]["batches_seen"]

    assert train("max_kimg=0.016").returncode == 0 and batches() == 2   # 16 images: 2 batches
    # auto: only the budget changed (extending a run is normal) -> continues
    result = train("max_kimg=0.032")
    assert result.returncode == 0, result.stderr[-3000:]
    assert batches() == 4 and "done: 32 images seen, 4 batches" in result.stdout
    # auto: a model setting changed -> one line naming the key, and the checkpoint is left alone
    line = one_line_error(train("max_kimg=0.048", "model.lr=0.001"))
    assert line.startswith("error: config error: resume: ") and "model.lr (0.0002 -> 0.001)" in line, line
    assert "resume=force" in line and "resume=never" in line and batches() == 4
    # force: continues anyway
    assert train("max_kimg=0.048", "model.lr=0.001", "resume=force").returncode == 0 and batches() == 6
    # never: starts afresh; the old checkpoints are moved aside, not lost
    result = train("max_kimg=0.016", "resume=never")
    assert result.returncode == 0, result.stderr[-3000:]
    assert batches() == 2 and "resume=never: starting afresh" in result.stdout
    (aside,) = run_dir.glob("checkpoints_previous_*")
    assert load(aside / "last.ckpt")["difgan"]["batches_seen"] == 6
    assert "resume" in one_line_error(train("resume=sometimes"))
