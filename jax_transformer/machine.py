"""What a process runs on, for the reports of scripts and benchmarks: the CPU's name and the cores it may use."""

import functools
import os
import platform
import subprocess


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. under taskset), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpuinfo(field: str) -> str | None:
    """The value of /proc/cpuinfo's first line starting with `field` (its first CPU's); None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (avx2, avx512_bf16, ...); empty where there is none (not Linux)."""
    return frozenset((_cpuinfo("flags") or "").split())


@functools.cache
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (falling back to `lscpu`, then platform.processor())."""
    model = _cpuinfo("model name")
    if model is not None:
        return model
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """'CPU, N cores', or 'CPU, N of M cores' when this process may use only some (taskset)."""
    cores, total = available_cores(), os.cpu_count() or 1
    unit = "core" if total == 1 else "cores"
    return f"{cpu_model()}, {cores} {unit}" if cores == total else f"{cpu_model()}, {cores} of {total} {unit}"
