"""apslab's speed and memory benchmark: ``make bench`` (or ``python benchmarks/run.py``).

1. Headline: a seeded 1,000,000-request trace for 100 tenants near saturation (max_batch_size
   32, a tenth of the tenants rate-limited, three bid levels, aging on) run end to end by
   ``apslab simulate`` (TOML and CSV in, SUMMARY.json and REQUESTS.csv out) and by the SimPy
   baseline (benchmarks/simpy_baseline.py), as whole processes, alternating A B A B; median wall
   time, their ratio, and each process's peak RSS from the OS (os.wait4). The two REQUESTS.csv
   files must be identical.
2. Scaling: time per request at 10k, 100k and 1M requests, and with 10 versus 10,000 tenants at
   the same request count, timed inside the process (interpreter start-up excluded).
3. The queues: pop cost versus queue length for the lazy and the eager aging queue, plotted to
   benchmarks/pop_cost.png.
4. The continuous engine: 50,000 requests on two GPUs (mean 128 output tokens) by ``apslab
   simulate`` and by the straightforward pure-Python baseline (benchmarks/continuous_baseline.py),
   alternating, with identical REQUESTS.csv; 1,000,000 such requests end to end (wall time and
   peak RSS); time per request at 10k, 100k and 1M inside the process.

Results go to benchmarks/RESULTS.md (and RESULTS.json) with the machine and the date, and the
headline bullets to docs/performance.md; figures are ratios measured in the same session.
``--smoke`` runs everything at toy sizes into a temporary folder (the test suite uses it so this
script never rots).
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import filecmp
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from apslab.io.scenario import parse_scenario  # noqa: E402
from apslab.io.trace import write_trace  # noqa: E402
from apslab.io.workload import generate_trace  # noqa: E402

SEED = 20261129
SPEED_TARGET = 3.0
MEMORY_TARGET = 0.5
FLATNESS_LIMIT = 1.5


# ----------------------------------------------------------------------------------------------
# Workloads


def benchmark_scenario(tenants: int, requests: int, limited_every: int = 10) -> dict:
    """A scenario dict near saturation: max batch 32, aging on, three bid levels.

    Chat-like requests (prompt lognormal, median 200 tokens; output geometric, mean 100) arrive
    at 1.85 requests/s in total, about 95% of what one seed A100 serves at these batch sizes.
    Every ``limited_every``-th tenant has a rate limit below its demand.
    """
    total_rate = 1.85
    per_tenant = total_rate / tenants
    demand_tokens_per_s = per_tenant * 300  # ~ (median 200 prompt + mean 100 output) per request
    table = {
        "scheduler": {"max_batch_size": 32, "aging_per_s": 0.001, "batch_window_ms": 10.0},
        "tenants": [],
        "workload": {"duration_s": requests / total_rate, "seed": SEED, "tenants": []},
    }
    for i in range(tenants):
        limited = i % limited_every == 0
        table["tenants"].append({
            "id": f"tenant-{i:05d}",
            "rate_limit": round(demand_tokens_per_s * (0.6 if limited else 50.0), 6),
            "burst_cap": 8000.0,
        })
        table["workload"]["tenants"].append({
            "id": f"tenant-{i:05d}",
            "arrival_rate_per_s": per_tenant,
            "priority_bid": float(1 + i % 3),
            "prompt_tokens": {"dist": "lognormal", "median": 200, "sigma": 0.7, "max": 4096},
            "output_tokens": {"dist": "geometric", "mean": 100},
        })
    return table


def write_workload(directory: Path, name: str, tenants: int, requests: int) -> tuple[Path, Path]:
    """Write SCENARIO.toml and TRACE.csv for a benchmark workload; returns their paths.

    The trace is generated in a child process, so this process stays small: a process started
    later is forked from it, and the OS counts the fork's size, before it runs the measured
    program, in that program's peak RSS.
    """
    scenario_path, trace_path = directory / f"{name}.toml", directory / f"{name}.csv"
    subprocess.run([sys.executable, __file__, "--write-workload", str(scenario_path),
                    str(trace_path), str(tenants), str(requests)], check=True)
    return scenario_path, trace_path


def _write_workload_here(scenario_path: Path, trace_path: Path, tenants: int,
                         requests: int) -> None:
    """The scenario file keeps only what a replay reads (GPU, scheduler, tenants): the
    [workload] section that generated the trace would only add TOML parsing to the timings."""
    scenario = parse_scenario(benchmark_scenario(tenants, requests), source=str(scenario_path))
    write_trace(trace_path, generate_trace(scenario.workload))
    replay = scenario.to_dict()
    del replay["workload"]
    parse_scenario(replay, source=str(scenario_path)).write(scenario_path)


# ----------------------------------------------------------------------------------------------
# Measuring processes


# Runs argv[1:] as a grandchild and reports its peak RSS. A child's peak RSS as the OS records it
# includes the memory of the process it was forked (or vfork-spawned) from, up to the exec; a
# small launcher in between keeps that from being this benchmark's own peak.
_LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(command: list[str], cwd: Path) -> tuple[float, int]:
    """Run a command to completion: (wall seconds, peak RSS in MiB of that very process)."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    *output, report = proc.stderr.strip().splitlines() or [""]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n"
                           + "\n".join(output))
    wall, peak_kib = report.split()
    return float(wall), int(peak_kib) // 1024  # Linux reports KiB


def apslab_command(scenario: Path, trace: Path, out: Path, tag: str) -> list[str]:
    return [sys.executable, "-m", "apslab", "simulate", str(scenario), "--trace", str(trace),
            "--summary", str(out / f"apslab_{tag}.json"),
            "--requests", str(out / f"apslab_{tag}.csv"), "--quiet"]


def baseline_command(scenario: Path, trace: Path, out: Path, tag: str) -> list[str]:
    return [sys.executable, str(HERE / "simpy_baseline.py"), str(scenario), str(trace),
            str(out / f"simpy_{tag}.json"), str(out / f"simpy_{tag}.csv")]


def headline(workdir: Path, scenario: Path, trace: Path, rounds: int) -> dict:
    """Alternate apslab and the baseline; medians, ratios and peak memory."""
    walls: dict[str, list[float]] = {"apslab": [], "simpy": []}
    peaks: dict[str, list[int]] = {"apslab": [], "simpy": []}
    for round_index in range(rounds):
        for name, make in (("apslab", apslab_command), ("simpy", baseline_command)):
            wall, peak = run_measured(make(scenario, trace, workdir, "headline"), workdir)
            walls[name].append(wall)
            peaks[name].append(peak)
            print(f"  round {round_index + 1}: {name:<6} {wall:7.2f} s  {peak:5d} MiB",
                  flush=True)
        if round_index == 0:
            same = filecmp.cmp(workdir / "apslab_headline.csv", workdir / "simpy_headline.csv",
                               shallow=False)  # in 8 KiB pieces: keeps this process small
            if not same:
                raise RuntimeError("apslab and the SimPy baseline wrote different REQUESTS.csv")
    median = {name: statistics.median(values) for name, values in walls.items()}
    peak = {name: max(values) for name, values in peaks.items()}
    return {
        "rounds": rounds,
        "wall_s": walls,
        "median_wall_s": median,
        "peak_rss_mib": peak,
        "speedup": median["simpy"] / median["apslab"],
        "memory_ratio": peak["apslab"] / peak["simpy"],
        "per_round_speedup": [s / a for a, s in zip(walls["apslab"], walls["simpy"],
                                                     strict=True)],
        "identical_requests_csv": True,
    }


# ----------------------------------------------------------------------------------------------
# Scaling, timed inside a fresh process (interpreter start-up and imports excluded)

_TIMED_RUN = """
import sys, time, json, statistics
import apslab.cli as cli
# Warm up on a 100-request prefix: lazy imports and first-call set-up are start-up, not work.
cli.main(["simulate", sys.argv[1], "--trace", sys.argv[5], "--summary", sys.argv[3],
          "--requests", sys.argv[4], "--quiet"])
seconds = []
for _ in range(int(sys.argv[6])):
    started = time.perf_counter()
    cli.main(["simulate", sys.argv[1], "--trace", sys.argv[2], "--summary", sys.argv[3],
              "--requests", sys.argv[4], "--quiet"])
    seconds.append(time.perf_counter() - started)
print(json.dumps({"seconds": statistics.median(seconds)}))
"""


def timed_once(scenario: Path, trace: Path, workdir: Path, requests: int) -> float:
    """Seconds of ``apslab simulate`` inside a fresh process, after a warm-up run.

    Small traces run several times in that process (the median is kept), so a 30 ms run is not
    at the mercy of one scheduling hiccup; a million-request run once.
    """
    repeats_inside = max(1, min(9, 300_000 // requests))
    warmup = trace.with_suffix(".warmup.csv")
    if not warmup.exists():
        with open(trace) as source:
            warmup.write_text("".join(line for _, line in zip(range(101), source, strict=False)))
    proc = subprocess.run([sys.executable, "-c", _TIMED_RUN, str(scenario), str(trace),
                           str(workdir / "scaling.json"), str(workdir / "scaling.csv"),
                           str(warmup), str(repeats_inside)],
                          capture_output=True, text=True, check=True, cwd=workdir)
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def interleaved(cases: dict, workdir: Path, repeats: int) -> dict:
    """Median seconds per case, the cases run in turn (A B C A B C ...) so drift hits all.

    ``cases`` maps a key to (scenario, trace, requests).
    """
    seconds: dict = {key: [] for key in cases}
    for _ in range(repeats):
        for key, (scenario, trace, requests) in cases.items():
            seconds[key].append(timed_once(scenario, trace, workdir, requests))
    return {key: statistics.median(values) for key, values in seconds.items()}


def scaling(workdir: Path, sizes: list[int], tenant_counts: list[int], tenant_requests: int,
            repeats: int) -> dict:
    size_cases = {size: (*write_workload(workdir, f"size_{size}", 100, size), size)
                  for size in sizes}
    tenant_cases = {count: (*write_workload(workdir, f"tenants_{count}", count, tenant_requests),
                            tenant_requests) for count in tenant_counts}
    by_size = {}
    for size, seconds in interleaved(size_cases, workdir, repeats).items():
        by_size[size] = {"seconds": seconds, "us_per_request": seconds / size * 1e6}
        print(f"  {size:>9,} requests: {seconds:6.2f} s  "
              f"{by_size[size]['us_per_request']:.2f} us/request", flush=True)
    by_tenants = {}
    for count, seconds in interleaved(tenant_cases, workdir, repeats).items():
        by_tenants[count] = {"seconds": seconds, "us_per_request": seconds / tenant_requests * 1e6}
        print(f"  {count:>9,} tenants:  {seconds:6.2f} s  "
              f"{by_tenants[count]['us_per_request']:.2f} us/request", flush=True)

    def spread(rows):
        per_request = [row["us_per_request"] for row in rows.values()]
        return max(per_request) / min(per_request)

    return {"by_size": by_size, "by_tenants": by_tenants, "tenant_requests": tenant_requests,
            "repeats": repeats, "size_spread": spread(by_size),
            "tenant_spread": spread(by_tenants)}


# ----------------------------------------------------------------------------------------------
# Queues: pop cost versus queue length


def pop_cost(lengths: list[int], pops: int, seed: int = SEED) -> dict:
    """Microseconds per pop (with a push to keep the length) for both aging queues."""
    from apslab.core.aging_queue import EagerAgingQueue, LazyAgingQueue

    rng = np.random.default_rng(seed)
    results: dict[str, dict[int, float]] = {"lazy": {}, "eager": {}}
    for length in lengths:
        for name, cls in (("lazy", LazyAgingQueue), ("eager", EagerAgingQueue)):
            queue = cls(aging_per_s=0.01)
            # The eager queue's pops cost O(length): fewer of them keep the run short.
            count = pops if name == "lazy" else max(20, min(pops, 2_000_000 // length))
            bids = rng.choice([1.0, 2.0, 3.0], size=length + count).tolist()
            for rid in range(length):
                queue.push(rid, bids[rid], rid * 0.001)
            now = length * 0.001
            started = time.perf_counter()
            for rid in range(length, length + count):
                now += 0.001
                queue.pop(now)
                queue.push(rid, bids[rid], now)
            results[name][length] = (time.perf_counter() - started) / count * 1e6
    return results


def plot_pop_cost(costs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("lazy", "o-"), ("eager", "s-")):
        lengths = sorted(costs[name])
        ax.loglog(lengths, [costs[name][n] for n in lengths], style,
                  label=f"{name} queue")
    ax.set_xlabel("requests waiting in the queue")
    ax.set_ylabel("microseconds per pop (+ push)")
    ax.set_title("Aging queues: lazy key O(log n) vs eager re-heapify O(n)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# The continuous engine

CONTINUOUS_SPEED_TARGET = 10.0
CONTINUOUS_SECONDS_TARGET = 60.0
CONTINUOUS_MEMORY_TARGET_MIB = 1024


def continuous_scenario(requests: int) -> dict:
    """Two A100s (the calibrated roofline, Llama-2-7B) with continuous batching, three tenants.

    Prompts lognormal (median 500 tokens), outputs geometric with mean 128; 19 requests/s in
    all, about 80% of what the two GPUs sustain when overloaded with this mix.
    """
    rate = 19.0
    names = ("chat", "assist", "batch")
    table = {
        "scheduler": {"batching": "continuous", "aging_per_s": 0.001},
        "cluster": {"gpus": 2},
        "tenants": [{"id": name, "rate_limit": 1e9, "burst_cap": 1e9,
                     "priority_bid": float(3 - i)} for i, name in enumerate(names)],
        "workload": {"duration_s": requests / rate, "seed": SEED, "tenants": [
            {"id": name, "arrival_rate_per_s": rate / len(names),
             "prompt_tokens": {"dist": "lognormal", "median": 500, "sigma": 0.6, "max": 4000},
             "output_tokens": {"dist": "geometric", "mean": 128, "max": 4000}}
            for name in names]},
    }
    return table


def _write_continuous_here(scenario_path: Path, trace_path: Path, requests: int) -> None:
    scenario = parse_scenario(continuous_scenario(requests), source=str(scenario_path))
    write_trace(trace_path, generate_trace(scenario.workload))
    replay = scenario.to_dict()
    del replay["workload"]
    parse_scenario(replay, source=str(scenario_path)).write(scenario_path)


def write_continuous_workload(directory: Path, name: str, requests: int) -> tuple[Path, Path]:
    scenario_path, trace_path = directory / f"{name}.toml", directory / f"{name}.csv"
    subprocess.run([sys.executable, __file__, "--write-continuous", str(scenario_path),
                    str(trace_path), str(requests)], check=True)
    return scenario_path, trace_path


def continuous_baseline_command(scenario: Path, trace: Path, out: Path, tag: str) -> list[str]:
    return [sys.executable, str(HERE / "continuous_baseline.py"), str(scenario), str(trace),
            str(out / f"baseline_{tag}.csv")]


def continuous(workdir: Path, compare_requests: int, large_requests: int, sizes: list[int],
               rounds: int, repeats: int) -> dict:
    """The continuous engine against its baseline, at a million requests, and its scaling."""
    scenario, trace = write_continuous_workload(workdir, "continuous", compare_requests)
    walls: dict[str, list[float]] = {"apslab": [], "baseline": []}
    peaks: dict[str, list[int]] = {"apslab": [], "baseline": []}
    for round_index in range(rounds):
        for name, make in (("apslab", apslab_command), ("baseline", continuous_baseline_command)):
            wall, peak = run_measured(make(scenario, trace, workdir, "continuous"), workdir)
            walls[name].append(wall)
            peaks[name].append(peak)
            print(f"  round {round_index + 1}: {name:<8} {wall:7.2f} s  {peak:5d} MiB",
                  flush=True)
        if round_index == 0 and not filecmp.cmp(workdir / "apslab_continuous.csv",
                                                workdir / "baseline_continuous.csv",
                                                shallow=False):
            raise RuntimeError("apslab and the continuous baseline wrote different REQUESTS.csv")
    median = {name: statistics.median(values) for name, values in walls.items()}
    large_scenario, large_trace = write_continuous_workload(workdir, "continuous_large",
                                                            large_requests)
    large = [run_measured(apslab_command(large_scenario, large_trace, workdir, "large"), workdir)
             for _ in range(max(1, rounds // 2))]
    print(f"  {large_requests:,} requests end to end: "
          + ", ".join(f"{wall:.2f} s {peak} MiB" for wall, peak in large), flush=True)
    cases = {size: (*write_continuous_workload(workdir, f"continuous_{size}", size), size)
             for size in sizes}
    by_size = {}
    for size, seconds in interleaved(cases, workdir, repeats).items():
        by_size[size] = {"seconds": seconds, "us_per_request": seconds / size * 1e6}
        print(f"  {size:>9,} requests: {seconds:6.2f} s  "
              f"{by_size[size]['us_per_request']:.2f} us/request", flush=True)
    per_request = [row["us_per_request"] for row in by_size.values()]
    return {
        "compare_requests": compare_requests,
        "rounds": rounds,
        "wall_s": walls,
        "median_wall_s": median,
        "peak_rss_mib": {name: max(values) for name, values in peaks.items()},
        "speedup": median["baseline"] / median["apslab"],
        "identical_requests_csv": True,
        "large_requests": large_requests,
        "large_wall_s": statistics.median(wall for wall, _ in large),
        "large_peak_rss_mib": max(peak for _, peak in large),
        "by_size": by_size,
        "size_spread": max(per_request) / min(per_request),
        "repeats": repeats,
    }


def render_continuous(cont: dict) -> list[str]:
    wall, peak = cont["median_wall_s"], cont["peak_rss_mib"]
    return [
        "",
        f"## The continuous engine: {cont['compare_requests']:,} requests, two GPUs",
        "",
        "`apslab simulate` on a continuous-batching scenario (two roofline A100s, prompts "
        "lognormal with median 500 tokens, outputs geometric with mean 128, about 80% load) "
        "against benchmarks/continuous_baseline.py, a straightforward pure-Python "
        "implementation of the same rules (an object per request, a heap, a list per GPU), "
        "each as a whole process, alternating. Both wrote byte-identical REQUESTS.csv files.",
        "",
        "| | median wall time | peak RSS |",
        "| --- | --- | --- |",
        f"| apslab | {wall['apslab']:.2f} s | {peak['apslab']} MiB |",
        f"| pure-Python baseline | {wall['baseline']:.2f} s | {peak['baseline']} MiB |",
        f"| **ratio** | **{cont['speedup']:.1f}x faster** (target >= "
        f"{CONTINUOUS_SPEED_TARGET:g}x) | |",
        "",
        f"Rounds: {cont['rounds']}; wall times apslab "
        f"{', '.join(f'{x:.2f}' for x in cont['wall_s']['apslab'])} s, baseline "
        f"{', '.join(f'{x:.2f}' for x in cont['wall_s']['baseline'])} s.",
        "",
        f"**{cont['large_requests']:,} such requests** end to end (TOML and CSV in, SUMMARY.json "
        f"and REQUESTS.csv out): {cont['large_wall_s']:.2f} s (target < "
        f"{CONTINUOUS_SECONDS_TARGET:g} s), peak RSS {cont['large_peak_rss_mib']} MiB (target < "
        f"{CONTINUOUS_MEMORY_TARGET_MIB} MiB).",
        "",
        f"Time per request inside the process (median of {cont['repeats']} fresh processes):",
        "",
        *_timing_table("requests", cont["by_size"]),
        "",
        f"Spread of time per request: {cont['size_spread']:.2f}x (target <= "
        f"{FLATNESS_LIMIT}x).",
    ]


def continuous_targets(cont: dict, sizes: list[int]) -> dict[str, bool]:
    return {
        f"continuous engine at least {CONTINUOUS_SPEED_TARGET:g}x faster than its pure-Python "
        f"baseline on {cont['compare_requests']:,} requests (measured {cont['speedup']:.1f}x)":
            cont["speedup"] >= CONTINUOUS_SPEED_TARGET,
        f"{cont['large_requests']:,} continuous requests in under "
        f"{CONTINUOUS_SECONDS_TARGET:g} s (measured {cont['large_wall_s']:.2f} s)":
            cont["large_wall_s"] < CONTINUOUS_SECONDS_TARGET,
        f"... and under {CONTINUOUS_MEMORY_TARGET_MIB} MiB peak (measured "
        f"{cont['large_peak_rss_mib']} MiB)":
            cont["large_peak_rss_mib"] < CONTINUOUS_MEMORY_TARGET_MIB,
        f"continuous time per request flat within {FLATNESS_LIMIT}x from {sizes[0]:,} to "
        f"{sizes[-1]:,} requests (measured {cont['size_spread']:.2f}x)":
            cont["size_spread"] <= FLATNESS_LIMIT,
    }


# ----------------------------------------------------------------------------------------------
# Report


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what platform knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    cpu = cpu_name()
    try:
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
        memory_text = f"{memory} GiB RAM"
    except (OSError, ValueError, IndexError):
        memory_text = "RAM unknown"
    import simpy

    return (f"{cpu}, {os.cpu_count()} cores, {memory_text}; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, numpy {np.__version__}, "
            f"SimPy {simpy.__version__}")


def _timing_table(first_column: str, rows: dict) -> list[str]:
    lines = [f"| {first_column} | seconds | microseconds per request |", "| --- | --- | --- |"]
    lines += [f"| {int(key):,} | {row['seconds']:.2f} | {row['us_per_request']:.2f} |"
              for key, row in rows.items()]
    return lines


def render(results: dict) -> str:
    head, scale, queues = results["headline"], results["scaling"], results["pop_cost"]
    lines = [
        "# apslab benchmark results",
        "",
        f"Measured {results['date']} by `make bench` (benchmarks/run.py) on: "
        f"{results['machine']}.",
        "Every figure below comes from that one run; ratios compare runs made in the same "
        "session, alternating A B A B.",
        "",
        f"## Headline: {results['requests']:,} requests, {results['tenants']} tenants",
        "",
        "`apslab simulate` end to end (TOML and CSV in, SUMMARY.json and REQUESTS.csv out) "
        "against the SimPy baseline (benchmarks/simpy_baseline.py), each as a whole process. "
        "Both wrote byte-identical REQUESTS.csv files.",
        "",
        "| | median wall time | peak RSS |",
        "| --- | --- | --- |",
        f"| apslab | {head['median_wall_s']['apslab']:.2f} s | "
        f"{head['peak_rss_mib']['apslab']} MiB |",
        f"| SimPy baseline | {head['median_wall_s']['simpy']:.2f} s | "
        f"{head['peak_rss_mib']['simpy']} MiB |",
        f"| **ratio** | **{head['speedup']:.2f}x faster** (target >= {SPEED_TARGET}x) | "
        f"**{head['memory_ratio']:.2f}x the memory** (target <= {MEMORY_TARGET}x) |",
        "",
        f"Rounds: {head['rounds']}; wall times apslab "
        f"{', '.join(f'{x:.2f}' for x in head['wall_s']['apslab'])} s, SimPy "
        f"{', '.join(f'{x:.2f}' for x in head['wall_s']['simpy'])} s; per-round speed-ups "
        f"{', '.join(f'{x:.2f}' for x in head['per_round_speedup'])}.",
        "",
        "## Scaling (timed inside the process, start-up excluded)",
        "",
        f"Each figure is the median of {scale['repeats']} fresh processes, the cases run in turn. "
        "Each process first simulates a 100-request prefix (imports and first-call set-up are "
        "start-up, not work), then times the run (traces under 300,000 requests several times, "
        "keeping the median).",
        "",
        *_timing_table("requests", scale["by_size"]),
        "",
        f"Spread of time per request: {scale['size_spread']:.2f}x "
        f"(target <= {FLATNESS_LIMIT}x).",
        "",
        *_timing_table(f"tenants ({scale['tenant_requests']:,} requests)",
                       scale["by_tenants"]),
    ]
    lines += [
        "",
        f"Spread: {scale['tenant_spread']:.2f}x (target <= {FLATNESS_LIMIT}x).",
        *render_continuous(results["continuous"]),
        "",
        "## Aging queues: pop cost versus queue length",
        "",
        "![pop cost](pop_cost.png)",
        "",
        "| waiting requests | lazy (us per pop) | eager (us per pop) |",
        "| --- | --- | --- |",
    ]
    for length in sorted(queues["lazy"]):
        lines.append(f"| {int(length):,} | {queues['lazy'][length]:.2f} | "
                     f"{queues['eager'][length]:.1f} |")
    lines += ["", "## Targets", ""]
    for name, ok in results["targets"].items():
        lines.append(f"- {'met' if ok else 'NOT met'}: {name}")
    notes = HERE / "PROFILE_NOTES.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    return "\n".join(lines) + "\n"


PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
PERFORMANCE_MARKERS = ("<!-- performance:start -->\n", "<!-- performance:end -->")


def performance_block(results: dict) -> str:
    """docs/performance.md's bullets, from a run's results (tests check they agree)."""
    head, scale, queues = results["headline"], results["scaling"], results["pop_cost"]
    wall = head["median_wall_s"]
    lazy = {int(k): v for k, v in queues["lazy"].items()}
    eager = {int(k): v for k, v in queues["eager"].items()}
    small, large = min(lazy), max(lazy)
    cont = results["continuous"]
    cont_wall = cont["median_wall_s"]
    return (
        f"* **{head['speedup']:.1f}x faster** than the SimPy baseline (median wall time "
        f"{wall['apslab']:.2f} s against {wall['simpy']:.2f} s);\n"
        f"* **{head['memory_ratio']:.2f}x its peak memory** ({head['peak_rss_mib']['apslab']} MiB "
        f"against {head['peak_rss_mib']['simpy']} MiB);\n"
        f"* time per request flat from {min(map(int, scale['by_size'])):,} to "
        f"{max(map(int, scale['by_size'])):,} requests (spread {scale['size_spread']:.2f}x) and "
        f"from\n  {min(map(int, scale['by_tenants'])):,} to {max(map(int, scale['by_tenants'])):,} "
        f"tenants (spread {scale['tenant_spread']:.2f}x);\n"
        f"* a lazy-aging pop costs {lazy[small]:.1f} us with {small:,} requests waiting and "
        f"{lazy[large]:.1f} us with {large:,};\n"
        f"  the eager queue's {eager[small]:.0f} us and {eager[large]:,.0f} us;\n"
        f"* the continuous engine: **{cont['speedup']:.0f}x faster** than its pure-Python "
        f"baseline on {int(cont['compare_requests']):,}\n  requests ({cont_wall['apslab']:.2f} s "
        f"against {cont_wall['baseline']:.2f} s, identical REQUESTS.csv); "
        f"{int(cont['large_requests']):,} requests\n  end to end in "
        f"{cont['large_wall_s']:.2f} s with a peak of {cont['large_peak_rss_mib']} MiB; time per "
        f"request flat from\n  {min(map(int, cont['by_size'])):,} to "
        f"{max(map(int, cont['by_size'])):,} requests (spread {cont['size_spread']:.2f}x).\n"
    )


def update_performance_doc(results: dict, page: Path = PERFORMANCE_DOC) -> None:
    """Put this run's figures between the performance markers of ``page`` (docs/performance.md).

    A page without both markers is an error rather than silently left stale.
    """
    text = page.read_text(encoding="utf-8")
    start, end = PERFORMANCE_MARKERS
    if start not in text or end not in text:
        raise ValueError(f"{page} lacks the performance markers {start.strip()} ... {end}")
    head, rest = text.split(start, 1)
    page.write_text(head + start + performance_block(results) + end + rest.split(end, 1)[1],
                    encoding="utf-8")


def byte_compile_package() -> None:
    """Write apslab's .pyc files before timing anything.

    An editable install is not byte-compiled, and under PYTHONDONTWRITEBYTECODE Python never
    caches it, so every timed process would recompile ~40 modules (~40 ms) that a normal
    install compiles once. Python reads existing .pyc files even with that variable set.
    """
    if not compileall.compile_dir(str(ROOT / "apslab"), quiet=1):
        raise RuntimeError("could not byte-compile apslab")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write-workload"]:
        scenario_path, trace_path, tenants, requests = argv[1:5]
        _write_workload_here(Path(scenario_path), Path(trace_path), int(tenants), int(requests))
        return 0
    if argv[:1] == ["--write-continuous"]:
        scenario_path, trace_path, requests = argv[1:4]
        _write_continuous_here(Path(scenario_path), Path(trace_path), int(requests))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="toy sizes into a temporary folder; checks the script works")
    parser.add_argument("--rounds", type=int, default=None, help="A B rounds for the headline")
    parser.add_argument("--out", type=Path, default=None, help="where to write RESULTS.md")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for generated traces and outputs (default: a temp folder)")
    args = parser.parse_args(argv)

    if args.smoke:
        requests, tenants, rounds = 3000, 20, args.rounds or 1
        sizes, tenant_counts, tenant_requests, repeats = [1000, 3000], [5, 50], 2000, 1
        lengths, pops = [10, 100], 200
        compare, large, cont_sizes = 300, 1000, [300, 1000]
    else:
        requests, tenants, rounds = 1_000_000, 100, args.rounds or 5
        sizes, tenant_counts, tenant_requests, repeats = [10_000, 100_000, 1_000_000], \
            [10, 10_000], 1_000_000, 5
        lengths, pops = [100, 300, 1000, 3000, 10_000, 30_000], 2000
        compare, large, cont_sizes = 50_000, 1_000_000, [10_000, 100_000, 1_000_000]

    byte_compile_package()
    with tempfile.TemporaryDirectory(prefix="apslab-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        out = args.out or (workdir / "RESULTS.md" if args.smoke else HERE / "RESULTS.md")
        plot_path = out.parent / "pop_cost.png"
        print(f"writing the {requests:,}-request benchmark workload ...", flush=True)
        scenario, trace = write_workload(workdir, "headline", tenants, requests)
        print("headline (apslab vs SimPy, alternating):", flush=True)
        head = headline(workdir, scenario, trace, rounds)
        print("scaling:", flush=True)
        scale = scaling(workdir, sizes, tenant_counts, tenant_requests, repeats)
        print("continuous engine:", flush=True)
        cont = continuous(workdir, compare, large, cont_sizes, max(1, min(rounds, 3)), repeats)
        print("queues:", flush=True)
        queues = pop_cost(lengths, pops)
        plot_pop_cost(queues, plot_path)
        targets = {
            f"apslab at least {SPEED_TARGET}x faster than the SimPy baseline "
            f"(measured {head['speedup']:.2f}x)": head["speedup"] >= SPEED_TARGET,
            f"apslab at most {MEMORY_TARGET}x the baseline's peak memory "
            f"(measured {head['memory_ratio']:.2f}x)": head["memory_ratio"] <= MEMORY_TARGET,
            f"time per request flat within {FLATNESS_LIMIT}x from {sizes[0]:,} to "
            f"{sizes[-1]:,} requests (measured {scale['size_spread']:.2f}x)":
                scale["size_spread"] <= FLATNESS_LIMIT,
            f"time per request flat within {FLATNESS_LIMIT}x from {tenant_counts[0]:,} to "
            f"{tenant_counts[-1]:,} tenants (measured {scale['tenant_spread']:.2f}x)":
                scale["tenant_spread"] <= FLATNESS_LIMIT,
            **continuous_targets(cont, cont_sizes),
        }
        results = {
            "date": datetime.date.today().isoformat(),
            "machine": machine_description(),
            "requests": requests,
            "tenants": tenants,
            "headline": head,
            "scaling": scale,
            "pop_cost": queues,
            "continuous": cont,
            "targets": targets,
        }
        out.write_text(render(results))
        (out.parent / (out.stem + ".json")).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {out}")
        if not args.smoke and args.out is None:
            update_performance_doc(json.loads(json.dumps(results, default=str)))
            print(f"updated the figures in {PERFORMANCE_DOC.relative_to(ROOT)}")
        for name, ok in targets.items():
            print(f"  {'met' if ok else 'NOT MET'}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
