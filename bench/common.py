"""Helpers shared by the bench/ scripts: machine description, step timing, matmul peaks and markdown tables.

Imported as `common` by scripts run as `python bench/SCRIPT.py` (the script's folder is first on sys.path).
`jax_transformer` and `torch_ref` come from the installed package (`make setup` installs it in editable mode).
Nothing here imports JAX or torch at module level.
"""

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jax_transformer.machine import available_cores, cpu_flags, cpu_model  # noqa: E402, F401 (used by the bench scripts)
from jax_transformer.train.host_memory import describe as malloc_line  # noqa: E402
from jax_transformer.train.host_memory import keep_freed_memory  # noqa: E402

# One host-memory setting for every framework in the process (torch's CPU allocator uses malloc too): glibc's
# defaults, unless JAX_TRANSFORMER_MALLOC=keep asks for `keep_freed_memory` (it speeds up our step and torch_ref's and
# slows HF Marian's under bf16 autocast; docs/benchmarks.md shows both).
keep_freed_memory(default=False)


def cpu_features(names=("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> list[str]:
    """Which of `names` the CPU flags list (matters for bf16: without avx512_bf16/AMX, bf16 matmuls are emulated)."""
    return [name for name in names if name in cpu_flags()]


def machine_lines() -> list[str]:
    """Markdown bullet lines: date, CPU, cores, OS, Python."""
    features = cpu_features()
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()} ({available_cores()} cores available to this process, os.cpu_count()={os.cpu_count()}"
        f"{'; ' + ', '.join(features) if features else ''})",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- {malloc_line()}",
    ]


def xla_flags_line() -> str:
    """A markdown bullet: the XLA_FLAGS this process runs with (XLA reads them once, when JAX starts its backend).

    Measured 2026-11-25 (issue 10; jaxlib 0.10.2, 2-core Zen 4, loaded machine): the oneDNN flags
    (--xla_cpu_experimental_onednn_custom_call, --xla_cpu_use_onednn, --xla_cpu_experimental_onednn_fusion_type)
    compile our train step to byte-identical HLO, so they change nothing; --xla_cpu_experimental_ynn_fusion_type=dot
    did change it (fewer YNNPACK fusions, bf16 dots kept bf16) but paid only on fp32 (~13% CPU time, tiny) and cost
    bf16 ~11% (small), so the defaults are kept. Set XLA_FLAGS yourself to compare."""
    return f"- XLA_FLAGS: {os.environ.get('XLA_FLAGS', '').strip() or '(none: jaxlib defaults)'}"


def time_calls(fn: Callable[[], object], steps: int, warmup: int) -> tuple[list[float], float]:
    """Call `fn` `warmup` times, then `steps` times timing each call (fn must block until its work is done).

    Returns (per-call seconds of the timed calls, seconds of the first warm-up call: compilation for JAX)."""
    first = None
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        if i == 0:
            first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times, first if first is not None else float("nan")


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile, q in [0, 1]."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def jax_matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = 7, out_dtype: str | None = None) -> float:
    """Median FLOP/s of a jitted (n, n) @ (n, n) jnp.dot (2 n^3 FLOPs), after one warm-up call. `out_dtype`: the
    product's preferred_element_type (None: `dtype`), e.g. bf16 operands with an fp32 result, as model.bf16_matmul."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0))
    a = jax.random.normal(keys[0], (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(keys[1], (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=out_dtype))
    times, _ = time_calls(lambda: dot(a, b).block_until_ready(), repeats, warmup=1)
    return 2 * n**3 / median(times)


def torch_matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = 7) -> float:
    """Median FLOP/s of an (n, n) @ (n, n) torch.matmul (2 n^3 FLOPs) with the current torch thread count."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(getattr(torch, dtype))
    b = torch.randn(n, n, generator=generator).to(getattr(torch, dtype))
    with torch.inference_mode():
        times, _ = time_calls(lambda: torch.matmul(a, b), repeats, warmup=1)
    return 2 * n**3 / median(times)


def matmul_peaks(precisions: list[str], n: int) -> dict[str, float]:
    """The matmul peak (FLOP/s) of each precision: the best of the frameworks' n^3 products in that precision (bf16:
    jnp.dot to bf16 and to fp32, and torch.matmul). Prints what it measured. MFU of a row divides by its precision's."""
    peaks = {}
    fp32 = {"jnp.dot": jax_matmul_peak(n), "torch.matmul": torch_matmul_peak(n)}
    peaks["fp32"] = max(fp32.values())
    lines = [f"- fp32 matmul peak ({n}^3, median of 7): " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in fp32.items())
             + f" GFLOP/s; fp32 rows' MFU is against {peaks['fp32'] / 1e9:.1f}"]  # fmt: skip
    if "bf16" in precisions:
        bf16 = {"jnp.dot bf16 -> bf16": jax_matmul_peak(n, "bfloat16"),
                "jnp.dot bf16 -> fp32 (our bf16 Linear layers)": jax_matmul_peak(n, "bfloat16",
                                                                                       out_dtype="float32"),
                "torch.matmul bf16": torch_matmul_peak(n, "bfloat16")}  # fmt: skip
        peaks["bf16"] = max(bf16.values())
        lines.append(f"- bf16 matmul peak ({n}^3, median of 7): " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in
                     bf16.items()) + f" GFLOP/s; bf16 rows' MFU is against {peaks['bf16'] / 1e9:.1f}")  # fmt: skip
    print("\n".join(lines), flush=True)
    return peaks


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; columns after the first three are right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in
                                 enumerate(zip(cells, widths, strict=True))) + " |"  # fmt: skip

    rule = "|" + "|".join("-" * (w + 1) + ":" if i >= 3 else ":" + "-" * (w + 1) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
