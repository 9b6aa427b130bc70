"""The built wheel carries the Hydra configs (conf/ at the top of the checkout becomes difgan/conf in the
package), and ``python -m difgan.run`` composes its config from an installed wheel, run from another folder
with the checkout nowhere on the path."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.integration.runner import REPO, cli_env

RUN_FROM_WHEEL = """
import runpy, sys
from pathlib import Path
import difgan, difgan.confdir
site = Path(sys.argv[1]).resolve()
assert Path(difgan.__file__).resolve().is_relative_to(site), f"imported {difgan.__file__}, not the wheel"
assert difgan.confdir.CONF_DIR == site / "difgan" / "conf", difgan.confdir.CONF_DIR
print("difgan from", Path(difgan.__file__).parent)
sys.argv = ["difgan.run", "--cfg", "job", "model=ddpm", "experiment=quickstart"]
runpy.run_module("difgan.run", run_name="__main__", alter_sys=True)
"""


def test_wheel_carries_the_configs_and_runs_from_another_folder(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("difgan-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert len(configs) > 20
    missing = sorted(c for c in configs if f"difgan/conf/{c}" not in names)
    assert not missing, f"configs missing from the wheel: {missing[:10]}"
    assert "difgan/run.py" in names and "difgan/analysis/runs.py" in names
    assert not any(n.startswith(("conf/", "tests/")) for n in names)   # only the package

    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    zipfile.ZipFile(wheel).extractall(site)                       # a pure-Python wheel: unpacked = installed
    elsewhere.mkdir()
    env = cli_env(PYTHONPATH=str(site))                              # not the checkout
    run = subprocess.run([sys.executable, "-c", RUN_FROM_WHEEL, str(site)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"difgan from {site / 'difgan'}" in run.stdout
    assert "name: ddpm" in run.stdout and "_target_: difgan.models.ddpm.DDPM" in run.stdout
    assert "name: quickstart" in run.stdout                          # an experiment file from the wheel
    assert not (elsewhere / "runs").exists()                         # --cfg job runs nothing
