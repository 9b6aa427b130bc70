"""DDPM end to end: a tiny model learns the offline MNIST digits; every fixture dataset trains for two steps;
the command line (in this process) trains, samples a guided grid with any model option, and resumes."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from difgan.build import build_datamodule, build_model
from difgan.models.ddpm import DDPM
from tests.integration.runner import REPO, entry, load, one_line_error

TINY = ["model.unet.channels=16", "model.unet.channel_mult=[1,2]", "model.warmup_kimg=0"]
DATASETS = ["mnist", "fashion_mnist", "cifar10", "stl10", "celeba", "image_folder"]


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def fit(cfg, max_steps: int):
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg.data, seed=0)
    model = build_model(cfg.model, dm.image_shape, dm.num_classes)
    recorder = LossRecorder()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(model, datamodule=dm)
    return model, recorder.losses


def test_small_conditional_model_learns_mnist_and_samples_with_ddim(compose_run):
    cfg = compose_run(
        [
            "model=ddpm",
            "data=mnist_offline",
            "data.batch_size=32",
            "model.conditional=true",
            "model.lr=2e-3",
            *TINY,
        ]
    )
    model, losses = fit(cfg, max_steps=30)
    start, end = sum(losses[:3]) / 3, sum(losses[-10:]) / 10
    assert 0.8 < start < 1.2  # zero-initialised output: E[eps^2] = 1
    assert end < 0.3 * start, losses  # well below the loss at initialisation
    assert model.images_seen == 30 * 32 and model.ema is not None

    labels = torch.arange(10)
    noise = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    images = model.sample(10, labels, sampler="ddim", sampling_steps=5, guidance_scale=3.0, noise=noise)
    assert images.shape == (10, 1, 28, 28) and torch.isfinite(images).all()
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.1
    other = model.sample(
        10, (labels + 1) % 10, sampler="ddim", sampling_steps=5, guidance_scale=3.0, noise=noise
    )
    assert not torch.allclose(images, other)  # the label changes the image drawn from the same noise
    again = model.sample(10, labels, sampler="ddim", sampling_steps=5, guidance_scale=3.0, noise=noise)
    assert torch.equal(images, again)  # eta = 0: deterministic given x_T

    _, trajectory = model.sample_trajectory(
        2, torch.tensor([3, 7]), sampling_steps=4, eta=1.0, generator=torch.Generator().manual_seed(1)
    )
    assert len(trajectory.xs) == 5 and trajectory.timesteps[-1] == -1
    with pytest.raises(ValueError, match="labels"):
        model.sample(2, torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="sampling_steps"):
        model.sample(2, sampler="ddim", sampling_steps=0)
    with pytest.raises(ValueError, match="sampler=ddim"):
        model.sample(2, sampler="ddpm", sampling_steps=10)


def test_unconditional_ddpm_sampler_and_options(compose_run):
    cfg = compose_run(
        ["model=ddpm", "model.timesteps=20", "model.unet.channels=8", "model.unet.channel_mult=[1]"]
    )
    model = build_model(cfg.model, (1, 8, 8), 0)
    g = torch.Generator().manual_seed(0)
    a = model.sample(3, sampler="ddpm", sigma="posterior", generator=g)
    assert a.shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="conditional"):
        model.sample(3, guidance_scale=2.0)
    with pytest.raises(ValueError, match="unknown sampling option"):
        model.sample(3, temperature=0.5)
    hook_calls = []

    def record(x, t, eps, **context):
        hook_calls.append((int(t[0]), context["t_prev"]))
        return eps

    model.sample(2, sampling_steps=3, guidance=record)
    assert hook_calls == [(19, 10), (10, 0), (0, -1)]


@pytest.mark.parametrize("name", DATASETS)
def test_ddpm_trains_two_steps_on_each_fixture_dataset(compose_run, dataset_roots, name):
    data_dir, overrides = dataset_roots[name]
    cfg = compose_run(
        [
            "model=ddpm",
            f"data={name}",
            f"paths.data_dir={data_dir}",
            *overrides,
            *TINY,
            "model.unet.channels=8",
        ]
    )
    model, losses = fit(cfg, max_steps=2)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    labels = torch.tensor([0, 1]) if model.is_conditional else None
    images = model.sample(2, labels, sampling_steps=2)
    assert images.shape == (2, *model.image_shape)


# ------------------------------------------------------------------------------------------------ CLI
# Hydra's real entry points (``python -m difgan.run`` / ``difgan.sample``), run in this process.
FAST_RUN = [
    "logger=csv",
    "metrics=none",
    "trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "callbacks.samples.n=4",
    "model.sampling.sampling_steps=3",
    "model.unet.channels=8",
]


def test_cli_trains_the_quickstart_model(tmp_path):
    run_dir = tmp_path / "run"
    result = entry("difgan.run", "model=ddpm", "data=mnist_offline", "trainer.max_steps=2", *FAST_RUN,
                   f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "samples" / "final.png").is_file()
    assert "train/loss" in (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "done: 128 images seen, 2 batches, global_step 2" in result.stdout


def test_cli_conditional_run_samples_a_guided_grid_with_any_model_option(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    result = entry("difgan.run", "model=ddpm_seed000", "data=mnist", f"paths.data_dir={mnist_root.data_dir}",
                   "data.batch_size=8", "trainer.max_steps=2", "model.timesteps=100", *FAST_RUN,
                   f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]

    def sample(*args: str):
        return entry("difgan.sample", f"ckpt_path={run_dir}", "n=4", "sampling_steps=5",
                     f"paths.runs_dir={tmp_path / 'runs'}", *args)

    out = tmp_path / "grid.png"
    result = sample("sampler=ddim", "guidance_scale=5", "+sample_options.spacing=trailing",
                    "+sample_options.clip_x0=false", f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file()
    shown = "spacing=trailing, clip_x0=False, sampler=ddim, sampling_steps=5, guidance_scale=5"
    assert shown in result.stdout
    # the log goes to the command's own folder, never the current one
    (log,) = (tmp_path / "runs" / "sample").glob("*/sample.log")
    assert not list(REPO.glob("sample.log")) and not list(tmp_path.glob("*.log"))
    # an unknown option, or a bad value, is one line naming it (and listing the valid ones)
    line = one_line_error(sample("+sample_options.spacin=trailing"))
    assert "'spacin'" in line
    assert "valid: sampler, sampling_steps, eta, guidance_scale, sigma, spacing" in line
    assert "spacing" in one_line_error(sample("+sample_options.spacing=bogus"))
    assert "given twice" in one_line_error(sample("+sample_options.sampling_steps=7"))
    line = one_line_error(sample("+spacing=bogus"))  # a top-level key nobody reads is not ignored
    assert line == ("error: config error: spacing: not a key of difgan.sample; model sampling options go in "
                    "sample_options: +sample_options.spacing=bogus"), line


@pytest.mark.slow
def test_resumed_ddpm_ends_bit_for_bit_where_an_uninterrupted_run_does(tmp_path, mnist_root):
    """UNet, EMA, Adam state, the warmup schedule (it follows images_seen) and the RNG carry over; resumed at
    an epoch boundary (mnist_root: 4 batches of 8 an epoch)."""
    def train(name: str, *more: str) -> dict:
        result = entry("difgan.run", "model=ddpm", "model.unet.channel_mult=[1]", "model.warmup_kimg=0.05",
                       "data=mnist", f"paths.data_dir={mnist_root.data_dir}", "data.batch_size=8", *FAST_RUN,
                       f"hydra.run.dir={tmp_path / name}", *more)
        assert result.returncode == 0, result.stderr[-3000:]
        return load(tmp_path / name / "checkpoints" / "last.ckpt")

    straight = train("straight", "trainer.max_epochs=2")
    first = train("first", "trainer.max_epochs=1")
    resumed = train("resumed", "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first'}")
    assert first["difgan"]["batches_seen"] == 4 and resumed["difgan"]["batches_seen"] == 8
    assert resumed["difgan"]["images_seen"] == straight["difgan"]["images_seen"] == 64
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert any(k.startswith("ema.averaged.") for k in straight["state_dict"])
    a, b = straight["optimizer_states"][0], resumed["optimizer_states"][0]
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"]
    for i, state in a["state"].items():
        for k, v in state.items():
            assert torch.equal(torch.as_tensor(b["state"][i][k]), torch.as_tensor(v)), (i, k)
    key = "unet.conv_in.weight"
    assert not torch.equal(first["state_dict"][key], straight["state_dict"][key])  # epoch 2 changed it


def test_warmup_follows_images_seen_and_clipping_bounds_the_gradient():
    model = DDPM(
        (1, 8, 8),
        unet={"channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attention_resolutions": []},
        lr=1e-3,
        warmup_kimg=1.0,
        grad_clip=0.5,
    )
    config = model.configure_optimizers()
    opt, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    model.images_seen = 499
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    model.images_seen = 5000
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)

    model.log = lambda *args, **kwargs: None  # no trainer attached
    for p in model.unet.parameters():
        p.grad = torch.full_like(p, 10.0)
    model.configure_gradient_clipping(opt)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.unet.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-4)


def test_interpolation_uses_deterministic_ddim_and_evaluation_records_the_sampler(compose_run):
    from difgan.interpolate import interpolate

    cfg = compose_run(["model=ddpm", "model.timesteps=20", "model.unet.channels=8",
                       "model.unet.channel_mult=[1]", "model.sampling.sampler=ddpm"])
    model = build_model(cfg.model, (1, 8, 8), 0)
    assert model.sample_protocol() == {"sampler": "ddpm", "sampling_steps": 20, "timesteps": 20,
                                       "guidance_scale": 1.0, "sigma": "beta", "clip_x0": True,
                                       "schedule": "linear"}
    ddim = model.sample_protocol(sampler="ddim", sampling_steps=5)
    assert ddim["sampling_steps"] == 5 and ddim["eta"] == 0.0 and "sigma" not in ddim
    # the config samples with (stochastic) DDPM, but interpolating the initial noise needs DDIM with eta 0:
    # the same path of x_T gives the same strip twice, whatever the sampler's noise generator
    first, info = interpolate(model, rows=1, steps=3, seed=0)
    assert info["space"] == "noise" and info["sample_options"] == {"sampler": "ddim", "eta": 0.0}
    again, _ = interpolate(model, rows=1, steps=3, seed=0)
    assert torch.equal(first, again) and first.shape == (1, 3, 1, 8, 8)
    ends = model.sample(2, noise=torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                        sampler="ddim", eta=0.0)
    assert torch.allclose(first[0, 0], ends[0].clamp(-1, 1), atol=1e-5)
