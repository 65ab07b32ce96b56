"""Keep freed host memory inside the process (glibc), so that XLA:CPU does not page-fault its buffers in every step.

glibc's malloc serves each block above its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns it to the
kernel on `free`. XLA:CPU allocates an executable's large buffers (activations, gradients, logits) anew for every
call, so each training step then touches hundreds of megabytes of new pages: a page fault and a kernel-zeroed page
every 4 KiB. Measured on the 2-core development machine: writing a 50 MB fp32 array takes 12-13 ms that way and
2-3 ms from reused memory; the bf16 training step, real tokens/s, small 5,808 -> 6,370-6,749, base 1,295 ->
1,425-1,459 (+10-16%).

`keep_freed_memory()` switches malloc to one arena without mmap and without trimming (the `mallopt` equivalents of
GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...): freed blocks stay
in the process and the next step reuses them. The cost is memory: the process keeps what it has freed, compilation
included, until it exits (the A/B of time and peak memory, demo and hour recipe: docs/results.md, "Packing, and the
demo"; a demo that compiled 32 batch shapes peaked at 8.6 GB with it). So the training commands (train.py,
scripts/multi30k_results.py) turn it on and the others leave glibc's defaults, unless JAX_TRANSFORMER_MALLOC says
`keep` or `default`; the bench/ scripts keep glibc's defaults unless it says `keep`, and print which applies. Call it
before the first large allocation and before threads start allocating. Elsewhere than Linux with glibc it does
nothing.
"""

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc <malloc.h>
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: never trim (mallopt(3))
ENV = "JAX_TRANSFORMER_MALLOC"
_state = {"kept": False}


def keep_freed_memory(default: bool = False) -> bool:
    """Apply the settings above once if JAX_TRANSFORMER_MALLOC says 'keep' (or is unset and `default` is True);
    True when they are in effect."""
    choice = os.environ.get(ENV, "").lower()
    if choice not in ("keep", "default"):  # unset (or not understood): the caller's default
        choice = "keep" if default else "default"
    if _state["kept"]:
        return True
    if choice == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    _state["kept"] = all(mallopt(option, value) == 1 for option, value in _SETTINGS)
    return _state["kept"]


def describe() -> str:
    """One line for benchmark headers."""
    if _state["kept"]:
        return f"host malloc: freed memory kept in the process (jax_transformer.train.host_memory; {ENV}=default: off)"
    return "host malloc: glibc defaults (freed blocks over the mmap threshold go back to the kernel)"
