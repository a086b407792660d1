"""API keys: salted hashes only on disk, constant-time checks, files, the environment, the CLI;
and the scenario's max_bid that caps what a request may bid."""

from __future__ import annotations

import hmac
import json
import os
import stat

import pytest
from helpers import make_scenario

from apslab.cli import main as cli_main
from apslab.io.errors import InputError
from apslab.io.scenario import parse_scenario
from apslab.serve import keys as keys_module
from apslab.serve.common import effective_bid
from apslab.serve.keys import KeyEntry, KeyStore, key_id_of, new_key, write_keys_file


def test_a_new_key_verifies_and_nothing_else_does():
    key, entry = new_key("premium", iterations=10)
    assert key.startswith("sk-aps-") and key_id_of(key) == entry.key_id
    assert key not in entry.hash and entry.hash.startswith("pbkdf2_sha256$10$")
    store = KeyStore([entry])
    assert store.tenant_for(key) == "premium"
    assert store.tenant_for(key) == "premium"  # remembered, same answer
    other, _ = new_key("premium")
    for wrong in (other, key[:-1], key + "x", "premium", "", "sk-aps-", key.upper(),
                  "sk-aps-zzzzzzzz-" + key[16:], "\udcff"):
        assert store.tenant_for(wrong) is None, wrong


def test_two_keys_of_one_tenant_have_different_salts():
    _k1, e1 = new_key("t")
    _k2, e2 = new_key("t")
    assert e1.parts()[1] != e2.parts()[1] and e1.key_id != e2.key_id


def test_the_comparison_is_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(keys_module.hmac, "compare_digest",
                        lambda a, b: calls.append(1) or real(a, b))
    key, entry = new_key("t", iterations=5)
    store = KeyStore([entry])
    assert store.tenant_for(key[:-1] + "#") is None
    assert store.tenant_for("sk-aps-00000000-unknown-id") is None  # the decoy is hashed too
    assert store.tenant_for(key) == "t"
    assert len(calls) == 3


def test_keys_files_round_trip_and_are_private(tmp_path):
    key_a, a = new_key("premium")
    key_b, b = new_key("batch")
    path = tmp_path / "keys.toml"
    write_keys_file(path, [a, b])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert key_a not in text and key_b not in text and "[[keys]]" in text
    store = KeyStore.configured(path, environ={})
    assert store.tenant_for(key_a) == "premium" and store.tenant_for(key_b) == "batch"
    assert store.tenants == ["batch", "premium"]
    json_path = tmp_path / "keys.json"
    json_path.write_text(json.dumps({"keys": [{"tenant": "premium", "id": a.key_id,
                                               "hash": a.hash}]}))
    assert KeyStore.configured(json_path, environ={}).tenant_for(key_a) == "premium"


def test_the_environment_adds_keys_and_no_keys_at_all_means_unauthenticated(tmp_path):
    key, entry = new_key("premium")
    store = KeyStore.configured(None, environ={"APSLAB_API_KEYS": f" {entry.env_entry()} ,"})
    assert store.tenant_for(key) == "premium" and store.source == "APSLAB_API_KEYS"
    assert KeyStore.configured(None, environ={}) is None
    assert KeyStore.configured(None, environ={"APSLAB_API_KEYS": "  "}) is None
    colon = KeyEntry("a:b", entry.key_id, entry.hash)  # tenant ids may hold colons
    assert KeyStore.from_env_value(colon.env_entry()).entries[entry.key_id].tenant == "a:b"


@pytest.mark.parametrize("text, message", [
    ("[[keys]]\ntenant = 'a'\nid = 'xyz'\nhash = 'h'\n", "8 hex digits"),
    ("[[keys]]\ntenant = 'a'\nid = '0123abcd'\nhash = 'md5$1$x$y'\n", "hash must be"),
    ("[[keys]]\ntenant = 'a'\nid = '0123abcd'\n", "exactly the strings"),
    ("keys = 3\n", "expected [[keys]]"),
    ("not toml = = \n", "not a keys file"),
])
def test_bad_keys_files_are_input_errors(tmp_path, text, message):
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        KeyStore.configured(path, environ={})


def test_keys_for_tenants_the_scenario_lacks_are_refused():
    _key, entry = new_key("nobody")
    with pytest.raises(InputError, match="'nobody'"):
        KeyStore([entry]).check_tenants(["premium", "batch"])
    with pytest.raises(InputError, match="appears twice"):
        KeyStore([entry, entry])


def test_the_keys_command_adds_lists_and_removes(tmp_path, capsys):
    path = tmp_path / "keys.toml"
    assert cli_main(["keys", "add", "premium", "--keys", str(path)]) == 0
    out = capsys.readouterr().out
    key = next(word for word in out.split() if word.startswith("sk-aps-"))
    assert key not in path.read_text()
    store = KeyStore.configured(path, environ={})
    assert store.tenant_for(key) == "premium"
    assert keys_module.main(["list", "--keys", str(path)]) == 0
    key_id = key_id_of(key)
    assert capsys.readouterr().out.split() == [key_id, "premium"]
    assert cli_main(["keys", "remove", key_id, "--keys", str(path)]) == 0
    assert KeyStore.from_text(path.read_text(), "x").entries == {}
    capsys.readouterr()
    assert keys_module.main(["remove", key_id, "--keys", str(path)]) == 2
    assert "no key with id" in capsys.readouterr().err


def test_serve_refuses_keys_for_unknown_tenants(tmp_path, example_scenario_path, capsys):
    path = tmp_path / "keys.toml"
    write_keys_file(path, [new_key("nobody")[1]])
    assert cli_main(["serve", str(example_scenario_path), "--keys", str(path)]) == 2
    assert "keys for tenants not in the scenario: 'nobody'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# max_bid


def test_max_bid_defaults_to_the_priority_bid_and_caps_requests():
    scenario = parse_scenario({"tenants": [
        {"id": "a", "rate_limit": 1.0, "burst_cap": 1.0, "priority_bid": 2.0, "max_bid": 5.0},
        {"id": "b", "rate_limit": 1.0, "burst_cap": 1.0, "priority_bid": 3.0}]})
    a, b = scenario.tenants
    assert (a.max_bid, a.bid_cap, b.max_bid, b.bid_cap) == (5.0, 5.0, None, 3.0)
    assert [effective_bid(scenario, 0, asked) for asked in (None, 1.0, 4.0, 1e9)] == \
        [2.0, 1.0, 4.0, 5.0]
    assert [effective_bid(scenario, 1, asked) for asked in (None, 0.0, 9.0)] == [3.0, 0.0, 3.0]
    assert effective_bid(scenario, -1, 7.0) == 7.0  # an unknown tenant is rejected anyway
    again = parse_scenario(scenario.to_dict())
    assert again.tenants == scenario.tenants
    assert "max_bid" not in scenario.to_dict()["tenants"][1]


def test_a_max_bid_below_the_priority_bid_is_an_error():
    with pytest.raises(InputError, match="max_bid must be >= priority_bid"):
        make_scenario(tenant_keys={"priority_bid": 2.0, "max_bid": 1.0})
    with pytest.raises(InputError, match="max_bid must be >= 0"):
        make_scenario(tenant_keys={"max_bid": -1.0})
