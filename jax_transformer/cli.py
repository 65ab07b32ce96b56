"""Shared plumbing of the command-line entry points: user errors become one line on stderr and exit status 1."""

import os
import sys


def run_cli(fn) -> int:
    """Call `fn()`; print a `UserError` (bad files, flags, configs, checkpoints) as one line, no traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging

    from .config import UserError

    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax and TFDS log routine notices as warnings

    try:
        fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
