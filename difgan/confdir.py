"""Where the Hydra configs live: ``conf/`` at the top of a checkout, or ``difgan/conf`` inside an installed
wheel (the build maps ``conf/`` into the package, see pyproject.toml). Every entry point asks here."""

from __future__ import annotations

from pathlib import Path


def find_conf_dir() -> Path:
    checkout = Path(__file__).resolve().parents[1] / "conf"
    if (checkout / "run.yaml").is_file():
        return checkout
    installed = Path(__file__).resolve().parent / "conf"
    if (installed / "run.yaml").is_file():
        return installed
    raise FileNotFoundError(f"difgan's Hydra configs are missing: looked for {checkout} and {installed}")


CONF_DIR = find_conf_dir()


def compose_config(config_name: str = "run", overrides=()):
    """The config ``python -m difgan.<entry>`` would compose (without Hydra's own node), for benchmarks,
    notebooks and tests."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
