import os
import subprocess
import sys

from jax_transformer import machine
from tests.scripts import load_script

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


def test_results_report_the_machines_a_run_trained_on():
    """scripts/multi30k_results.py: each training process's "start" record, in order, without repeats; a run from
    before those records says that the machine named is the scoring one."""
    results = load_script("multi30k_results")
    start = lambda hardware: {"kind": "start", "step": 0, "hardware": hardware}  # noqa: E731
    records = [start("AMD EPYC, 1 of 2 cores"), {"kind": "train", "step": 50}, start("AMD EPYC, 1 of 2 cores"),
               start("AMD EPYC, 2 cores")]  # fmt: skip
    assert results.training_hardware(records, "here") == "AMD EPYC, 1 of 2 cores / AMD EPYC, 2 cores"
    assert results.training_hardware([{"kind": "train", "step": 50}], "here") == (
        "here (the scoring machine: training's was not logged)")
