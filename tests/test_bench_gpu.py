"""bench/gpu.py, the script for a lent accelerator, runs end to end (here on the CPU with the tiny preset)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_bench_runs_with_a_tiny_config():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "gpu.py"), "--sizes", "test", "--quick"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    training = next(line for line in lines if line.startswith("| test ") and "x 8/8" in line)
    cells = [c.strip() for c in training.strip("|").split("|")]
    assert float(cells[3]) > 0 and float(cells[4].replace(",", "")) > 0  # step ms, target tokens/s
    assert any(line.startswith("| test ") and line.count("|") == 6 for line in lines)  # the decoding row
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu.py"), "--sizes", "huge", "--quick"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.startswith("error: unknown size 'huge'")
