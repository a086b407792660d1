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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

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


def engine() -> str:
    return ("compiled (apslab_run_continuous)" if _compiled.continuous_loop() is not None
            else "Python reference loop (apslab.sim.continuous._Loop)")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    plan = json.loads(plan_json.read_text())
    runs = sum(row["runs"] for t in plan["gpu_types"].values() for row in t["rows"])
    shown = " ".join(c if not re.search(r"\s|[<>]", c) else repr(c)
                     for c in ["apslab", *command[3:]])
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "engine": engine(),
        "command": shown,
        "wall_s": wall,
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
        "| engine | wall time | search runs | target |",
        "| --- | ---: | ---: | --- |",
        f"| {result['engine']} | {wall:.1f} s | {runs} | <= {TARGET_SECONDS:.0f} s: {verdict} |",
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
