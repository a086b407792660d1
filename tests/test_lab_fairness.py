"""Notebook 09's lab code: shapes and mechanisms, the measures, plots, the widget app and the
counter-lift checker."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import make_trace

from apslab.core.policies import FCFSPolicy, PriorityPolicy, VTCPolicy
from apslab.lab import exercises, plots
from apslab.lab import fairness_lab as fl
from apslab.lab.appkit import png_bytes
from apslab.lab.widgets import FairSharingApp
from apslab.sim.continuous import simulate_continuous
from apslab.sim.result import IterationLog
from apslab.sim.run import simulate


@pytest.fixture(scope="module")
def base():
    return fl.lab_scenario()


@pytest.fixture(scope="module")
def cap(base):
    return fl.capacity(base)


@pytest.fixture(scope="module")
def flood(base, cap):
    """The notebook's flood shape under every mechanism; VTC and FCFS with their curves."""
    runs = fl.run_shape(base, "flood", cap)
    for name in ("fcfs", "vtc"):
        curved = fl.run_shape(base, "flood", cap, [name], keep_curve=True)[name]
        assert np.array_equal(curved.result.start_s, runs[name].result.start_s,
                              equal_nan=True), "the Python loop is the compiled loop"
        runs[name] = curved
    return runs


@pytest.fixture(scope="module")
def unequal(base, cap):
    return fl.run_shape(base, "unequal", cap)


# --------------------------------------------------------------------------------------------
# Scenarios, shapes and mechanisms


def test_the_lab_scenario_is_a_small_slice_of_an_a100(base):
    sched = base.scheduler
    assert sched.continuous and sched.policy == "vtc" and sched.batch_window_ms == 0.0
    assert base.tenant_ids() == ["alpha", "beta", "gamma", "flood"]
    assert fl.bound_terms(base, make_trace([(0.0, "alpha", 700, 1, 1.0)])) == (700, 4096)
    assert fl.vtc_bound(base, make_trace([(0.0, "alpha", 700, 1, 1.0)])) == 2 * 2 * 4096
    # a prompt longer than 2 * M makes the input term the larger one
    assert fl.vtc_bound(base, make_trace([(0.0, "alpha", 9000, 1, 1.0)])) == 2 * 9000


def test_capacity_is_what_a_closed_batch_is_served_at(base, cap):
    assert 1.0 < cap.requests_per_s < 4.0
    assert cap.tokens_per_s > 500 * cap.requests_per_s  # long requests
    assert cap.fair_rpm(4) == pytest.approx(15 * cap.requests_per_s)
    assert cap.fair_tokens_per_s(2) == cap.tokens_per_s / 2
    # deterministic: the same scenario, the same capacity
    assert fl.capacity(base) == cap


def test_every_mechanism_gets_its_rules_and_the_same_tenants(base, cap):
    rates = fl.SHAPES["flood"].rates(cap)
    assert rates["flood"] == pytest.approx(1.2 * cap.requests_per_s)
    built = {m: fl.shape_scenario(base, rates, m, cap=cap) for m in fl.MECHANISMS}
    assert {m: s.scheduler.policy for m, s in built.items()} == {
        "fcfs": "fcfs", "rpm": "fcfs", "token_bucket": "fcfs", "priority": "priority",
        "vtc": "vtc"}
    for scenario in built.values():
        assert scenario.tenant_ids() == ["alpha", "beta", "gamma", "flood"]
        assert [w.arrival_rate_per_s for w in scenario.workload.tenants] == list(rates.values())
        assert [w.priority_bid for w in scenario.workload.tenants] == [1.0, 1.0, 1.0, 2.0]
    for tenant in built["rpm"].tenants:
        assert tenant.requests_per_minute == cap.fair_rpm(4)
        assert tenant.rate_limit == tenant.burst_cap == 1e9
    for tenant in built["token_bucket"].tenants:
        assert tenant.requests_per_minute is None
        assert tenant.rate_limit == cap.fair_tokens_per_s(4)
        assert tenant.burst_cap == max(fl.BUCKET_SECONDS * tenant.rate_limit, 2048 + 1024)
    # every mechanism runs the same trace
    traces = [fl.shape_trace(s) for s in built.values()]
    assert all(np.array_equal(t.arrival_s, traces[0].arrival_s) for t in traces)
    shared = fl.shape_scenario(base, {"alpha": 1.0, "beta": 1.0}, "vtc", shares={"alpha": 2.0})
    assert [t.share for t in shared.tenants] == [2.0, 1.0]


def test_shape_scenario_refuses_what_it_cannot_build(base, cap):
    with pytest.raises(ValueError, match="mechanism must be one of"):
        fl.shape_scenario(base, {"alpha": 1.0}, "wfq")
    with pytest.raises(ValueError, match="needs the GPU's capacity"):
        fl.shape_scenario(base, {"alpha": 1.0}, "rpm")
    with pytest.raises(ValueError, match="only weigh service under mechanism 'vtc'"):
        fl.shape_scenario(base, {"alpha": 1.0}, "fcfs", shares={"alpha": 2.0})
    with pytest.raises(ValueError, match="not tenants of .*: omega"):
        fl.shape_scenario(base, {"alpha": 1.0, "omega": 1.0}, "vtc")


def test_a_shape_can_change_its_heaviest_tenant(cap):
    shape = fl.SHAPES["unequal"]
    assert shape.heavy == "beta"
    assert shape.rates(cap, 2.4) == {"alpha": 0.6 * cap.requests_per_s,
                                     "beta": 2.4 * cap.requests_per_s}


# --------------------------------------------------------------------------------------------
# The notebook's claims


def test_vtc_keeps_within_its_bound_and_fcfs_and_priority_do_not(flood, unequal, base, cap):
    equal = fl.run_shape(base, "equal", cap, ["vtc"])
    for runs in (flood, unequal, equal):
        assert runs["vtc"].within_bound
        assert runs["vtc"].service_difference > 0
    for runs in (flood, unequal):
        for name in ("fcfs", "priority"):
            assert runs[name].service_difference > 5 * runs[name].bound
    assert unequal["rpm"].service_difference > unequal["rpm"].bound


def test_rpm_limits_reject_while_the_gpu_idles_and_vtc_conserves_work(flood):
    rpm, vtc = flood["rpm"], flood["vtc"]
    assert fl.reason_names(rpm) == ["rate_limited_requests"]
    assert fl.reason_names(flood["token_bucket"]) == ["rate_limited"]
    assert rpm.idle.rejected == rpm.rejected_by_reason["rate_limited_requests"]
    assert 0 < rpm.idle.rejected_while_idle <= rpm.idle.rejected_with_room <= rpm.idle.rejected
    assert rpm.idle.idle_while_rejecting_s > 5
    assert vtc.idle.rejected == vtc.idle.rejected_with_room == 0
    assert vtc.idle.idle_s == vtc.idle.idle_while_waiting_s == 0.0
    assert vtc.service_rate > 1.5 * rpm.service_rate


def test_vtc_serves_light_tenants_first_and_rejects_nothing(flood):
    light = ["alpha", "beta", "gamma"]
    vtc, fcfs = flood["vtc"], flood["fcfs"]
    assert max(vtc.tenants[t].ttft_p99_s for t in light) < \
        min(fcfs.tenants[t].ttft_p99_s for t in light) / 5
    assert sum(o.rejected for o in vtc.tenants.values()) == 0
    assert vtc.tenants["flood"].served_tokens == fcfs.tenants["flood"].served_tokens


# --------------------------------------------------------------------------------------------
# The measures


def test_measure_agrees_with_the_summary(flood):
    for run in flood.values():
        summary = run.result.summary()
        assert run.service_difference == summary["service_difference"]
        assert run.bound == fl.vtc_bound(run.result.scenario, run.result.trace)
        for tenant, outcome in run.tenants.items():
            row = summary["tenants"][tenant]
            assert (outcome.submitted, outcome.rejected, outcome.served_tokens) == (
                row["submitted"], row["rejected"], row["tokens_completed"])
            assert outcome.service == row["weighted_service"]
            assert 0 <= outcome.service_in_span <= outcome.service + 1e-6
        assert run.label == fl.MECHANISM_LABELS[run.mechanism]


def test_service_curves_are_cumulative_and_end_at_the_weighted_service(flood):
    result = flood["vtc"].result
    end = float(result.finish_s[result.completed].max())
    times = np.linspace(0.0, end, 50)
    curves = fl.service_curves(result, times)
    summary = result.summary()
    for tenant, curve in curves.items():
        assert curve[0] == 0.0 and np.all(np.diff(curve) >= 0)
        assert curve[-1] == pytest.approx(summary["tenants"][tenant]["weighted_service"])


def test_service_curves_by_hand():
    # One request, P = 10, O = 5, on a GPU whose iterations last 0.25 s: it starts at 0, its
    # first token at 0.25, its last at 1.25; tokens 2..4 spread evenly in between.
    scenario = fl.shape_scenario(fl.lab_scenario(), {"alpha": 1.0}, "vtc").with_overrides(
        {"gpu.hbm_bytes_per_s": 1e30, "gpu.peak_flops": 1e30, "gpu.overhead_s": 0.25})
    result = simulate(scenario, make_trace([(0.0, "alpha", 10, 5, 1.0)]))
    assert (result.start_s[0], result.first_token_s[0], result.finish_s[0]) == (0.0, 0.25, 1.25)
    curve = fl.service_curves(result, np.array([0.0, 0.2, 0.25, 0.5, 0.75, 1.0, 1.25, 2.0]))
    assert curve["alpha"].tolist() == [10, 10, 12, 14, 16, 18, 20, 20]


def test_idle_gaps_by_hand():
    log = IterationLog(gpu=np.array([0, 0, 1, 0]), start_s=np.array([1.0, 2.0, 1.5, 5.0]),
                       duration_s=np.array([1.0, 1.0, 0.5, 1.0]), requests=np.ones(4),
                       prefill_tokens=np.zeros(4), decode_tokens=np.ones(4),
                       blocks_used=np.zeros(4), preempted=np.zeros(4))
    assert fl.idle_gaps(log, 0.0, 7.0, gpus=2) == [
        (0, 0.0, 1.0), (0, 3.0, 5.0), (0, 6.0, 7.0), (1, 0.0, 1.5), (1, 2.0, 7.0)]
    assert fl.idle_gaps(log, 1.5, 5.5) == [(0, 3.0, 5.0)]


def test_idle_time_and_busy_time_fill_the_span(flood):
    for run in flood.values():
        log = run.result.iteration_log
        start, end = float(run.result.trace.arrival_s.min()), run.arrivals_end_s
        busy = np.clip(log.start_s + log.duration_s, start, end) - np.clip(log.start_s, start,
                                                                           end)
        assert run.idle.idle_s + busy.sum() == pytest.approx(end - start)
        assert run.idle.span_s == end - start
        assert run.idle.idle_while_rejecting_s <= run.idle.idle_s


def test_a_batch_window_is_time_idle_while_a_request_waits(base):
    # With a 10 ms window a request that finds the GPU idle waits 10 ms for the round.
    scenario = fl.shape_scenario(base, {"alpha": 0.05}, "vtc")
    trace = fl.shape_trace(scenario)
    windowed = scenario.with_overrides({"scheduler.batch_window_ms": 10.0})
    conserving = fl.run_mechanism(scenario, trace)
    waiting = fl.run_mechanism(windowed, trace)
    assert conserving.idle.idle_while_waiting_s == 0.0
    waited = np.isclose(waiting.result.start_s - trace.arrival_s, 0.01)
    # counted while arrivals last: up to the last arrival
    end = trace.arrival_s.max()
    expected = np.minimum(waiting.result.start_s[waited], end) - trace.arrival_s[waited]
    assert waited.sum() >= 3
    assert waiting.idle.idle_while_waiting_s == pytest.approx(float(expected.sum()))


def test_idle_report_needs_the_iteration_log(base):
    scenario = fl.shape_scenario(base, {"alpha": 0.1}, "vtc")
    result = simulate(scenario, fl.shape_trace(scenario))
    with pytest.raises(ValueError, match="keep_iterations=True"):
        fl.idle_report(result)


def test_tables_have_a_row_per_run_and_tenant(flood):
    runs = list(flood.values())
    assert len(fl.fairness_table(runs).splitlines()) == 1 + len(runs)
    assert len(fl.tenant_table(runs).splitlines()) == 1 + 4 * len(runs)
    idle = fl.idle_table(runs).splitlines()
    assert len(idle) == 1 + len(runs) and "with KV room" in idle[0]
    assert " NO " in fl.fairness_table([flood["fcfs"]])


@pytest.mark.parametrize("policy", [VTCPolicy([1.0] * 4), FCFSPolicy(), PriorityPolicy()])
def test_run_with_policy_is_the_engine_with_that_policy(base, policy):
    rates = {"alpha": 0.3, "beta": 0.2, "gamma": 0.2, "flood": 3.0}
    name = policy.name
    scenario = fl.shape_scenario(base.with_overrides({"workload.duration_s": 20.0}), rates,
                                 name)
    trace = fl.shape_trace(scenario)
    starts = fl.run_with_policy(scenario, trace, policy)
    assert np.array_equal(starts, simulate(scenario, trace).start_s, equal_nan=True)
    static = scenario.with_overrides({"scheduler.batching": "static", "gpu.model": "roofline",
                                      **{f"scheduler.{k}": v for k, v in (
                                          ("max_num_seqs", 256), ("block_size", 16),
                                          ("max_num_batched_tokens", 2048))}})
    with pytest.raises(ValueError, match="batching = \"continuous\""):
        fl.run_with_policy(static, trace, policy)


# --------------------------------------------------------------------------------------------
# Plots


def test_service_over_time_draws_each_tenants_curve(flood):
    run = flood["vtc"]
    figure = plots.new_figure()
    artists = plots.draw_service_over_time(figure.axes[0], run, points=40)
    assert set(artists) == {"alpha", "beta", "gamma", "flood", "arrivals_end"}
    line = artists["flood"]
    expected = fl.service_curves(run.result, line.get_xdata())["flood"]
    assert np.array_equal(line.get_ydata(), expected)
    assert len(line.get_xdata()) == 40
    assert artists["arrivals_end"].get_xdata()[0] == run.arrivals_end_s


def test_service_difference_draws_the_engines_curve_and_the_bound(flood):
    runs = [flood["fcfs"], flood["vtc"]]
    figure = plots.service_difference_figure(runs)
    ax = figure.axes[0]
    artists = plots.draw_service_difference(ax, runs)
    for run in runs:
        curve = run.result.service_curve
        line = artists[run.label]
        assert np.array_equal(line.get_xdata(), curve[:, 0])
        assert np.array_equal(line.get_ydata(), curve[:, 1])
        # The curve is taken at the end of each instant; the measure also counts the moment a
        # pair ends, mid-instant, so the curve can stop one instant's service short of it.
        assert 0.99 * run.service_difference <= curve[:, 1].max() <= run.service_difference
    assert artists["bound"].get_ydata()[0] == flood["vtc"].bound
    assert ax.get_ylim()[1] == pytest.approx(2.5 * flood["vtc"].bound * 1.05)
    with pytest.raises(ValueError, match="keep_curve=True"):
        plots.draw_service_difference(ax, [flood["rpm"]])


def test_tenant_bars_show_each_runs_outcomes(flood):
    runs = list(flood.values())
    figure = plots.tenant_bars_figure(runs)
    assert len(figure.axes) == 3
    artists = plots.draw_tenant_metric(figure.axes[1], runs, "rejected", "rejected")
    for run in runs:
        assert [bar.get_height() for bar in artists[run.label]] == \
            [run.tenants[t].rejected for t in ("alpha", "beta", "gamma", "flood")]


def test_idle_timeline_marks_rejections_and_idle_stretches(flood):
    run = flood["rpm"]
    figure = plots.idle_figure([run, flood["vtc"]])
    artists = plots.draw_idle_timeline(figure.axes[0], run)
    trace = run.result.trace
    rejected = np.sort(trace.arrival_s[~run.result.completed])
    assert np.array_equal(np.sort(artists["rejected"].get_offsets()[:, 0]), rejected)
    gaps = fl.idle_gaps(run.result.iteration_log, float(trace.arrival_s.min()),
                        run.arrivals_end_s)
    assert len(artists["idle"].get_paths()) == len(gaps)
    idle = sum(np.ptp(p.vertices[:, 0]) for p in artists["idle"].get_paths())
    busy = sum(np.ptp(p.vertices[:, 0]) for p in artists["busy"].get_paths())
    assert idle == pytest.approx(run.idle.idle_s)
    assert idle + busy == pytest.approx(run.idle.span_s)


def test_the_figures_render(flood):
    runs = list(flood.values())
    for figure in (plots.service_figure(runs), plots.service_difference_figure(
            [flood["fcfs"], flood["vtc"]]), plots.tenant_bars_figure(runs),
            plots.idle_figure(runs[:2])):
        assert png_bytes(figure).startswith(b"\x89PNG")


# --------------------------------------------------------------------------------------------
# The widget app


def _redraws(app, control: str, value) -> None:
    before, updates = app.image.value, app.updates
    app.controls[control].value = value
    assert app.updates == updates + 1, "one control change, one redraw"
    assert app.image.value != before, "the rendered plot changed"


def test_fair_sharing_app_follows_its_controls():
    app = FairSharingApp()
    assert (app.run.shape, app.run.mechanism) == ("flood", "vtc")
    assert set(app.artists["service"]) == {"alpha", "beta", "gamma", "flood", "arrivals_end"}
    curve = app.run.result.service_curve
    assert np.array_equal(app.artists["difference"]["VTC"].get_ydata(), curve[:, 1])
    assert app.artists["difference"]["bound"].get_ydata()[0] == app.run.bound
    assert "service difference" in app.status.value and "TTFT p99" in app.status.value

    _redraws(app, "mechanism", "fcfs")
    assert app.run.result.scenario.scheduler.policy == "fcfs"
    assert app.run.service_difference > app.run.bound
    assert "FCFS" in app.artists["difference"]

    _redraws(app, "shape", "unequal")
    assert set(app.artists["service"]) == {"alpha", "beta", "arrivals_end"}
    requests = len(app.run.result.trace)

    _redraws(app, "heavy_load", 2.0)
    assert len(app.run.result.trace) > 1.3 * requests

    _redraws(app, "mechanism", "vtc")
    assert app.run.within_bound
    bound = app.run.bound
    _redraws(app, "alpha_share", 0.5)
    assert [t.share for t in app.run.result.scenario.tenants] == [0.5, 1.0]
    assert app.run.bound == 2 * bound  # divided by the smallest share

    _redraws(app, "mechanism", "rpm")
    assert [t.share for t in app.run.result.scenario.tenants] == [1.0, 1.0]
    assert app.run.idle.rejected > 0 and "shares weigh service under VTC only" in \
        app.status.value


# --------------------------------------------------------------------------------------------
# The exercise checker


def reference_counter_lift(counters, waiting, tenant):
    """The notebook's reference solution, as a student would write it."""
    own = counters[tenant]
    if tenant in waiting:
        return own
    others = [counters[name] for name in waiting if name != tenant]
    return max(own, min(others)) if others else own


def _feedback(student) -> str:
    with pytest.raises(AssertionError) as failure:
        exercises.check_counter_lift(student)
    return str(failure.value)


def test_the_reference_solution_passes_and_nothing_is_printed(capsys):
    result = exercises.check_counter_lift(reference_counter_lift)
    total = len(exercises.counter_lift_cases()) + 1
    assert result and result.passed and result.checks_run == result.checks_total == total
    assert f"all {total} checks passed" in str(result)
    assert exercises.check_counter_lift(exercises._lift_variant).passed
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_the_cases_are_what_a_vtc_policy_does():
    cases = exercises.counter_lift_cases()
    engine = [c for c in cases if "simulated run" in c.name]
    assert [c.name.split("(")[1].rstrip(")") for c in engine] == [
        "nobody else waiting", "already waiting", "lifted"]
    for case in cases:
        assert exercises.engine_lift(case) == exercises._lift_variant(*case.arguments())
    lifted = next(c for c in engine if "lifted" in c.name)
    assert exercises.engine_lift(lifted) > lifted.counters[lifted.tenant]


def test_a_function_that_changes_its_arguments_is_checked_fairly():
    def mutating(counters, waiting, tenant):
        answer = reference_counter_lift(counters, waiting, tenant)
        counters.clear()
        waiting.clear()
        return answer

    assert exercises.check_counter_lift(mutating).passed


@pytest.mark.parametrize(("flag", "case"), [
    ("self_in_min", "a newcomer is lifted to the smallest counter among the waiting tenants"),
    ("max_of_others", "a newcomer is lifted to the smallest counter among the waiting tenants"),
    ("all_tenants", "only tenants with waiting requests count"),
    ("lift_when_alone", "nobody else waits: no lift"),
    ("lowers", "a counter is never lowered"),
    ("already_waiting", "a tenant that already waits keeps its counter"),
])
def test_each_common_mistake_fails_with_its_hint(flag, case, capsys):
    def mistaken(*args):
        return exercises._lift_variant(*args, **{flag: True})

    text = _feedback(mistaken)
    assert text.splitlines()[1].startswith(f"  {case}: counters {{")
    assert "'s counter to be " in text and ", yours is " in text
    hints = [line for line in text.splitlines() if "hint:" in line]
    assert hints == [f"  hint: {exercises.LIFT_MISTAKES[flag]}"]
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_a_lift_written_differently_but_wrong_gets_the_hint():
    """Lifting to the min over every other tenant, written with sorted() and a default."""
    def every_other(counters, waiting, tenant):
        if tenant in waiting:
            return counters[tenant]
        others = sorted(v for k, v in counters.items() if k != tenant)
        return max(counters[tenant], others[0] if others else 0.0)

    text = _feedback(every_other)
    assert "only tenants with waiting requests count" in text
    assert exercises.LIFT_MISTAKES["all_tenants"] in text


def test_the_engine_replay_catches_what_the_single_cases_miss(capsys):
    """A lift that is right for its first calls (every single case) and then stops lifting."""
    calls = []

    def tires(counters, waiting, tenant):
        calls.append(tenant)
        if len(calls) > 40:
            return counters[tenant]
        return reference_counter_lift(counters, waiting, tenant)

    text = _feedback(tires)
    total = len(exercises.counter_lift_cases()) + 1
    assert f"check {total} of {total} failed" in text
    assert "a whole run through the engine" in text and "starts at" in text
    assert "hint:" not in text
    assert capsys.readouterr().err == ""


def test_unwritten_crashing_and_malformed_answers_are_explained(capsys):
    def not_written(*_args):
        raise NotImplementedError

    text = _feedback(not_written)
    assert "check 1 of" in text and "not written yet" in text
    assert "raise NotImplementedError" in text

    def broken(counters, waiting, tenant):
        return counters["nobody"]

    assert "raised KeyError" in _feedback(broken)
    assert "return the tenant's new counter (a number)" in _feedback(lambda *a: None)
    assert "return the tenant's new counter (a number)" in _feedback(lambda *a: True)
    assert "return the tenant's new counter (a number)" in _feedback(lambda *a: "25")
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_a_crash_inside_the_engine_replay_is_explained():
    calls = []

    def crashes_late(counters, waiting, tenant):
        calls.append(tenant)
        if len(calls) > 40:
            raise ZeroDivisionError("late")
        return reference_counter_lift(counters, waiting, tenant)

    text = _feedback(crashes_late)
    assert "the engine stopped - your function raised ZeroDivisionError: late" in text


def test_engine_lift_drives_a_real_policy():
    case = exercises.LiftCase("x", {"a": 1.0, "b": 5.0, "c": 3.0}, frozenset({"b", "c"}), "a")
    assert exercises.engine_lift(case) == 3.0
    assert math.isclose(exercises.engine_lift(exercises.LiftCase(
        "y", {"a": 1.5, "b": 5.0}, frozenset({"a", "b"}), "a")), 1.5)
    assert "waiting: b, c; a request of a joins" in case.describe()


def test_the_replay_scenario_keeps_the_gpu_busy_and_lifts_counters():
    scenario, trace = exercises._replay_scenario_and_trace()
    result = simulate_continuous(scenario, trace, keep_iterations=True)
    assert scenario.scheduler.policy == "vtc" and len(trace) > 50
    assert result.summary()["gpu_utilization"] > 0.9


@pytest.mark.parametrize("flag", ["already_waiting", "self_in_min", "lowers", "all_tenants"])
def test_the_replay_alone_tells_these_mistakes_from_the_rule(flag):
    scenario, trace = exercises._replay_scenario_and_trace()
    expected = simulate(scenario, trace).start_s

    def mistaken(*args):
        return exercises._lift_variant(*args, **{flag: True})

    got = fl.run_with_policy(scenario, trace, exercises._StudentVTC(scenario, mistaken))
    assert not np.array_equal(got, expected, equal_nan=True)
