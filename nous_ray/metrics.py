"""Where metrics go: ``metrics.jsonl`` (one JSON object per step), TensorBoard, the Ray dashboard.

The JSONL file is appended and flushed per step, so a crash loses at most the step in flight; on
resume, lines from steps after the checkpoint are dropped so the file has each step once, and a run
that starts from the beginning (no checkpoint to resume from, e.g. one stopped during its warm start)
drops every earlier line: the rows always belong to the weights the run holds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)


class MetricsSink:
    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True,
                 ray_metrics: bool = True):
        """``resume_step``: the step of the checkpoint the run resumed from (rows after it are dropped);
        None: the run starts from the beginning (every earlier row is dropped)."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._truncate_after(-1 if resume_step is None else resume_step)
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=0 if resume_step is None else resume_step + 1)
            except Exception as e:  # TensorBoard is a view, never a reason to stop training
                log.warning("TensorBoard disabled: %s", e)
        self._gauges: dict = {}
        self._ray_metrics = ray_metrics

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                pass  # a line torn by a crash
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def _gauge(self, key: str):
        if key not in self._gauges:
            from ray.util.metrics import Gauge

            # Prometheus names allow [a-zA-Z0-9_:] only: eval/pass@1 -> nous_ray_eval_pass_1
            name = "nous_ray_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)
            self._gauges[key] = Gauge(name, description=key)
        return self._gauges[key]

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": step, **metrics}
        self._file.write(json.dumps(row, default=float) + "\n")
        self._file.flush()
        numeric = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._ray_metrics:
            try:
                for k, v in numeric.items():
                    self._gauge(k).set(v)
            except Exception as e:
                log.warning("Ray dashboard metrics disabled: %s", e)
                self._ray_metrics = False

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
