"""Metric settings: one dataclass built from the ``metrics`` config group (or evaluate.yaml), validated
before any work starts, plus the per-dataset choice of feature space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from omegaconf import DictConfig, ListConfig, OmegaConf

from difgan.errors import ConfigError, DifganError

METRICS = ("fid", "kid", "is", "pr")
SPACES = ("domain", "inception")
NEEDS_REAL = {"fid", "kid", "pr"}
# Data sources whose default feature space is the in-domain network (Inception features mean little there).
DOMAIN_DEFAULT_SOURCES = {"mnist", "fashion_mnist", "mnist_offline"}


class MetricsError(DifganError):
    """A metric cannot be computed as configured (missing Inception weights, unlabelled data for the domain
    network, too few samples...). The message says what to do."""


def _typed_numbers(obj) -> None:
    """Numbers as their field's declared type: ``30`` and ``30.0`` for a float field are the same setting,
    and must give the same cache key (the key hashes ``vars(settings)``)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind == "float":
            setattr(obj, f.name, float(value))
        elif kind == "int" and isinstance(value, float) and value.is_integer():
            setattr(obj, f.name, int(value))


@dataclass
class DomainNetSettings:
    train_kimg: float = 30.0      # training budget in thousands of images
    batch_size: int = 256
    lr: float = 2e-3
    width: int = 16               # channels of the first conv (doubled in the second)
    feature_dim: int = 128        # dimension of the penultimate features the metrics use
    seed: int = 0

    def __post_init__(self) -> None:
        _typed_numbers(self)


@dataclass
class MetricsSettings:
    feature_space: str | list[str] = "auto"   # auto | domain | inception | both | [domain, inception]
    inception_weights: str | None = None      # null: $TORCH_HOME/hub/checkpoints/weights-inception-...pth
    inception_download: bool = True           # try the download when the file is missing
    reference_split: str = "train"
    batch_size: int = 250                     # generation chunk and feature-extraction batch
    seed: int = 0                             # fixed latent seed for generated samples
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_degree: int = 3
    kid_coef0: float = 1.0
    pr_k: int = 3
    is_splits: int = 10
    class_accuracy: str | bool = "auto"       # auto: for conditional models when the domain net is in use
    domain_net: DomainNetSettings = field(default_factory=DomainNetSettings)

    def __post_init__(self) -> None:
        _typed_numbers(self)

    def spaces_for(self, data_source: str, override: str | Sequence[str] | None = None) -> list[str]:
        return resolve_spaces(override if override is not None else self.feature_space, data_source)


def _plain(value):
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def settings_from_config(cfg: Mapping | DictConfig | None, prefix: str = "metrics") -> MetricsSettings:
    """Build settings from a config node; unknown keys in it are ignored (they belong to other parts)."""
    cfg = _plain(cfg) or {}
    known = {f.name for f in fields(MetricsSettings)}
    kwargs = {k: v for k, v in cfg.items() if k in known and k != "domain_net"}
    dn_cfg = cfg.get("domain_net") or {}
    dn_known = {f.name for f in fields(DomainNetSettings)}
    unknown = set(dn_cfg) - dn_known
    if unknown:
        raise ConfigError(f"{prefix}.domain_net",
                          f"unknown key {sorted(unknown)[0]!r}; valid: {sorted(dn_known)}")
    settings = MetricsSettings(**kwargs, domain_net=DomainNetSettings(**dn_cfg))
    validate_settings(settings, prefix)
    return settings


def validate_settings(s: MetricsSettings, prefix: str = "metrics") -> None:
    resolve_spaces(s.feature_space, "mnist", key=f"{prefix}.feature_space")
    positive = {"batch_size": s.batch_size, "kid_subsets": s.kid_subsets,
                "kid_subset_size": s.kid_subset_size,
                "kid_degree": s.kid_degree, "pr_k": s.pr_k, "is_splits": s.is_splits,
                "domain_net.batch_size": s.domain_net.batch_size, "domain_net.width": s.domain_net.width,
                "domain_net.feature_dim": s.domain_net.feature_dim}
    for key, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{prefix}.{key}", f"must be a positive integer, got {value!r}")
    if s.kid_subset_size < 2:
        raise ConfigError(f"{prefix}.kid_subset_size", "must be at least 2")
    if not s.domain_net.train_kimg > 0 or not s.domain_net.lr > 0:
        raise ConfigError(f"{prefix}.domain_net", "train_kimg and lr must be positive")
    if s.reference_split not in ("train", "val"):
        raise ConfigError(f"{prefix}.reference_split", f"must be train or val, got {s.reference_split!r}")
    if s.class_accuracy not in ("auto", True, False):
        raise ConfigError(f"{prefix}.class_accuracy",
                          f"must be auto, true or false, got {s.class_accuracy!r}")


def resolve_spaces(value, data_source: str, key: str = "metrics.feature_space") -> list[str]:
    """``auto`` -> domain for MNIST-like sources, inception otherwise; ``both`` -> both; or a name or list."""
    value = _plain(value)
    if value is None or value == "auto":
        return ["domain"] if data_source in DOMAIN_DEFAULT_SOURCES else ["inception"]
    if value == "both":
        return list(SPACES)
    names = [value] if isinstance(value, str) else list(value)
    bad = [v for v in names if v not in SPACES]
    if bad or not names:
        raise ConfigError(key, f"unknown feature space {bad[0] if bad else value!r}; "
                          f"valid: auto, both, {', '.join(SPACES)}")
    return list(dict.fromkeys(names))


def validate_metric_names(names, key: str) -> list[str]:
    names = _plain(names)
    names = [names] if isinstance(names, str) else list(names or [])
    bad = [m for m in names if m not in METRICS]
    if bad:
        raise ConfigError(key, f"unknown metric {bad[0]!r}; valid: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))
