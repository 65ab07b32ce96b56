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


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (avx2, avx512_bf16, ...); empty where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (falling back to `lscpu`, then platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
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
