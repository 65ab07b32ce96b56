"""Test-session settings shared by tests/ and parity_tests/.

JAX's persistent compilation cache lets the many short training runs of the tests reuse the executables compiled by
earlier ones (same shapes, same program) instead of compiling them again.
"""

import os
import tempfile

import jax

jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "jax_transformer_test_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
