"""A run's log: TensorBoard scalars, the same in metrics.csv."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from streambed.core.fileio import atomic_write_bytes

log = logging.getLogger(__name__)


class RunLog:
    """metrics.csv and TensorBoard events. ``resumed_at`` (the env steps and elapsed seconds of
    the last.pt a run resumes from) drops what was logged after that state was saved: the
    resumed run logs those iterations again."""

    def __init__(self, out: Path, resumed_at: tuple[int, float] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.csv_path = out / "metrics.csv"
        if resumed_at is None:
            self.csv_path.unlink(missing_ok=True)
            self.writer = SummaryWriter(str(out / "tb"))
        else:
            steps, elapsed = resumed_at
            self._truncate_csv(float(f"{elapsed:.3f}"))
            # TensorBoard hides the earlier files' events from this step on.
            self.writer = SummaryWriter(str(out / "tb"), purge_step=steps + 1)

    def _truncate_csv(self, until_s: float) -> None:
        """Keep the header and the rows logged up to ``until_s`` (their wall_s column)."""
        if not self.csv_path.is_file():
            return
        lines = self.csv_path.read_text().splitlines(keepends=True)
        keep = len(lines)
        for i, row in enumerate(csv.reader(lines)):
            try:
                later = i > 0 and float(row[1]) > until_s
            except (IndexError, ValueError):
                later = False  # a damaged row stays where it is
            if later:
                keep = i
                break
        if keep < len(lines):
            atomic_write_bytes(self.csv_path, "".join(lines[:keep]).encode())
            log.info("metrics.csv: dropped %d row(s) logged after last.pt", len(lines) - keep)

    def scalars(self, step: int, wall_s: float, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as fh:
            writer = csv.writer(fh)
            for key, value in values.items():
                if new:
                    writer.writerow(["env_steps", "wall_s", "name", "value"])
                    new = False
                writer.writerow([step, f"{wall_s:.3f}", key, f"{value:.6g}"])

    def close(self) -> None:
        self.writer.close()
