"""nbmake runs each notebook in its own kernel process, which inherits this environment: give the kernels JAX's
persistent compilation cache (the one the tests use, see ../conftest.py), so that a second run of the suite reuses
the training steps the notebooks compiled before instead of compiling them again. Interactive runs are unaffected."""

import os
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jax_transformer_test_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
