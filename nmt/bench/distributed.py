"""`nmt bench distributed`: training tokens/s under torchrun (DDP) against a plain run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmt.distributed import torchrun_command
from nmt.errors import NmtError


def bench_distributed(
    data_dir: Path,
    config: Path | None,
    processes: Sequence[int],
    steps: int,
    device: str,
    base: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Training tokens/s of `nmt train` run plainly and under torchrun with each number of
    processes, all with the same global batch (accum_steps = max(processes) / processes) and
    the machine's cores split between the processes. The figure is the mean of the logged
    windows after the first (start-up and warm-up excluded)."""
    most, cores = max(processes), os.cpu_count() or 1
    if min(processes) < 1 or any(most % n for n in processes):
        raise NmtError(
            f"process counts {list(processes)} must be at least 1 and all divide {most}, so that "
            "their global batches are equal",
            "--processes",
            "use counts that divide the largest, e.g. 1,2,4",
        )
    rows = []
    with tempfile.TemporaryDirectory(prefix="nmt-bench-") as tmp:
        for launch, n in [("plain", 1), *(("torchrun", n) for n in processes)]:
            run = Path(tmp) / f"{launch}{n}"
            args = ["train", *([str(config)] if config else []), "--data", str(data_dir)]
            args += ["--out", str(run), "--device", device]
            sets = [*base, f"train.max_steps={steps}", f"train.valid_every={steps}"]
            sets += [f"train.log_every={max(steps // 4, 1)}", f"train.accum_steps={most // n}"]
            args += [arg for item in sets for arg in ("--set", item)]
            plain = [sys.executable, "-m", "nmt", *args]
            cmd = plain if launch == "plain" else torchrun_command(n, args)
            threads = str(max(cores // n, 1))
            env = {**os.environ, "OMP_NUM_THREADS": threads}
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            windows = [
                json.loads(line)
                for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
            ]
            speeds = [w["tokens_per_s"] for w in windows if w["event"] == "train"][1:]
            rows.append(
                {
                    "launch": launch,
                    "processes": n,
                    "threads_each": int(threads),
                    "accum_steps": most // n,
                    "tokens_per_s": round(sum(speeds) / len(speeds)),
                }
            )
    for row in rows:
        row["vs_plain"] = round(row["tokens_per_s"] / rows[0]["tokens_per_s"], 3)
    return rows
