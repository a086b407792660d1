import pytest

from apslab.io.errors import InputError
from apslab.io.scenario import load_scenario, parse_scenario

GOOD = """
[gpu]
price_per_hour = 2.5

[scheduler]
max_batch_size = 8

[[tenants]]
id = "a"
rate_limit = 100.0
burst_cap = 1000.0

[[tenants]]
id = "b"
rate_limit = 10
burst_cap = 50
"""


def load_text(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load_scenario(path)


def test_defaults_are_the_seed(tmp_path):
    scenario = load_text(tmp_path, GOOD)
    assert scenario.gpu.prefill_tokens_per_s == 1024.0
    assert scenario.gpu.decode_tokens_per_s == 128.0
    assert scenario.gpu.batch_speedup == (0.4, 0.6)
    assert scenario.gpu.kv_capacity_tokens == 65536
    assert scenario.gpu.price_per_hour == 2.5
    assert scenario.scheduler.batch_window_ms == 10.0
    assert scenario.scheduler.max_batch_size == 8
    assert scenario.scheduler.aging_per_s == 0.0
    assert scenario.scheduler.max_queue_length is None
    assert scenario.cluster.gpus == 1
    assert scenario.tenant_ids() == ["a", "b"]
    assert scenario.workload is None


def test_round_trip_through_to_dict(example_scenario_path):
    scenario = load_scenario(example_scenario_path)
    again = parse_scenario(scenario.to_dict(), source=scenario.source)
    assert again == scenario


def test_with_overrides():
    scenario = parse_scenario({"tenants": [{"id": "a", "rate_limit": 1, "burst_cap": 2},
                                           {"id": "b", "rate_limit": 1, "burst_cap": 2}]})
    changed = scenario.with_overrides({"scheduler.max_batch_size": 32, "cluster.gpus": 4,
                                       "tenants.rate_limit": 7.0, "tenants.b.burst_cap": 9.0})
    assert changed.scheduler.max_batch_size == 32 and changed.cluster.gpus == 4
    assert [t.rate_limit for t in changed.tenants] == [7.0, 7.0]
    assert [t.burst_cap for t in changed.tenants] == [2.0, 9.0]
    with pytest.raises(InputError, match="max_batch_size must be >= 1"):
        scenario.with_overrides({"scheduler.max_batch_size": 0})
    with pytest.raises(InputError, match="unknown key"):
        scenario.with_overrides({"scheduler.max_batch": 3})


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("rate_limit = 100.0", "rate_limt = 100.0"),
     r"s\.toml line 10: \[\[tenants\]\] #1 rate_limt is an unknown key \(did you mean "
     r"'rate_limit'\?\)"),
    (GOOD.replace("max_batch_size = 8", "max_batch_sise = 8"),
     r"line 6: \[scheduler\] max_batch_sise is an unknown key \(did you mean 'max_batch_size'"),
    (GOOD + "\n[gpus]\nx = 1\n", r"gpus is an unknown top-level table or key \(did you mean 'gpu'"),
    (GOOD.replace("rate_limit = 10\n", "rate_limit = 0\n"),
     r"line 15: \[\[tenants\]\] #2 \(id 'b'\) rate_limit must be > 0, got 0"),
    (GOOD.replace("burst_cap = 50", "burst_cap = -5"), r"burst_cap must be > 0, got -5"),
    (GOOD.replace("burst_cap = 50", 'burst_cap = "lots"'), r"burst_cap must be a number"),
    (GOOD.replace("burst_cap = 50", "burst_cap = nan"), r"burst_cap must be finite"),
    (GOOD.replace('id = "b"', 'id = "a"'), r"duplicate tenant id 'a'"),
    (GOOD.replace('id = "b"\n', ''), r"\[\[tenants\]\] #2 id is required"),
    (GOOD.replace('id = "b"', 'id = ""'), r"id must be a non-empty string"),
    (GOOD.replace('id = "b"', 'id = "b,c"'), r"may not contain commas"),
    (GOOD.replace("max_batch_size = 8", "max_batch_size = 8.5"), r"must be an integer"),
    (GOOD.replace("price_per_hour = 2.5", "batch_speedup = [0.4]"), r"two numbers"),
    (GOOD.replace("price_per_hour = 2.5", "batch_speedup = [-1.0, 0.5]"), r"a \+ b > 0"),
    ("[[tenants]]\nid='a'\nrate_limit=1\n", r"burst_cap is required"),
    ("[gpu]\n", r"at least one \[\[tenants\]\]"),
    ("[gpu\n", r"not valid TOML"),
])
def test_bad_scenarios_name_file_key_and_problem(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        load_text(tmp_path, text)


WORKLOAD = GOOD + """
[workload]
duration_s = 10
[[workload.tenants]]
id = "a"
arrival_rate_per_s = 2.0
prompt_tokens = { dist = "uniform", low = 1, high = 4 }
output_tokens = 7
"""


def test_workload_parses_with_defaults(tmp_path):
    scenario = load_text(tmp_path, WORKLOAD)
    stream = scenario.workload.tenants[0]
    assert stream.priority_bid == 1.0 and stream.output_tokens.dist == "constant"
    assert scenario.workload.seed == 0


@pytest.mark.parametrize("old, new, message", [
    ('id = "a"\narrival', 'id = "zed"\narrival', r"tenant 'zed' is not defined in \[\[tenants\]\]"),
    ("output_tokens = 7", 'output_tokens = { dist = "poisson", mean = 3 }', r"must be one of"),
    ("output_tokens = 7", 'output_tokens = { dist = "geometric" }', r"mean is required"),
    ("output_tokens = 7", 'output_tokens = { dist = "geometric", mean = 3, meen = 2 }',
     r"meen is an unknown key"),
    ("output_tokens = 7", 'output_tokens = { dist = "geometric", mean = 0.5 }', r"must be >= 1"),
    ("high = 4", "high = 0", r"low must be <= high"),
    ("output_tokens = 7", "output_tokens = 7.5", r"non-negative integer"),
    ("duration_s = 10", "duration_s = 0", r"duration_s must be > 0"),
    ("arrival_rate_per_s = 2.0", "arrival_rate = 2.0", r"arrival_rate is an unknown key"),
])
def test_bad_workloads(tmp_path, old, new, message):
    with pytest.raises(InputError, match=message):
        load_text(tmp_path, WORKLOAD.replace(old, new))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.toml")


def test_toml_round_trip(tmp_path, example_scenario_path):
    scenario = load_scenario(example_scenario_path)
    odd = scenario.with_overrides({"gpu.name": 'A "quoted" \\ name', "cluster.gpus": 3,
                                   "scheduler.max_queue_length": 10})
    path = tmp_path / "round.toml"
    odd.write(path)
    back = load_scenario(path)
    assert back.to_dict() == odd.to_dict()
