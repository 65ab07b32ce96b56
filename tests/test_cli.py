"""The entry points' shared plumbing: the persistent XLA compilation cache they turn on."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = (
    "import jax; from jax_transformer.cli import enable_compilation_cache; enable_compilation_cache(); "
    "print(jax.config.jax_compilation_cache_dir)"
)


def _cache_dir(tmp_path, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
        env={**clean, "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu", **env},
    )  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


def test_commands_cache_compiled_programs_under_home(tmp_path):
    assert _cache_dir(tmp_path) == str(tmp_path / ".cache" / "jax_transformer" / "xla")


def test_a_cache_the_user_chose_is_kept(tmp_path):
    chosen = str(tmp_path / "mine")
    assert _cache_dir(tmp_path, JAX_COMPILATION_CACHE_DIR=chosen) == chosen
