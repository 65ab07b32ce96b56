"""What a run writes besides checkpoints: `metrics.jsonl` (one JSON object per log / eval) and TensorBoard events."""

import json
import os
import time


class RunLog:
    def __init__(self, run_dir: str, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.start = time.time()
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(run_dir, flush_secs=30)

    def write(self, kind: str, step: int, values: dict) -> None:
        """Append {kind, step, wall time, values...} to metrics.jsonl and the same scalars to TensorBoard."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time() - self.start, 2), **values}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if isinstance(value, int | float):
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def timed_records(records: list[dict]):
    """Each record that has a `time`, with the wall time (seconds) of the training processes before the one that wrote
    it. A resumed run appends to the same metrics.jsonl with its clock restarted at 0: a new process is a "start"
    record (which every training process writes first) or, in logs from before those, a `time` that goes backwards."""
    offset, last = 0.0, 0.0
    for record in records:
        if "time" not in record:
            continue
        time = float(record["time"])
        if record.get("kind") == "start" or time < last:
            offset += last
        last = time
        yield record, offset


def earlier_sessions_seconds(records: list[dict]) -> float:
    """Wall time of a run's training processes before the latest one: what a resumed run adds to its own clock to
    report the whole run's time."""
    offsets = [offset for _, offset in timed_records(records)]
    return offsets[-1] if offsets else 0.0
