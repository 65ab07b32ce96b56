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


def earlier_sessions_seconds(records: list[dict]) -> float:
    """Wall time of a run's training processes before the latest one (each process writes a "start" record first and
    counts its `time` from 0): what a resumed run adds to its own clock to report the whole run's time."""
    sessions, last = [], 0.0
    for record in records:
        if record.get("kind") == "start":
            sessions.append(last)
            last = 0.0
        elif "time" in record:
            last = max(last, float(record["time"]))
    return sum(sessions)
