"""How long a capacity plan across GPU types takes: ``python benchmarks/plan_gpu_types.py``.

Times ``apslab plan`` end to end, as a whole process, on the published Azure conversation trace
(data/azure-llm-2023/, all 19,366 requests) for 3 GPU types (A100-80GB, H100-SXM-80GB, L4)
x 1..8 GPUs, against per-request targets (TTFT <= 0.5 s, TPOT <= 0.05 s, 90% attainment),
with the cheapest fleet for 10 req/s, on the default local process pool. It records which
continuous-engine loop ran (the compiled one when apslab/sim/_eventloop.c provides
``apslab_run_continuous``, else the Python reference loop), the machine, the wall time, the
number of search runs and the plan itself, in benchmarks/PLAN_GPU_TYPES.md (and .json); the
README quotes the figure. ``--smoke`` runs a toy-sized plan into a temporary folder (the test
suite uses it so this script never rots).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from run import cpu_name  # noqa: E402  (benchmarks/run.py, beside this script)

from apslab.sim import _compiled  # noqa: E402

TRACE = ROOT / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
SCENARIO = ROOT / "data" / "scenarios" / "conversation.toml"
GPU_TYPES = "A100-80GB,H100-SXM-80GB,L4"
TARGET_SECONDS = 120.0


def plan_command(gpus: str, span: float | None, json_path: Path) -> list[str]:
    command = [sys.executable, "-m", "apslab", "plan", str(SCENARIO.relative_to(ROOT)),
               "--trace", str(TRACE.relative_to(ROOT)), "--trace-format", "azure",
               "--tenant-weights", "chat=5,assist=3,batch=2", "--goodput", "ttft=0.5,tpot=0.05",
               "--min-attainment", "0.9", "--gpu-types", GPU_TYPES, "--gpus", gpus,
               "--target-rps", "10", "--no-progress", "--json", str(json_path)]
    if span is not None:
        command += ["--trace-span", repr(span)]
    return command


class CpuMeter(threading.Thread):
    """CPU seconds (user + system) of a process and all its descendants, read from /proc every
    0.2 s (the pool's workers are the forkserver's children, which rusage of children misses);
    0 where /proc is absent."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root, self.seen, self.done = pid, {}, threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _sample(self) -> None:
        parents, times = {}, {}
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / self.tick
        for pid, seconds in times.items():
            ancestor = pid
            while ancestor in parents and ancestor != self.root:
                ancestor = parents[ancestor]
            if ancestor == self.root:
                self.seen[pid] = max(self.seen.get(pid, 0.0), seconds)

    def run(self) -> None:
        while not self.done.wait(0.2):
            self._sample()

    def stop(self) -> None:
        self.done.set()
        self.join()

    def total(self) -> float:
        return float(sum(self.seen.values()))


def engine() -> str:
    return ("compiled (apslab_run_continuous)" if _compiled.continuous_loop() is not None
            else "Python reference loop (apslab.sim.continuous._Loop)")


def machine() -> str:
    cpu = cpu_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a toy plan (first 10 s of the trace, 1..2 GPUs) in a temp folder")
    parser.add_argument("--workdir", type=Path, help="write the results here (default: "
                                                      "benchmarks/, or a temp folder with --smoke)")
    args = parser.parse_args(argv)
    workdir = args.workdir or (Path(tempfile.mkdtemp(prefix="apslab-plan-bench-"))
                               if args.smoke else HERE)
    workdir.mkdir(parents=True, exist_ok=True)
    gpus, span = ("1..2", 10.0) if args.smoke else ("1..8", None)
    plan_json = workdir / "plan_gpu_types_plan.json"
    command = plan_command(gpus, span, plan_json)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    meter = CpuMeter(child.pid)
    meter.start()
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - started
    meter.stop()
    cpu = meter.total()
    load_after = os.getloadavg()[0]
    proc = subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    plan = json.loads(plan_json.read_text())
    runs = sum(row["runs"] for t in plan["gpu_types"].values() for row in t["rows"])
    shown = " ".join(c if not re.search(r"\s|[<>]", c) else repr(c)
                     for c in ["apslab", *command[3:]]).replace(f"{ROOT}/", "")
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "engine": engine(),
        "command": shown,
        "wall_s": wall,
        "cpu_s": cpu,  # the plan's processes and its workers, user + system
        "load_average": [load_before, load_after],  # 1-minute, before and after: sharing
        "search_runs": runs,
        "target_s": TARGET_SECONDS,
        "smoke": args.smoke,
    }
    (workdir / "PLAN_GPU_TYPES.json").write_text(json.dumps(result, indent=1) + "\n")
    verdict = "met" if wall <= TARGET_SECONDS else "not met"
    lines = [
        "# Capacity plan across GPU types: benchmark",
        "",
        f"Measured {result['date']} by `python benchmarks/plan_gpu_types.py` on: "
        f"{result['machine']}.",
        "",
        f"`apslab plan` on the published Azure conversation trace, 3 GPU types x {gpus} GPUs, "
        "as one process on the default local process pool:",
        "",
        f"    {shown}",
        "",
        "| engine | wall time | CPU time | search runs | target |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| {result['engine']} | {wall:.1f} s | {cpu:.1f} s | {runs} | "
        f"<= {TARGET_SECONDS:.0f} s: {verdict} |",
        "",
        f"CPU time is the plan's process and its workers together (user + system, sampled from "
        "/proc every 0.2 s). The machine is "
        f"shared: its 1-minute load average was {load_before:.1f} before and {load_after:.1f} "
        "after the run, so the wall time includes waiting for other work.",
        "",
        "The plan it printed:",
        "",
        "```",
        proc.stdout.rstrip(),
        "```",
        "",
    ]
    (workdir / "PLAN_GPU_TYPES.md").write_text("\n".join(lines))
    print(f"{wall:.1f} s, {runs} search runs, engine: {result['engine']} "
          f"(results in {workdir / 'PLAN_GPU_TYPES.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
