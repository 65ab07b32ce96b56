import os
import subprocess
import sys

from jax_transformer import machine

PROBE = (
    "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
    "from jax_transformer import machine; print(machine.available_cores(), machine.describe(), sep='|')"
)


def test_describe_names_the_cpu_and_the_cores_this_process_may_use():
    assert machine.describe().startswith(machine.cpu_model() + ", ")
    # pinned to one core (as `taskset -c 0` does), the report says so
    cores, described = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                      check=True).stdout.strip().split("|")  # fmt: skip
    total = os.cpu_count()
    assert cores == "1"
    assert described.endswith(", 1 core" if total == 1 else f", 1 of {total} cores")
