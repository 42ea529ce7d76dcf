"""STDP options in model files: every option of the Python API (pair mode/mu/pairing, triplet
parameters and named sets incl. pairing, reward-modulated) is expressible, reaches the rule module
unchanged, survives dump/re-parse, and bad values give errors naming the key."""

from __future__ import annotations

import pytest

from neuro.model.spec import ModelFileError, dump_model, loads_model
from neuro.rules import (
    TRIPLET_PARAMETER_SETS,
    PairSTDPParameters,
    RSTDPParameters,
    TripletSTDPParameters,
)
from neuro.training.local import rule_for

SOURCE = "models/stdp_test.toml"


def model(rule: str, params: str, bounds: str = "bounds = [0.0, 0.5]") -> str:
    return f"""\
[model]
name = "stdp_spec"
dt = "1 ms"
duration = "50 ms"

[populations.inp]
type = "input"
size = 5

[populations.out]
type = "LIF"
size = 2

[inputs.inp]
encoding = "poisson"
rate = "20 Hz"

[projections.syn]
source = "inp"
target = "out"
init = 0.1
{bounds}
rule = "{rule}"

[projections.syn.rule_params]
{params}

[data]
name = "poisson_scenario"

[training]
loss = "none"
"""


def params_of(rule: str, params: str, bounds: str = "bounds = [0.0, 0.5]"):
    graph = loads_model(model(rule, params, bounds), SOURCE)
    again = loads_model(dump_model(graph))
    assert again.canonical_hash() == graph.canonical_hash()
    return rule_for(graph, "syn").params


def error_of(rule: str, params: str, bounds: str = "bounds = [0.0, 0.5]") -> ModelFileError:
    with pytest.raises(ModelFileError) as info:
        loads_model(model(rule, params, bounds), SOURCE)
    assert str(info.value).startswith(SOURCE)
    return info.value


@pytest.mark.parametrize(
    "text, mu",
    [('mode = "additive"', 0.0), ('mode = "multiplicative"', 1.0), ('mode = "power_law"\nmu = 0.4', 0.4)],
)
def test_pair_modes_reach_the_rule(text, mu):
    p = params_of("stdp_pair", f'tau_plus = "16 ms"\na_plus = 0.02\npairing = "nearest"\n{text}')
    assert p == PairSTDPParameters(16e-3, 20e-3, 0.02, 0.0105, mu, 0.0, 0.5, "nearest")


def test_pair_defaults():
    assert params_of("stdp_pair", "") == PairSTDPParameters(w_max=0.5)


@pytest.mark.parametrize(
    "params, key, found",
    [
        ('mode = "power_law"', "mu", "missing"),
        ('mode = "power_law"\nmu = 0', "mu", "0"),
        ('mode = "additive"\nmu = 0.5', "mu", "0.5"),
        ('mode = "multiplicative"\nmu = 2', "mu", "2"),
        ('mode = "soft"', "mode", '"soft"'),
        ('pairing = "nearest_spike"', "pairing", '"nearest_spike"'),
        ("mu = -1", "mu", "-1"),
        ('tau_plus = "20"', "tau_plus", "no unit"),
        ("a_minus = -0.01", "a_minus", "-0.01"),
        ('tau_eligibility = "1 s"', "tau_eligibility", "unknown key"),
    ],
)
def test_pair_errors_name_the_key(params, key, found):
    err = error_of("stdp_pair", params)
    assert err.key == f"projections.syn.rule_params.{key}"
    assert found in err.found


def test_weight_dependence_needs_bounds():
    err = error_of("stdp_pair", 'mode = "multiplicative"', bounds="")
    assert err.key == "projections.syn.bounds" and "multiplicative" in err.expected
    assert params_of("stdp_pair", 'mode = "additive"', bounds="").mu == 0.0


def test_misspelt_mode_gets_a_hint():
    assert "power_law" in (error_of("stdp_pair", 'mode = "power-law"').hint or "")


@pytest.mark.parametrize("name", sorted(TRIPLET_PARAMETER_SETS))
def test_every_named_triplet_set_is_expressible(name):
    assert params_of("stdp_triplet", f'parameter_set = "{name}"') == TRIPLET_PARAMETER_SETS[name]


def test_named_set_with_agreeing_keys_and_custom_values():
    p = TRIPLET_PARAMETER_SETS["hippocampal_nearest"]
    given = 'parameter_set = "hippocampal_nearest"\ntau_x = "575 ms"\npairing = "nearest"\na3_minus = 7.5e-9'
    assert params_of("stdp_triplet", given) == p
    custom = 'tau_x = "200 ms"\ntau_y = "50 ms"\na2_plus = 1e-3\npairing = "nearest"'
    want = TripletSTDPParameters(tau_x=0.2, tau_y=0.05, a2_plus=1e-3, pairing="nearest")
    assert params_of("stdp_triplet", custom) == want
    assert params_of("stdp_triplet", "") == TRIPLET_PARAMETER_SETS["visual_cortex_all_to_all"]


@pytest.mark.parametrize(
    "params, key, hint",
    [
        ('parameter_set = "visual_cortex_nearest"\ntau_x = "700 ms"', "tau_x", "custom"),
        ('parameter_set = "hippocampal_all_to_all"\npairing = "nearest"', "pairing", "custom"),
        ('parameter_set = "visual_cortex"', "parameter_set", "did you mean 'visual_cortex_"),
        ('pairing = "all"', "pairing", None),
        ('mode = "additive"', "mode", "stdp_pair"),
    ],
)
def test_triplet_errors(params, key, hint):
    err = error_of("stdp_triplet", params)
    assert err.key == f"projections.syn.rule_params.{key}"
    if hint:
        assert hint in (err.hint or "")


def test_contradicting_set_value_shows_the_published_value_with_its_unit():
    err = error_of("stdp_triplet", 'parameter_set = "visual_cortex_nearest"\ntau_x = "700 ms"')
    assert '"714 ms"' in err.expected and "700 ms" in err.found


def test_reward_modulated_parameters():
    text = 'tau_plus = "10 ms"\na_minus = 0.2\ntau_eligibility = "500 ms"\ntau_reward = "100 ms"'
    assert params_of("rstdp", text) == RSTDPParameters(10e-3, 20e-3, 0.01, 0.2, 0.5, 0.1)
    err = error_of("rstdp", 'tau_reward = "0 ms"')
    assert err.key.endswith("tau_reward") and "> 0" in err.expected
    err = error_of("rstdp", 'pairing = "nearest"')
    assert "stdp_pair" in (err.hint or "")
