"""GenerativeModule: the one interface every model in the suite implements.

Everything downstream (metrics, sample grids, interpolation, guidance, comparison) calls ``sample`` and
nothing else, so a new model plugs into all of it at once. The base class also owns what every model needs
the same way: images-seen counters (Lightning's ``global_step`` counts optimizer steps, which for a GAN is
not batches), the generator EMA, RNG state in checkpoints, and the non-finite-loss guard.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from difgan.errors import NonFiniteLossError
from difgan.models.ema import EMA


class GenerativeModule(L.LightningModule, abc.ABC):
    """A LightningModule that trains itself and samples images in [-1, 1].

    Subclasses build their networks, then call ``self.init_ema()``, and implement
    ``sampling_network()`` (the network that is averaged and used at sampling time) and
    ``generate(net, n, labels, generator, **options)``.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int = 0, ema: dict | None = None):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes or 0)
        self.images_seen = 0
        self.batches_seen = 0
        self._images_since_ema = 0
        self._ema_options = dict(ema) if ema else None
        self.ema: EMA | None = None
        self._restored_rng: dict | None = None
        self.run_config: dict | None = None  # the resolved run config, stored in checkpoints by run.py

    # ----------------------------------------------------------------- what subclasses provide
    @abc.abstractmethod
    def sampling_network(self) -> nn.Module:
        """The network that is averaged by the EMA and used to sample (generator, denoiser)."""

    @property
    @abc.abstractmethod
    def noise_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the initial noise ``sample`` starts from (z for a GAN, x_T for diffusion)."""

    @abc.abstractmethod
    def generate(self, net: nn.Module, n: int, labels: Tensor | None, generator: torch.Generator | None,
                 noise: Tensor | None = None, **options) -> Tensor:
        """``n`` images from ``net`` (raw or EMA copy of ``sampling_network()``), roughly in [-1, 1].

        ``noise`` (n, *noise_shape), when given, replaces the initial noise draw (interpolation, fixed seeds).
        """

    def networks(self) -> dict[str, nn.Module]:
        """Named trainable networks: parameter counts, and what ``model.pretrained`` loads by name."""
        return {"sampling_network": self.sampling_network()}

    # ----------------------------------------------------------------- optional capabilities (defaults)
    # Everything another module may ask of a model is declared here with a default, so a new model's author
    # sees in one place what it may provide; nothing downstream probes a model with hasattr.

    #: Names of the keyword options ``sample`` accepts (``difgan.sample sample_options={...}`` is checked
    #: against them). Models with options override this and validate values in ``generate``.
    sample_option_names: tuple[str, ...] = ()

    def check_sample_options(self, options: dict) -> None:
        """Reject option names this model does not know, listing the valid ones (ValueError)."""
        unknown = sorted(set(options) - set(self.sample_option_names))
        if unknown:
            valid = ", ".join(self.sample_option_names) or "none"
            raise ValueError(f"{type(self).__name__} has no sampling option {unknown[0]!r}; valid: {valid}")

    def deterministic_sample_options(self) -> dict:
        """Options under which ``sample`` maps fixed ``noise`` to images deterministically (latent
        interpolation needs this). Default: none needed (a GAN's generator is a function of z)."""
        return {}

    def sample_protocol(self, **options) -> dict:
        """What ``sample(**options)`` runs, for metrics.json (sampler, network evaluations, ...).
        Default: the options as given."""
        return {k: v for k, v in options.items() if v is not None}

    #: Latent spaces ``difgan.interpolate`` may walk: "z" (the noise ``sample`` starts from) always; "w" for
    #: models with an intermediate latent space (StyleGAN2), which then implement the two methods below.
    latent_spaces: tuple[str, ...] = ("z",)

    def map_latent(self, z: Tensor, labels: Tensor | None = None, *, use_ema: bool = True) -> Tensor:
        """z -> w for models whose ``latent_spaces`` include "w" (no gradients, eval mode)."""
        raise NotImplementedError(f"{type(self).__name__} has no intermediate latent space w")

    def sample_from_w(self, w: Tensor, labels: Tensor | None = None, *, use_ema: bool = True,
                      **options) -> Tensor:
        """Images in [-1, 1] from intermediate latents w (see ``map_latent``)."""
        raise NotImplementedError(f"{type(self).__name__} has no intermediate latent space w")

    #: Whether ``sample_trajectory`` returns the intermediate states of a multi-step sampler.
    has_trajectory: bool = False

    def sample_trajectory(self, n: int, labels: Tensor | None = None, **options):
        """``(images, Trajectory)``: ``sample`` plus its intermediate states (multi-step models)."""
        raise NotImplementedError(f"{type(self).__name__} samples in one step; it has no trajectory")

    def pretrained_networks(self) -> dict[str, nn.Module]:
        """Networks ``model.pretrained`` may load from another run's checkpoint, by name (default: all)."""
        return self.networks()

    def on_pretrained_loaded(self) -> None:
        """Called after ``model.pretrained`` loaded weights: the EMA restarts from the loaded weights."""
        self.init_ema()

    # ----------------------------------------------------------------- sampling
    def init_ema(self) -> None:
        if self._ema_options:
            self.ema = EMA(self.sampling_network(), **self._ema_options)

    @property
    def is_conditional(self) -> bool:
        return self.num_classes > 0

    @contextmanager
    def sampling_weights(self, use_ema: bool = True) -> Iterator[nn.Module]:
        """The network to sample with (EMA weights when present), in eval mode for the duration."""
        net = self.ema.averaged if (use_ema and self.ema is not None) else self.sampling_network()
        was_training = net.training
        net.eval()
        try:
            yield net
        finally:
            net.train(was_training)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, *, use_ema: bool = True,
               generator: torch.Generator | None = None, noise: Tensor | None = None, **options) -> Tensor:
        """``n`` images of shape ``image_shape`` in [-1, 1]; ``labels`` (n,) for conditional models.

        A conditional model given no labels draws them uniformly; an unconditional one rejects labels.
        ``noise`` (n, *noise_shape) fixes the initial noise; ``generator`` seeds every random draw.
        ``options`` are model-specific (e.g. ``sampler``, ``sampling_steps``, ``guidance_scale``).
        """
        if noise is not None and tuple(noise.shape) != (n, *self.noise_shape):
            raise ValueError(f"noise must have shape {(n, *self.noise_shape)}, got {tuple(noise.shape)}")
        if labels is not None:
            if not self.is_conditional:
                raise ValueError(f"{type(self).__name__} is unconditional; it takes no labels")
            labels = torch.as_tensor(labels, device=self.device).long().reshape(-1)
            if labels.numel() != n:
                raise ValueError(f"got {labels.numel()} labels for {n} samples")
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"labels must lie in [0, {self.num_classes})")
        elif self.is_conditional:
            device = generator.device if generator is not None else self.device
            labels = torch.randint(self.num_classes, (n,), generator=generator, device=device).to(self.device)
        with self.sampling_weights(use_ema) as net:
            images = self.generate(net, n, labels, generator, noise=noise, **options)
        return images.clamp(-1, 1)

    # ----------------------------------------------------------------- training bookkeeping
    def check_finite(self, **losses: Tensor) -> None:
        for name, value in losses.items():
            if not torch.isfinite(value).all():
                raise NonFiniteLossError(name, float(value.detach().float().mean()), self.batches_seen,
                                         self.global_step)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Counted when the batch starts, so the step and every callback after it see it as seen
        # (callbacks' on_train_batch_end run before the module's).
        batch_images = int(batch[0].shape[0]) * self.trainer.world_size
        self.images_seen += batch_images
        self.batches_seen += 1
        self._images_since_ema += batch_images

    def update_ema(self) -> None:
        """Blend the sampling network into its EMA. Called right after the optimizer step (automatically
        under Lightning's automatic optimization; manual-optimization models call it at the end of their
        training_step), so a checkpoint written at the end of the batch holds an up-to-date EMA."""
        if self.ema is not None:
            self.ema.update(self.sampling_network(), self._images_since_ema, self.images_seen)
        self._images_since_ema = 0

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def logging_step(self) -> bool:
        """Whether Lightning writes this batch's step metrics to the loggers: every ``log_every_n_steps``
        batches (it counts batches, not optimizer steps) and when training is stopping. Step metrics logged on
        other batches are never written, and each ``self.log`` costs about a millisecond of Python, which for
        small models on CPU was ~10% of the step; so models log only here (the progress bar then refreshes
        its numbers at the same rate)."""
        n = self.trainer.log_every_n_steps
        return bool(n) and (self.batches_seen % n == 0 or self.trainer.should_stop)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.logging_step():
            self.log("train/kimg", self.images_seen / 1000.0, on_step=True, on_epoch=False,
                     rank_zero_only=True)

    def on_fit_start(self) -> None:
        # RNG state from a checkpoint is restored here, before Lightning creates the first training-data
        # iterator (FitLoop.setup_data, ahead of on_train_start): creating a DataLoader iterator draws a
        # seed from the global torch RNG, and a run resumed at an epoch boundary must make that draw from
        # the restored state, exactly as the uninterrupted run does at the start of its next epoch.
        if self._restored_rng is not None:
            _set_rng_state(self._restored_rng)
            self._restored_rng = None
        if self.trainer.world_size > 1:
            # Every rank was seeded alike (and a resumed run restores rank 0's state everywhere), so each
            # would draw the same noise (z, t, dropout) and the ranks' fakes would be copies of each other.
            # Each rank continues from its own seed, derived from the shared state and its rank.
            _seed_all(int(torch.randint(2**31 - 1, ())) + 7919 * self.trainer.global_rank)
        counts = {f"params/{name}": sum(p.numel() for p in net.parameters())
                  for name, net in self.networks().items()}
        for logger in self.loggers:
            logger.log_hyperparams(counts)
        if self.trainer.is_global_zero:
            print("parameters: " + ", ".join(f"{k.split('/')[1]} {v / 1e6:.2f}M" for k, v in counts.items()))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Subclasses add their own keys to ``checkpoint["difgan"]`` (call super first or last: entries are
        merged, never replaced). Adaptive training state belongs in persistent buffers instead, which
        ``state_dict`` carries with no code here."""
        checkpoint.setdefault("difgan", {}).update({
            "images_seen": self.images_seen,
            "batches_seen": self.batches_seen,
            "rng": _get_rng_state(),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "config": self.run_config,
        })

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("difgan", {})
        self.images_seen = int(state.get("images_seen", 0))
        self.batches_seen = int(state.get("batches_seen", 0))
        self._restored_rng = state.get("rng")


def _get_rng_state() -> dict:
    """RNG states as plain tensors, lists and ints, so the checkpoint loads with ``weights_only=True``."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x

