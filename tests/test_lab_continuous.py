"""Notebook 08's lab code: experiments, plots, the widget app and the scheduling-round checker."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from apslab.core.kv_blocks import blocks_for
from apslab.core.roofline import attention_term
from apslab.lab import continuous_lab as cl
from apslab.lab import exercises, plots
from apslab.lab.appkit import png_bytes
from apslab.lab.widgets import ContinuousApp
from apslab.sim.run import simulate


@pytest.fixture(scope="module")
def scenario():
    return cl.lab_scenario()


@pytest.fixture(scope="module")
def trace(scenario):
    return cl.lab_trace(scenario, 1.0)


@pytest.fixture(scope="module")
def results(scenario, trace):
    return cl.run_engines(scenario, trace, keep_iterations=True)


@pytest.fixture(scope="module")
def tight(scenario):
    """A short busy trace on a small KV cache: preemptions happen."""
    short = scenario.with_overrides({"workload.duration_s": 60.0})
    return simulate(cl.with_continuous(short, kv_cache_gib=2), cl.lab_trace(short, 4.0),
                    keep_iterations=True)


# --------------------------------------------------------------------------------------------
# Scenarios


def test_the_lab_scenario_runs_both_engines_on_the_same_roofline_gpu(scenario):
    assert scenario.scheduler.continuous
    static = cl.as_static(scenario)
    assert not static.scheduler.continuous
    assert static.gpu == scenario.gpu and static.tenants == scenario.tenants
    assert static.scheduler.max_batch_size == 16
    assert cl.as_static(scenario, 4).scheduler.max_batch_size == 4
    # the continuous knobs the static engine has no use for do not get in the way
    changed = cl.with_continuous(scenario, max_num_batched_tokens=256, kv_cache_gib=2,
                                 max_num_seqs=8)
    assert (changed.scheduler.max_num_batched_tokens, changed.scheduler.max_num_seqs,
            changed.gpu.kv_cache_gib) == (256, 8, 2.0)
    assert cl.as_static(changed).gpu.kv_cache_gib == 2.0
    assert cl.with_continuous(scenario) is scenario


def test_readme_example_is_the_readme_continuous_example():
    scenario, trace = cl.readme_example()
    summary = simulate(scenario, trace).summary()
    assert summary["iterations"]["count"] == 7504  # README: "iterations      7504, ..."
    assert summary["requests"]["completed"] == 114


# --------------------------------------------------------------------------------------------
# A static run read as iterations


def test_static_iterations_add_up_to_the_engines_batches(results):
    static = results["static"]
    log = cl.static_iteration_log(static)
    batches = cl.static_batches(static)
    assert len(log) == batches.max_output_tokens.sum()
    first_rows = np.concatenate(([0], np.cumsum(batches.max_output_tokens)[:-1]))
    assert np.array_equal(log.start_s[first_rows], static.batch_start_s)
    assert np.array_equal(log.prefill_tokens[first_rows], batches.prompt_tokens)
    assert log.prefill_tokens.sum() == batches.prompt_tokens.sum()
    assert (log.decode_tokens[first_rows] == 0).all()
    for k, lo in enumerate(first_rows.tolist()):
        durations = log.duration_s[lo:lo + batches.max_output_tokens[k]]
        # added in order, the durations are the engine's service time, bit for bit
        assert float(np.add.accumulate(durations)[-1]) == static.batch_service_s[k]
        assert (log.decode_tokens[lo + 1:lo + len(durations)] == batches.size[k]).all()
    assert not log.preempted.any() and not log.blocks_used.any()


def test_static_work_and_first_tokens_follow_the_iterations(results, scenario):
    static = results["static"]
    cost = scenario.gpu.iteration_cost()
    batches = cl.static_batches(static)
    trace = static.trace
    moved = flops = 0
    for k in range(len(static.batch_size)):
        members = np.flatnonzero(static.batch_id == k)
        prompts = trace.prompt_tokens[members].tolist()
        work = cost.work(sum(prompts), sum(prompts), sum(attention_term(0, p) for p in prompts))
        moved, flops = moved + work[0], flops + work[1]
        assert batches.prefill_s[k] == cost.seconds(*work)
        for j in range(1, int(trace.output_tokens[members].max())):  # every member decodes
            context = [p + j for p in prompts]  # c + n, with c = P + j - 1 and n = 1
            step = cost.work(sum(context), len(prompts),
                             sum(attention_term(c - 1, 1) for c in context))
            moved, flops = moved + step[0], flops + step[1]
    assert (batches.bytes_moved, batches.flops) == (moved, flops)
    first = cl.static_first_token_s(static)
    done = static.completed
    assert np.array_equal(first[done], static.batch_start_s[static.batch_id[done]]
                          + batches.prefill_s[static.batch_id[done]])
    assert (first[done] <= static.finish_s[done]).all()
    assert np.isnan(first[~done]).all()


def test_iteration_log_picks_the_engines_own_or_the_reconstruction(results, scenario, trace):
    assert cl.iteration_log(results["continuous"]) is results["continuous"].iteration_log
    assert len(cl.iteration_log(results["static"])) == cl.measure(results["static"]).iterations
    with pytest.raises(ValueError, match="keep_iterations"):
        cl.iteration_log(simulate(scenario, trace))


# --------------------------------------------------------------------------------------------
# One run's numbers


def test_measure_agrees_with_the_continuous_summary(results):
    result = results["continuous"]
    run = cl.measure(result, load=1.0)
    summary = result.summary()
    assert run.batching == "continuous" and run.label == "continuous" and run.load == 1.0
    assert run.ttft_p99_s == summary["ttft_s"]["p99"]
    assert run.tpot_p50_s == summary["tpot_s"]["p50"]
    assert run.max_tbt_p99_s == summary["max_tbt_s"]["p99"]
    assert run.latency_p99_s == summary["latency_s"]["p99"]
    assert (run.gpu_busy, run.mbu, run.mfu) == (summary["gpu_utilization"], summary["mbu"],
                                                summary["mfu"])
    assert run.iterations == len(result.iteration_log)
    assert run.computed_tokens == (result.iteration_log.prefill_tokens.sum()
                                   + result.iteration_log.decode_tokens.sum())
    assert run.preemptions == 0 and run.wasted_tokens == 0  # 32 GiB: nothing is recomputed
    assert run.max_num_batched_tokens == 2048 and run.kv_cache_gib == 32.0
    assert run.kv_blocks == result.total_blocks == 4096  # 32 GiB / 512 KiB per token / 16


def test_measure_of_a_static_run(results):
    result = results["static"]
    run = cl.measure(result)
    trace = result.trace
    done = result.completed
    batches = cl.static_batches(result)
    assert run.batching == "static" and math.isnan(run.max_tbt_p99_s)
    assert run.max_num_batched_tokens is None and run.preemptions == run.kv_blocks == 0
    elapsed = result.summary()["elapsed_s"]
    assert run.mbu == pytest.approx(batches.bytes_moved / (elapsed * 2.039e12))
    assert run.mfu == pytest.approx(batches.flops / (elapsed * 312e12))
    useful = int((trace.prompt_tokens[done] + trace.output_tokens[done] - 1).sum())
    padding = int((batches.size * (batches.max_output_tokens - 1)).sum()
                  - (trace.output_tokens[done] - 1).sum())
    assert run.wasted_tokens == padding > 0 and run.computed_tokens == useful + padding
    first = cl.static_first_token_s(result)
    assert run.ttft_p50_s == np.percentile(first[done] - trace.arrival_s[done], 50)


def test_preemption_is_recomputation(tight):
    run = cl.measure(tight)
    summary = tight.summary()
    assert run.preemptions == summary["preemptions"]["count"] > 0
    assert run.requests_preempted == summary["preemptions"]["requests_preempted"]
    assert run.wasted_tokens > 0
    by_tenant = cl.preemptions_by_tenant(tight)
    assert sum(by_tenant.values()) == run.preemptions
    assert by_tenant["summarise"] > by_tenant["chat"]  # the lower bid is the victim
    first = cl.first_preemption_s(tight.iteration_log)
    row = np.flatnonzero(tight.iteration_log.preempted)[0]
    assert first == tight.iteration_log.start_s[row]


def test_first_preemption_is_nan_without_one(results):
    assert math.isnan(cl.first_preemption_s(results["continuous"].iteration_log))


# --------------------------------------------------------------------------------------------
# The experiments (what notebook 08 asserts, on shorter traces)


def test_continuous_batching_answers_sooner_on_the_same_trace(scenario, trace):
    runs = cl.compare_engines(scenario, trace, load=1.0)
    static, continuous = runs["static"], runs["continuous"]
    assert static.submitted == continuous.submitted == len(trace)
    assert continuous.ttft_p99_s < static.ttft_p99_s / 10
    assert continuous.tpot_p50_s < static.tpot_p50_s
    assert continuous.throughput_tokens_per_s >= static.throughput_tokens_per_s


def test_a_smaller_budget_trades_ttft_for_time_between_tokens(scenario):
    short = scenario.with_overrides({"workload.duration_s": 100.0})
    busy = cl.lab_trace(short, 4.0)
    runs = cl.budget_sweep(short, busy, [256, 2048], load=4.0)
    assert [r.max_num_batched_tokens for r in runs] == [256, 2048]
    small, large = cl.by_field(runs, "max_num_batched_tokens").values()
    assert small.max_tbt_p99_s < large.max_tbt_p99_s
    assert small.ttft_p50_s > large.ttft_p50_s
    assert small.iterations > large.iterations


def test_less_kv_cache_means_more_preemptions(scenario):
    short = scenario.with_overrides({"workload.duration_s": 60.0})
    runs = cl.kv_sweep(short, cl.lab_trace(short, 4.0), [2, 4, 32])
    assert [r.kv_cache_gib for r in runs] == [2.0, 4.0, 32.0]
    assert runs[0].preemptions > runs[1].preemptions >= runs[2].preemptions == 0
    assert runs[0].wasted_tokens > 0 == runs[2].wasted_tokens


def test_busy_saturates_while_mfu_keeps_growing(scenario):
    short = scenario.with_overrides({"workload.duration_s": 60.0})
    runs = cl.load_sweep(short, [0.25, 2, 8])
    assert [r.load for r in runs] == [0.25, 2.0, 8.0]
    assert runs[0].gpu_busy < 0.6 and runs[1].gpu_busy > 0.95 and runs[2].gpu_busy > 0.99
    assert runs[2].mfu > 3 * runs[1].mfu
    assert runs[2].throughput_tokens_per_s > 3 * runs[1].throughput_tokens_per_s
    static = cl.load_sweep(short, [0.25], static=True)
    assert static[0].batching == "static"


def test_iteration_costs_are_the_roofline(scenario):
    rows = {label: rest for label, *rest in cl.iteration_cost_rows(scenario.gpu)}
    cost = scenario.gpu.iteration_cost()
    one = rows["decode, 1 request at context 500"]
    assert one[0] == 1 and one[1] == cost.seconds(*cost.work(501, 1, attention_term(500, 1)))
    assert one[3] == "bytes" and rows["prefill of one 2048-token prompt"][3] == "FLOPs"
    assert rows["decode, 16 requests at context 500"][1] < 1.2 * one[1]  # batching is cheap
    text = cl.iteration_cost_table(scenario.gpu)
    assert "decode, 256 requests at context 500" in text and "duration (ms)" in text


def test_engine_table_has_one_row_per_run(results):
    runs = [cl.measure(r, name) for name, r in results.items()]
    lines = cl.engine_table(runs).splitlines()
    assert len(lines) == 3 and "served tok/s" in lines[0]
    assert lines[1].split()[0] == "static" and lines[2].split()[0] == "continuous"
    short = cl.engine_table(runs, [("run", "label", ""), ("busy", "gpu_busy", ".1%")])
    assert short.splitlines()[1].endswith("%")


# --------------------------------------------------------------------------------------------
# Plots


def _rectangles(collection) -> np.ndarray:
    """(left, bottom, width, height) of each rectangle of a plots.rectangles collection."""
    corners = np.array([path.vertices[:4] for path in collection.get_paths()])
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    return np.column_stack([lo[:, 0], lo[:, 1], hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1]])


def test_timeline_draws_every_iteration_in_the_window(results):
    log = results["continuous"].iteration_log
    figure = plots.iteration_timeline_figure(log, 30.0, 32.0)
    artists = plots.draw_iteration_timeline(figure.axes[0], log, 30.0, 32.0)
    shown = (log.start_s + log.duration_s > 30.0) & (log.start_s < 32.0)
    boxes = _rectangles(artists["gpu 0"])
    assert len(boxes) == shown.sum() > 50
    assert np.allclose(boxes[:, 0], log.start_s[shown])
    assert np.allclose(boxes[:, 2], log.duration_s[shown])
    assert len(artists["preemptions"].get_offsets()) == 0
    colors = artists["gpu 0"].get_facecolors()
    prompt = log.prefill_tokens[shown] > 0
    assert not np.allclose(colors[prompt][0], colors[~prompt][0])  # prompts stand out
    tokens = plots.draw_iteration_tokens(figure.axes[1], log, 30.0, 32.0)
    assert np.array_equal(_rectangles(tokens["decode"])[:, 3], log.decode_tokens[shown])
    assert np.array_equal(_rectangles(tokens["prefill"])[:, 3], log.prefill_tokens[shown])
    assert png_bytes(figure).startswith(b"\x89PNG")


def test_timeline_marks_preemptions_and_has_a_lane_per_gpu(tight, scenario):
    log = tight.iteration_log
    artists = plots.draw_iteration_timeline(plots.new_figure().axes[0], log)
    assert len(artists["preemptions"].get_offsets()) == (log.preempted > 0).sum() > 0
    two = scenario.with_overrides({"cluster.gpus": 2, "workload.duration_s": 30.0})
    log2 = simulate(two, cl.lab_trace(two, 4.0), keep_iterations=True).iteration_log
    artists = plots.draw_iteration_timeline(plots.new_figure().axes[0], log2)
    for gpu in (0, 1):
        boxes = _rectangles(artists[f"gpu {gpu}"])
        assert len(boxes) == (log2.gpu == gpu).sum() > 0
        assert np.allclose(boxes[:, 1] + boxes[:, 3] / 2, gpu)


def test_prefill_share(results):
    log = results["continuous"].iteration_log
    share = plots.prefill_share(log)
    assert ((share >= 0) & (share <= 1)).all()
    assert (share[log.decode_tokens == 0] == 1).all()
    assert (share[log.prefill_tokens == 0] == 0).all()


def test_comparison_bars_show_the_runs(results):
    runs = [cl.measure(r, name) for name, r in results.items()]
    figure = plots.engine_comparison_figure(runs)
    latencies = plots.draw_engine_latencies(figure.axes[0], runs)
    hardware = plots.draw_hardware_use(figure.axes[1], runs)
    for run in runs:
        heights = [bar.get_height() for bar in latencies[run.label]]
        assert heights == [getattr(run, field) for _, field in plots.LATENCY_METRICS]
        heights = [bar.get_height() for bar in hardware[run.label]]
        assert heights == pytest.approx([100 * getattr(run, f) for _, f in plots.HARDWARE_METRICS])


def test_budget_kv_and_load_plots_show_the_sweeps(results):
    run = cl.measure(results["continuous"], load=1.0)
    sweep = [replace(run, max_num_batched_tokens=b, ttft_p50_s=0.01 * b, kv_cache_gib=g,
                     preemptions=p, load=x)
             for b, g, p, x in ((256, 2.0, 40, 0.5), (2048, 32.0, 0, 2.0))]
    artists = plots.draw_budget_tradeoff(plots.new_figure().axes[0], sweep, current=256)
    assert list(artists["ttft_p50"].get_xdata()) == [256, 2048]
    assert list(artists["ttft_p50"].get_ydata()) == [2.56, 20.48]
    assert artists["current"].get_xdata()[0] == 256
    ax = plots.new_figure().axes[0]
    kv = plots.draw_kv_pressure(ax, ax.twinx(), sweep)
    assert [bar.get_height() for bar in kv["preemptions"]] == [40, 0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "32"]
    ax = plots.new_figure().axes[0]
    busy = plots.draw_busy_against_load(ax, ax.twinx(), sweep)
    assert list(busy["gpu_busy"].get_xdata()) == [0.5, 2.0]
    assert busy["mfu"].get_ydata()[0] == pytest.approx(100 * run.mfu)
    assert list(busy["throughput"].get_ydata()) == [run.throughput_tokens_per_s] * 2
    for figure in (plots.budget_figure(sweep), plots.kv_pressure_figure(sweep),
                   plots.busy_figure(sweep)):
        assert png_bytes(figure).startswith(b"\x89PNG")


# --------------------------------------------------------------------------------------------
# The widget app


def _redraws(app, control: str, value) -> None:
    before, updates = app.image.value, app.updates
    app.controls[control].value = value
    assert app.updates == updates + 1, "one control change, one redraw"
    assert app.image.value != before, "the rendered plot changed"


def test_continuous_app_follows_its_controls():
    app = ContinuousApp()
    assert set(app.runs) == {"static", "continuous"}
    assert "static" in app.status.value and "continuous" in app.status.value
    timeline = app.artists["timeline"]["gpu 0"]
    start, end = app.window_s
    log = app.results["continuous"].iteration_log
    assert len(timeline.get_paths()) == ((log.start_s + log.duration_s > start)
                                         & (log.start_s < end)).sum()
    bars = app.artists["latencies"]["continuous"]
    assert bars[1].get_height() == app.runs["continuous"].ttft_p99_s

    _redraws(app, "batching", "static")
    static_log = cl.static_iteration_log(app.results["static"])
    assert len(app.artists["timeline"]["gpu 0"].get_paths()) == (
        (static_log.start_s + static_log.duration_s > start) & (static_log.start_s < end)).sum()

    submitted = app.runs["continuous"].submitted
    _redraws(app, "load", 2.0)
    assert app.runs["continuous"].submitted > 1.5 * submitted

    _redraws(app, "max_num_batched_tokens", 256)
    assert app.runs["continuous"].max_num_batched_tokens == 256
    assert app.runs["static"].max_num_batched_tokens is None

    assert app.runs["continuous"].preemptions == 0
    _redraws(app, "kv_cache_gib", 2)
    assert app.runs["continuous"].kv_cache_gib == app.runs["static"].kv_cache_gib == 2.0
    assert app.runs["continuous"].preemptions > 0
    assert "preemptions" in app.status.value


# --------------------------------------------------------------------------------------------
# The exercise checker


def reference_schedule_round(running, waiting, requests, free_blocks, budget, max_num_seqs,
                             block_size):
    """The notebook's reference solution, as a student would write it."""
    running = list(running)
    held = {name: state["blocks"] for name, state in requests.items()}
    scheduled, preempted = [], []
    i = 0
    while i < len(running) and budget > 0:
        name = running[i]
        state = requests[name]
        n = min(state["P"] + state["g"] - state["c"], budget)
        need = -(-(state["c"] + n) // block_size) - held[name]
        while need > free_blocks:
            victim = running.pop()
            free_blocks += held[victim]
            held[victim] = 0
            preempted.append(victim)
            if victim == name:
                break
        if name in preempted:
            break
        free_blocks -= need
        held[name] += need
        budget -= n
        scheduled.append((name, n))
        i += 1
    if not preempted:
        for name in waiting:
            if len(running) >= max_num_seqs or budget == 0:
                break
            state = requests[name]
            n = min(state["P"] + state["g"], budget)
            need = -(-n // block_size)
            if need > free_blocks:
                break
            running.append(name)
            free_blocks -= need
            budget -= n
            scheduled.append((name, n))
    return scheduled, preempted


def _feedback(student) -> str:
    with pytest.raises(AssertionError) as failure:
        exercises.check_scheduling_round(student)
    return str(failure.value)


def test_the_reference_solution_passes_and_nothing_is_printed(capsys):
    result = exercises.check_scheduling_round(reference_schedule_round)
    assert result and result.passed and result.checks_run == result.checks_total == 13
    assert "all 13 checks passed" in str(result)
    assert exercises.check_scheduling_round(
        lambda *args: exercises._round_variant(*args)).passed
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_a_function_that_changes_its_arguments_is_checked_fairly():
    def mutating(running, waiting, requests, *rest):
        answer = reference_schedule_round(running, waiting, requests, *rest)
        running.clear()
        waiting.reverse()
        for state in requests.values():
            state["c"] = -1
        return answer

    assert exercises.check_scheduling_round(mutating).passed


@pytest.mark.parametrize(("flag", "case"), [
    ("no_chunking", "the budget chunks a long prompt"),
    ("skip_ahead", "a request that does not fit blocks the ones behind it"),
    ("forget_generated", "a preempted request comes back"),
    ("ignore_held", "blocks already held count"),
    ("front", "out of blocks: the last running request is preempted"),
    ("admit_after_preemption", "no admissions in a round that preempted"),
])
def test_each_common_mistake_fails_with_its_hint(flag, case, capsys):
    def mistaken(*args):
        return exercises._round_variant(*args, **{flag: True})

    text = _feedback(mistaken)
    assert text.splitlines()[1].startswith(f"  {case}: running [")
    assert "expected scheduled [" in text and "yours    scheduled [" in text
    hints = [line for line in text.splitlines() if "hint:" in line]
    assert hints == [f"  hint: {exercises.ROUND_MISTAKES[flag]}"]
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_a_front_preemption_written_another_way_gets_the_hint():
    """A student who evicts running[0] (the highest priority) rather than the last request."""
    def front(running, waiting, requests, free_blocks, budget, max_num_seqs, block_size):
        running = list(running)
        scheduled, preempted = [], []
        for name in list(running):
            if budget <= 0 or name not in running:
                break
            state = requests[name]
            n = min(state["P"] + state["g"] - state["c"], budget)
            need = blocks_for(state["c"] + n, block_size) - state["blocks"]
            while need > free_blocks and running:
                victim = running.pop(0)
                free_blocks += requests[victim]["blocks"]
                preempted.append(victim)
            if name in preempted:
                break
            free_blocks -= need
            budget -= n
            scheduled.append((name, n))
        if not preempted:
            for name in waiting:
                state = requests[name]
                n = min(state["P"] + state["g"], budget)
                if len(running) >= max_num_seqs or budget <= 0 or \
                        blocks_for(n, block_size) > free_blocks:
                    break
                running.append(name)
                free_blocks -= blocks_for(n, block_size)
                budget -= n
                scheduled.append((name, n))
        return scheduled, preempted

    text = _feedback(front)
    assert "out of blocks: the last running request is preempted" in text
    assert exercises.ROUND_MISTAKES["front"] in text


def test_unwritten_crashing_and_malformed_answers_are_explained(capsys):
    def not_written(*_args):
        raise NotImplementedError

    text = _feedback(not_written)
    assert "check 1 of 13 failed" in text and "not written yet" in text
    assert "raise NotImplementedError" in text

    def broken(*_args):
        return {}["missing"]

    assert "raised KeyError" in _feedback(broken)
    assert "return (scheduled, preempted)" in _feedback(lambda *args: 3)
    assert "return (scheduled, preempted)" in _feedback(lambda *args: ([("a", "x")], []))
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_no_hint_when_no_common_mistake_explains_the_answers():
    def always_empty(*_args):
        return [], []

    text = _feedback(always_empty)
    assert "an idle GPU admits in priority order" in text and "hint:" not in text


def _valid_state(case) -> bool:
    """Running requests hold ceil(c / block_size) blocks and have something left to compute;
    waiting ones hold nothing; a request's c never passes P + g."""
    for name in case.running:
        state = case.requests[name]
        if state["blocks"] != blocks_for(state["c"], case.block_size) or \
                not 0 < state["c"] < state["P"] + state["g"] + 1:
            return False
    return all(case.requests[name]["c"] == case.requests[name]["blocks"] == 0
               for name in case.waiting)


def test_every_case_is_a_state_the_engine_could_be_in():
    cases = exercises.scheduling_round_cases()
    assert len(cases) == 13 and len({case.name for case in cases}) == 13
    for case in cases:
        assert _valid_state(case), case.name
        assert set(case.requests) == set(case.running) | set(case.waiting)


def test_engine_round_replays_what_a_live_batcher_did():
    """Built from a snapshot of its state, the batcher schedules exactly what it scheduled live,
    in every round of a long random run (with preemptions)."""
    rounds = preempting = 0
    for _step, case, live in exercises.engine_states(rounds=300):
        assert _valid_state(case), case.name
        assert exercises.engine_round(case) == live, case.name
        assert exercises._round_variant(*case.arguments()) == live, case.name
        rounds += 1
        preempting += bool(live[1])
    assert rounds > 150 and preempting > 3


def test_the_engine_cases_are_the_kinds_they_say():
    engine_cases = exercises.scheduling_round_cases()[-3:]
    kinds = [case.name.split("(")[1].rstrip(")") for case in engine_cases]
    assert sorted(kinds) == sorted(["schedules a prompt chunk beside decodes", "preempts",
                                    "stops for want of blocks"])
    for case in engine_cases:
        scheduled, preempted = exercises.engine_round(case)
        assert bool(preempted) == ("preempts" in case.name)
