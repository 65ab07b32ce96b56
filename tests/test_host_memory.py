"""host_memory.keep_freed_memory: large blocks come from the reusable heap instead of fresh mmaps (glibc only).

Each case runs in a fresh interpreter: malloc settings are per process and must be made before threads allocate.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import ctypes, sys
from jax_transformer.train.host_memory import keep_freed_memory
kept = keep_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
before = libc.mallinfo2().hblks  # blocks mmapped so far (by the interpreter's start-up)
block = libc.malloc(64 << 20)  # 64 MiB: above glibc's largest mmap threshold
print(kept, libc.mallinfo2().hblks - before)
libc.free(block)
"""


def probe(env_value: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "JAX_TRANSFORMER_MALLOC"}
    if env_value is not None:
        env["JAX_TRANSFORMER_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    kept, mmapped = out.stdout.split()
    return kept, int(mmapped)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_large_blocks_stay_in_the_heap_when_asked_to():
    assert probe("keep") == ("True", 0)  # served from the heap, so a later free keeps it for reuse
    for value in (None, "default"):  # the CLIs' default: glibc's own mmap, unmapped again on free
        assert probe(value) == ("False", 1)
