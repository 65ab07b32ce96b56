"""Shared plumbing of the command-line entry points: user errors become one line on stderr and exit status 1, and
compiled XLA programs are kept on disk so that the next command with the same shapes does not compile them again."""

import os
import sys

# JAX's persistent compilation cache, unless the user (JAX_COMPILATION_CACHE_DIR) or a test session chose one: a
# resumed run, the full recipe after the demo, or translate/evaluate after training reuse the executables compiled
# before instead of compiling every batch shape again (2-3 minutes of the Multi30k recipe's 24 shapes on 2 cores).
DEFAULT_COMPILATION_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "jax_transformer", "xla")


def enable_compilation_cache() -> None:
    import jax

    if not jax.config.jax_compilation_cache_dir and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", DEFAULT_COMPILATION_CACHE)


def require_new_output_dir(out_dir: str, *sources: str) -> None:
    """The rule of every command that writes a model directory: `out_dir` must not exist or be empty, and must not
    be one of its inputs. Checked before any work, so nothing is overwritten or mixed."""
    from jax_transformer.config import UserError

    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(f"{out_dir} already exists and is not empty; fix: choose another --out or delete it")
    if any(os.path.abspath(out_dir) == os.path.abspath(source) for source in sources):
        raise UserError("--out must differ from the model directory")


def require_writable_file(path: str, flag: str) -> None:
    """The rule of every command that writes a file the user names (`--output`, `--json-out`): checked before any
    work, so a mistyped folder is reported at once instead of after minutes of decoding."""
    from jax_transformer.config import UserError

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a directory; fix: name a file")
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {path}: folder {folder} does not exist; fix: create it or name another file")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {path} is not writable; fix: name a file you may write")


def write_text(path: str, text: str, flag: str) -> None:
    """Write `text` to the file the user named; an OS error (disk full, folder removed meanwhile) is one line."""
    from jax_transformer.config import UserError

    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UserError(f"cannot write {flag} {path}: {e.strerror}") from None


def run_cli(fn, keep_memory: bool = False) -> int:
    """Call `fn()`; print a `UserError` (bad files, flags, configs, checkpoints) as one line, no traceback.

    `keep_memory`: whether glibc keeps freed memory in the process unless JAX_TRANSFORMER_MALLOC says otherwise
    (`host_memory.keep_freed_memory`, which says what it is worth): on for the training commands, whose step allocates
    the same large buffers again and again, off for the others."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from jax_transformer.train.host_memory import keep_freed_memory

    keep_freed_memory(default=keep_memory)  # XLA:CPU's buffers reused, not page-faulted each step
    from absl import logging as absl_logging

    from jax_transformer.config import UserError

    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax and TFDS log routine notices as warnings
    enable_compilation_cache()

    try:
        fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
