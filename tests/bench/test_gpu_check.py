"""``bench/gpu.sh --dry-run``: the prepared GPU check runs end to end CPU-sized, so it cannot rot between GPU loans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_gpu_check_dry_run_prints_every_section():
    env = os.environ | {"PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--repeats", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=540,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "## GPU check (dry run" in out
    for heading in ("SFT step", "BlockMask at 512 tokens", "| width | batched branches s", "One PAPO step"):
        assert heading in out, out
    assert "| 256 |" in out and "| 512 |" in out and "| 4 |" in out and "| 8 |" in out
