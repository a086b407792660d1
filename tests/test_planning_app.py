"""The study behind notebook 06: its functions, the PlanExplorer app, the notebook's shape."""

import ast
import json

import nbformat
import pytest
from conftest import DATA, ROOT
from helpers import make_scenario, make_trace

from apslab.io.errors import InputError
from apslab.plan.search import SearchSettings, parse_slo, plan_capacity
from apslab.plan.study import (
    PlanExplorer,
    describe_inputs,
    fairness_figure,
    fairness_study,
    fairness_text,
    load_curves,
    load_curves_figure,
    load_inputs,
    operating_point,
    rate_limit_study,
)
from apslab.plan.sweep import SerialExecutor

SYNTHETIC = DATA / "azure_synthetic"
NOTEBOOK = ROOT / "notebooks" / "06_capacity_planning.ipynb"
CLOCKWORK = make_trace([(float(i), "A", 0, 64, 1.0) for i in range(50)])


def clockwork(gpus=1):
    return make_scenario([("A", 1e9, 1e9)], cluster={"gpus": gpus},
                         scheduler={"max_batch_size": 1, "batch_window_ms": 0.0})


@pytest.fixture(scope="module")
def azure():
    scenario, trace = load_inputs(SYNTHETIC / "planning.toml",
                                  SYNTHETIC / "AzureStyleTrace_conv.csv", "azure",
                                  "chat=5,assist=3,batch=2", 0)
    return scenario, trace.subset(slice(0, 1500))


@pytest.fixture(scope="module")
def azure_plan(azure):
    scenario, trace = azure
    return plan_capacity(scenario, trace, [parse_slo("queue_wait_s.p99<=2")], [3, 4, 5],
                         target_rps=0.4, executor=SerialExecutor(), progress=False)


def test_load_inputs_and_describe(azure):
    scenario, trace = azure
    assert trace.tenant_names == ["chat", "assist", "batch"]
    text = describe_inputs(scenario, trace)
    assert text.startswith("trace AzureStyleTrace_conv.csv: 1500 requests over ")
    chat = next(line for line in text.splitlines() if line.startswith("chat"))
    assert chat.split()[4:] == ["3", "4000", "40000"]  # bid, rate limit, burst cap
    with pytest.raises(InputError, match="need a trace path"):
        load_inputs(SYNTHETIC / "planning.toml", "", "azure")
    with pytest.raises(InputError, match=r"no trace given and the scenario has no \[workload\]"):
        load_inputs(SYNTHETIC / "planning.toml")
    example, none = load_inputs(DATA / "scenarios" / "example.toml")
    assert none is None
    assert describe_inputs(example, None).startswith("generated workload: ")


def test_load_curves_bracket_each_gpu_counts_limit(azure, azure_plan):
    scenario, trace = azure
    rows = load_curves(scenario, trace, azure_plan, fractions=(0.5, 1.0, 1.5))
    assert sorted({r["cluster.gpus"] for r in rows}) == [3, 4, 5]
    for search in azure_plan.searches:
        mine = [r for r in rows if r["cluster.gpus"] == search.gpus]
        assert [r["load"] for r in mine] == pytest.approx(
            [search.best.load * f for f in (0.5, 1.0, 1.5)])
        assert mine[1]["queue_wait_s.p99"] == search.best.metrics["queue_wait_s.p99"] <= 2
        assert mine[2]["queue_wait_s.p99"] > 2  # 1.5 times the limit misses the SLO
    fig = load_curves_figure(rows, azure_plan.slos[0])
    assert len(fig.axes[0].lines) == 4  # three curves and the bound


def test_rate_limit_study_trades_rejections_for_fairness(azure, azure_plan):
    scenario, trace = azure
    gpus, load = operating_point(azure_plan)
    assert gpus == azure_plan.recommendation.gpus
    rows = rate_limit_study(scenario, trace, gpus, load, fractions=(1.0, 0.5, 0.25))
    assert [r["tenants.rate_limit"] for r in rows][0] is None
    caps = [r["tenants.rate_limit"] for r in rows[1:]]
    assert caps == sorted(caps, reverse=True)
    jain = [r["jain_fairness"] for r in rows[1:]]
    rejected = [r["rejected_fraction"] for r in rows[1:]]
    assert jain == sorted(jain) and rejected == sorted(rejected)
    assert jain[-1] > 0.99 and rejected[-1] > 0.2
    study = fairness_study(azure_plan, scenario, trace, fractions=(0.5,))
    assert fairness_text(study).startswith(f"{gpus} GPUs at load {load:.4f}\n")
    assert len(fairness_figure(study).axes) == 2


def test_without_an_operating_point_the_study_says_so():
    plan = plan_capacity(clockwork(), CLOCKWORK, [parse_slo("queue_wait_s.max<0")], [1],
                         executor=SerialExecutor(), progress=False,
                         settings=SearchSettings(min_load=0.5))
    assert operating_point(plan) is None
    assert fairness_study(plan, clockwork(), CLOCKWORK) is None
    assert fairness_text(None).startswith("No GPU count meets the SLOs")
    fairness_figure(None)


def test_plan_explorer_replans_on_the_slo_and_reprices_on_the_price():
    slos = [parse_slo("queue_wait_s.max<=0.2")]
    app = PlanExplorer(clockwork(), CLOCKWORK, slos, [1, 2], target_rps=2.5)
    assert app.replans == 1
    first_rows, first_image = app.rows, app.image.value
    assert first_image[:4] == b"\x89PNG"
    assert "target 2.5 req/s: 2 GPUs, $6.00/hour at $3 per GPU-hour" in app.status.value
    # a looser SLO: waits up to 0.4 s allowed, so each GPU count sustains more
    app.controls["slo_bound"].value = 0.4
    assert app.replans == 2
    assert app.plan.slos[0].bound == 0.4
    for before, after in zip(first_rows, app.rows, strict=True):
        assert after["max_load"] > before["max_load"]
    assert app.image.value != first_image
    # the price: no new plan, the cost column scales, the recommendation is re-priced
    rows_at_3 = app.rows
    app.controls["price_per_hour"].value = 6.0
    assert app.replans == 2
    for a, b in zip(rows_at_3, app.rows, strict=True):
        assert b["cost_per_million_tokens"] == pytest.approx(2 * a["cost_per_million_tokens"])
    assert "$12.00/hour at $6 per GPU-hour" in app.status.value
    drawn = app.figure.axes[1].lines[0].get_ydata()
    assert list(drawn) == pytest.approx([r["cost_per_million_tokens"] for r in app.rows])


def test_plan_explorer_reuses_a_given_plan():
    slos = [parse_slo("queue_wait_s.max<=0.2")]
    plan = plan_capacity(clockwork(), CLOCKWORK, slos, [1], executor=SerialExecutor(),
                         progress=False)
    app = PlanExplorer(clockwork(), CLOCKWORK, slos, [1], plan=plan)
    assert app.replans == 0 and app.plan is plan


# --------------------------------------------------------------------------------------------
# The notebook's shape (its outputs are checked by nbval)


def notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_has_a_parameters_cell_naming_what_the_report_passes():
    from apslab.plan.report import NOTEBOOK_DEFAULT_GPUS, report_parameters

    cells = [c for c in notebook().cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    assigned = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), "the parameters cell only assigns"
        assigned[node.targets[0].id] = ast.literal_eval(node.value)
    passed = report_parameters(DATA / "scenarios" / "example.toml",
                               slos=["queue_wait_s.p99<=5"], gpus="1..2", target_rps=1.0)
    assert set(passed) <= set(assigned)
    assert assigned["gpus"] == NOTEBOOK_DEFAULT_GPUS
    # the defaults point at files that exist, relative to the notebook
    assert (NOTEBOOK.parent / assigned["scenario_path"]).is_file()
    assert (NOTEBOOK.parent / assigned["trace_path"]).is_file()


def test_widget_and_progress_cells_are_tagged_and_no_cell_hides_output_with_a_semicolon():
    for cell in notebook().cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        shows_widget = any(name in cell.source for name in ("PlanExplorer(", "App(",
                                                            "progress=True"))
        assert shows_widget == ("nbval-ignore-output" in tags), cell.source
        assert not cell.source.rstrip().endswith(";")


def test_the_stored_notebook_ran_without_errors_and_shows_the_plan():
    cells = notebook().cells
    for cell in cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error"
    text = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
    assert "capacity plan: ../data/scenarios/conversation.toml, trace " \
           "../data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv (1445 requests)" in text
    assert "target 8 req/s: cheapest is 1 x H100-SXM-80GB ($3.95/hour)" in text
    data = json.dumps([o.get("data", {}) for c in cells for o in c.get("outputs", [])])
    assert data.count("image/png") >= 2  # the capacity and cost curves, the attainment curve


def test_the_documented_fleet_plan_is_the_notebooks():
    """docs/planning.md's fleet plan (which the README quotes) is the plan notebook 06 prints,
    which nbval re-runs: the same command line, apart from the paths on the first line."""
    from conftest import doc_text, marked_block

    block = marked_block(doc_text("docs/planning.md"), "fleet-output", fenced=True)
    documented = block.partition("\n")[2].splitlines()
    cells = notebook().cells
    printed = next(o["text"] for c in cells if c.cell_type == "code"
                   and c.source.strip() == "print(fleet.table())" for o in c.outputs)
    assert printed.splitlines()[1:] == documented[1:]


# --------------------------------------------------------------------------------------------
# GPU types: the fleet study's figures, its price widget and the seed's answer


@pytest.fixture(scope="module")
def conversation():
    return load_inputs(DATA / "scenarios" / "conversation.toml",
                       DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv", "azure",
                       "chat=5,assist=3,batch=2", 0, trace_span=30)


@pytest.fixture(scope="module")
def conversation_fleet(conversation):
    from apslab.core.metrics import GoodputTargets
    from apslab.plan.search import plan_fleet, slos_with_attainment
    from apslab.plan.study import gpu_type_scenarios

    scenario, trace = conversation
    targets = GoodputTargets(ttft_s=0.5, tpot_s=0.05)
    return plan_fleet(gpu_type_scenarios(scenario, "A100-80GB,L4"), trace,
                      slos_with_attainment([], 0.9, targets), [1], target_rps=2.0,
                      settings=SearchSettings(tolerance=0.1, min_load=0.25, goodput=targets),
                      executor=SerialExecutor(), progress=False)


def test_a_trace_span_keeps_the_first_seconds(conversation):
    scenario, trace = conversation
    assert len(trace) == 59 and trace.arrival_s.max() < 30
    assert describe_inputs(scenario, trace).startswith(
        "trace AzureLLMInferenceTrace_conv.csv: 59 requests over ")
    with pytest.raises(InputError, match="a trace span needs a trace path"):
        load_inputs(DATA / "scenarios" / "example.toml", trace_span=10)


def test_gpu_type_scenarios():
    from apslab.plan.study import gpu_type_scenarios

    scenario = make_scenario()
    assert gpu_type_scenarios(scenario) == {scenario.gpu.name: scenario}
    types = gpu_type_scenarios(scenario, "L4")
    assert types["L4"].gpu.name == "L4" and types["L4"].tenants == scenario.tenants


def test_fleet_figures_and_the_tpot_floor(conversation_fleet):
    from apslab.plan.study import (
        attainment_figure,
        attainment_points,
        fleet_figure,
        tpot_floor_text,
    )

    fleet = conversation_fleet
    fig = fleet_figure(fleet)
    left, right = fig.axes
    assert [line.get_label() for line in left.lines][:2] == ["A100-80GB",
                                                            "L4: none within the SLOs"]
    points = attainment_points(fleet)
    assert len(points) == sum(len(s.points) for p in fleet.plans.values() for s in p.searches)
    assert {p["gpu_type"] for p in points} == {"A100-80GB", "L4"}
    fig = attainment_figure(fleet, 0.9)
    assert "never above 1%: 1 x L4" in fig.axes[0].get_title()
    text = tpot_floor_text(fleet, tpot_target=0.05)
    assert text.splitlines()[-1].startswith("L4 ") and text.endswith("> 0.05 s target")
    assert "A100-80GB" in text and "meets" in text


def test_gpu_price_app_reprices_without_rerunning(conversation_fleet):
    from apslab.plan.study import GpuPriceApp

    fleet = conversation_fleet
    best = fleet.plans["A100-80GB"].searches[0].best.metrics["offered_rps"]
    app = GpuPriceApp(fleet, target_rps=min(2.0, best))
    assert app.image.value[:4] == b"\x89PNG"
    assert "1 x A100-80GB, $2.50/hour" in app.status.value
    app.controls["A100-80GB"].value = 1.0
    assert app.cheapest() == ("A100-80GB", 1, 1.0)
    assert "$1.00/hour" in app.status.value
    assert "no GPU type and count reaches it" in GpuPriceApp(fleet, 1e6).status.value


def test_the_seed_comparison(conversation, conversation_fleet):
    from apslab.plan.study import seed_comparison, seed_comparison_text, seed_scenario

    scenario, trace = conversation
    seed = seed_scenario(scenario)
    assert seed.scheduler.batching == "static" and seed.scheduler.max_batch_size == 16
    assert seed.gpu.name == "A100 (the seed's static model)" and seed.gpu.price_per_hour == 3.0
    assert seed.tenants == scenario.tenants
    comparison = seed_comparison(scenario, trace, conversation_fleet, 2.0, gpu_counts=[1, 2],
                                 settings=SearchSettings(tolerance=0.1, min_load=0.25))
    assert comparison["plan"].slos[0] == parse_slo("queue_wait_s.p99<=2")
    service = comparison["service"]
    assert service["seed_decode_16"] == pytest.approx(128 * (0.4 + 0.6 * 4))
    assert service["roofline_decode_64"] > service["roofline_decode_16"] > \
        service["seed_decode_16"]
    text = seed_comparison_text(comparison, 2.0)
    assert text.startswith("capacity plan: ") and "mean request " in text
