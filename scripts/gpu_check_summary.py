"""The gpu-check's summary table: a row or more a step, read from the reports the steps wrote,
so that one file (summary.md, printed last) shows the key figures side by side."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from gpu_check_machine import Machine, gpu_names
from gpu_check_runner import Runner, Step

CPU_DEMO = "15.20 / 35.03"  # `make demo` on the 2-core CPU (README): the same config's scores
OUT_FILES = ["gpu-check.log", "matrix.log", "model.jsonl", "train.json", "translate.json"]
OUT_FILES += ["distributed.json", "summary.md"]


class Summary:
    """Writes the table; a step's rows come from `rows_<step>`, else one row with its status."""

    def __init__(self, runner: Runner, machine: Machine) -> None:
        self.runner = runner
        self.machine = machine
        self.config = runner.config

    def text(self) -> str:
        info, total = self.machine.info, time.monotonic() - self.runner.start
        config = self.config
        sizes = "tiny sizes (GPU_CHECK_DEVICE=cpu)" if config.cpu else "full sizes"
        lines = [
            f"# GPU check: {gpu_names(info) or 'no GPU'} ({config.device}), "
            + time.strftime("%Y-%m-%d %H:%M"),
            "",
            f"torch {info.get('torch', '?')} (CUDA {info.get('cuda_build') or 'none'}), Python "
            f"{info.get('python', '?')}, {info.get('cpus', '?')} CPUs; {sizes}; {total:.0f} s "
            f"of a {config.budget:.0f} s budget.",
            *(f"- {note}" for note in self.runner.notes),
            "",
            "| step | status | s | configuration | measure | baseline | value | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for step in self.runner.steps:
            lines += self.step_lines(step)
        here = [name for name in OUT_FILES if (config.out / name).exists() or name == "summary.md"]
        lines += ["", f"Reports in this folder: {', '.join(here)}."]
        return "\n".join(lines) + "\n"

    def step_lines(self, step: Step) -> list[str]:
        """The step's table lines: its figures where its reports can be read, else its status."""
        rows = []
        if step.status == "ok":
            with contextlib.suppress(OSError, ValueError, LookupError, TypeError):
                rows = getattr(self, "rows_" + step.name.replace("-", "_"), lambda _: [])(step)
        if not rows:
            detail = step.note or ("" if step.status == "ok" else step.tail)
            rows = [[step.what, "", "", detail[:200], ""]]
        lines = []
        for i, row in enumerate(rows):
            first = [step.name, step.status, f"{step.seconds:.0f}"] if i == 0 else ["", "", ""]
            cells = [str(c).replace("|", "/") for c in first + row]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def report(self, name: str) -> list[dict[str, Any]]:
        return json.loads((self.config.out / f"{name}.json").read_text(encoding="utf-8"))["rows"]

    def rows_cuda(self, step: Step) -> list[list[str]]:
        return [[step.what, "GPU", "", gpu_names(self.machine.info), ""]]

    def rows_matrix(self, step: Step) -> list[list[str]]:
        return [[step.what, "tests", "", step.tail.strip("= "), ""]]

    def rows_data(self, step: Step) -> list[list[str]]:
        path = self.config.work / "data/manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        splits, vocab = manifest["splits"], manifest["tokenizers"][manifest["tgt"]]["vocab_size"]
        pairs = " / ".join(f"{s['pairs']:,}" for s in splits.values())
        tokens = sum(splits["train"]["tokens"].values())
        value = f"{pairs}; {tokens:,} tokens; vocabulary {vocab:,}"
        return [[step.what, "pairs (train / dev / test); training tokens", "", value, ""]]

    def rows_model(self, step: Step) -> list[list[str]]:
        text = (self.config.out / "model.jsonl").read_text(encoding="utf-8")
        events = [json.loads(line) for line in text.splitlines()]
        train = [e for e in events if e["event"] == "train"]
        valid = [e for e in events if e["event"] == "valid"]
        speeds = [e["tokens_per_s"] for e in train[1:] or train]  # the first window warms up
        last = train[-1]
        where = "GPU" if "gpu_peak_mib" in last else "RSS"
        value = (
            f"{sum(speeds) / len(speeds):,.0f}; {last.get('gpu_peak_mib', last['peak_rss_mib']):,}"
        )
        value += f"; {valid[-1]['bleu']:.2f}"
        measure = f"tokens/s; peak {where} MiB; dev BLEU (greedy)"
        return [[f"{step.what}, {last['step']} updates", measure, "", value, ""]]

    def rows_quality(self, step: Step) -> list[list[str]]:
        scores = json.loads((self.config.work / "quality.json").read_text(encoding="utf-8"))
        score = {s["name"]: s["score"] for s in scores}
        base = "" if self.config.cpu else f"CPU, make demo: {CPU_DEMO}"
        value = f"{score['bleu']:.2f} / {score['chrf']:.2f}"
        return [[step.what, "test BLEU / chrF", base, value, ""]]

    def rows_bench_train(self, step: Step) -> list[list[str]]:
        rows, out = self.report("train"), []
        for key in dict.fromkeys((r["arch"], r["emb"], r["hidden"]) for r in rows):
            mine = {r["precision"]: r for r in rows if (r["arch"], r["emb"], r["hidden"]) == key}
            fp32, bf16 = mine.get("fp32"), mine.get("bf16")
            ratio = (
                f"bf16 {bf16['tokens_per_s'] / fp32['tokens_per_s']:.2f}x" if fp32 and bf16 else ""
            )
            measure = "tokens/s (utilisation; peak MiB)"
            out.append(
                [f"{key[0]} {key[1]}x{key[2]}", measure, train_cell(fp32), train_cell(bf16), ratio]
            )
        return out

    def rows_bench_translate(self, step: Step) -> list[list[str]]:
        rows, out = self.report("translate"), []
        for beam in dict.fromkeys(r["beam"] for r in rows):
            mine = [r for r in rows if r["beam"] == beam]
            one = next(r for r in mine if r["mode"] == "one at a time")
            best = max((r for r in mine if r is not one), key=lambda r: r["sentences_per_s"])
            ratio = f"{best['sentences_per_s'] / one['sentences_per_s']:.1f}x"
            out.append(
                [
                    f"beam {beam}, {best['precision']}",
                    "sentences/s",
                    f"one at a time {one['sentences_per_s']}",
                    f"{best['mode']}: {best['sentences_per_s']}",
                    ratio,
                ]
            )
        return out

    def rows_bench_distributed(self, step: Step) -> list[list[str]]:
        rows = self.report("distributed")
        plain = next(r for r in rows if r["launch"] == "plain")
        return [
            [
                step.what,
                "tokens/s",
                f"plain {plain['tokens_per_s']:,}",
                f"torchrun, {r['processes']} process: {r['tokens_per_s']:,}",
                f"{r['vs_plain']:.3f}x",
            ]
            for r in rows
            if r["launch"] != "plain"
        ]


def train_cell(r: dict | None) -> str:
    """One precision's figures for bench train's table cell (empty where it did not run)."""
    if not r:
        return ""
    util = f"{r['utilisation_pct']}%; {r['peak_mem_mib']:,}"
    return f"{r['precision']} {r['tokens_per_s']:,} ({util})"
