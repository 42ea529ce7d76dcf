"""Bad model files: every error names the file, the key, what was expected, what was found."""

from __future__ import annotations

import pytest
from spec_cases import SMALL as GOOD

from neuro.model.graph import FORMATS
from neuro.model.spec import ModelFileError, load_model, loads_model, model_from_dict

SOURCE = "models/test.toml"


def error_of(text: str) -> ModelFileError:
    with pytest.raises(ModelFileError) as info:
        loads_model(text, SOURCE)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).startswith(SOURCE)
    return err


def edited(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def test_the_base_model_is_valid():
    graph = loads_model(GOOD, SOURCE)
    assert graph.output == "out"
    assert list(graph.projections) == ["inp_hidden", "hidden_out"]


# (edit old -> new, key path, substrings of the message, substring of the hint or None)
CASES = [
    (
        'tau_mem = "10 ms"',
        "tau_mem = 10",
        "populations.hidden.tau_mem",
        ["a time", "bare number"],
        'write it with a time unit, e.g. "10 ms"',
    ),
    (
        'tau_mem = "10 ms"',
        'tau_mem = "10 mV"',
        "populations.hidden.tau_mem",
        ["a time", "10 mV", "voltage"],
        "time unit",
    ),
    (
        'tau_mem = "10 ms"',
        'tau_mme = "10 ms"',
        "populations.hidden.tau_mme",
        ["unknown key", "tau_mem"],
        "did you mean 'tau_mem'?",
    ),
    (
        'tau_mem = "10 ms"',
        'tau_adapt = "100 ms"',
        "populations.hidden.tau_adapt",
        ["unknown key"],
        "AdaptiveLIF",
    ),
    (
        'tau_mem = "10 ms"',
        'v_th = "1 mV"',
        "populations.hidden.v_th",
        ["dimensionless", "voltage"],
        "dimensionless",
    ),
    ("size = 8", "size = 0", "populations.hidden.size", [">= 1", "0"], None),
    ("size = 8", "size = -3", "populations.hidden.size", [">= 1", "-3"], None),
    ("size = 8", "size = 2.5", "populations.hidden.size", ["integer", "2.5"], None),
    ("size = 8", "size = true", "populations.hidden.size", ["integer", "true"], None),
    ('type = "LIF"', 'type = "LIFF"', "populations.hidden.type", ["LIFBox"], "did you mean"),
    (
        'target = "out"',
        'target = "otu"',
        "projections.hidden_out.target",
        ["population name", "otu"],
        "did you mean 'out'?",
    ),
    (
        'source = "inp"',
        'source = "nowhere"',
        "projections.inp_hidden.source",
        ["population name", "nowhere"],
        None,
    ),
    ('duration = "20 ms"', 'duration = "1 ms"', "model.duration", ["longer than dt"], None),
    ('duration = "20 ms"', 'duration = "0.5 ms"', "model.duration", ["longer than dt"], None),
    (
        'duration = "20 ms"',
        'duration = "20.5 ms"',
        "model.duration",
        ["whole number of time steps"],
        "multiple of dt",
    ),
    (
        'rule = "bptt"\n\n[projections.hidden_out]',
        'rule = "bptt"\nformat = "posit12"\n\n[projections.hidden_out]',
        "projections.inp_hidden.format",
        [", ".join(FORMATS), "posit12"],
        "did you mean",
    ),
    (
        'rule = "bptt"\n\n[projections.hidden_out]',
        'rule = "bptt"\ngrades = [0, 2]\n\n[projections.hidden_out]',
        "projections.inp_hidden.grades",
        ["0..0", "[0, 2]"],
        "basis vectors",
    ),
    (
        'rule = "bptt"\n\n[projections.hidden_out]',
        'rule = "bptt"\nalgebra = [3, 0, 0]\ngrades = [0, 4]\n\n[projections.hidden_out]',
        "projections.inp_hidden.grades",
        ["0..3"],
        None,
    ),
    (
        'rule = "bptt"\n\n[projections.hidden_out]',
        'rule = "bptt"\nalgebra = [3, 0]\n\n[projections.hidden_out]',
        "projections.inp_hidden.algebra",
        ["3 integers"],
        None,
    ),
    (
        'rule = "bptt"\n\n[projections.hidden_out]',
        'rule = "bptt"\ndelay = "1.5 ms"\n\n[projections.hidden_out]',
        "projections.inp_hidden.delay",
        ["whole number of time steps"],
        "multiple of dt",
    ),
    (
        'rule = "bptt"\n\n[projections.hidden_out]',
        'rule = "stdp_pair"\n\n[projections.inp_hidden.rule_params]\ntau_plus = 20\n\n'
        "[projections.hidden_out]",
        "projections.inp_hidden.rule_params.tau_plus",
        ["bare number"],
        '"20 ms"',
    ),
    (
        'rule = "bptt"\n\n[projections.hidden_out]',
        'rule = "stdp_pair"\n\n[projections.inp_hidden.rule_params]\ntau_plsu = "20 ms"\n\n'
        "[projections.hidden_out]",
        "projections.inp_hidden.rule_params.tau_plsu",
        ["unknown key"],
        "tau_plus",
    ),
    (
        'rule = "bptt"\n\n[projections.hidden_out]',
        'rule = "bptt"\n\n[projections.inp_hidden.rule_params]\ntau_plus = "20 ms"\n\n'
        "[projections.hidden_out]",
        "projections.inp_hidden.rule_params.tau_plus",
        ["unknown key"],
        "takes no parameters",
    ),
    (
        'init = 0.05\nrule = "bptt"',
        'init = 0.05\nrule = "stdp_pair"',
        "projections.hidden_out.rule",
        ["spiking target"],
        None,
    ),
    (
        "init = 0.05",
        'init = { dist = "uniform", low = 0.1, high = 0.0 }',
        "projections.hidden_out.init.high",
        ["above low"],
        None,
    ),
    (
        "init = 0.05",
        'init = { dist = "normal", mean = 0.0, sd = 0.1 }',
        "projections.hidden_out.init.sd",
        ["unknown key"],
        "did you mean 'std'?",
    ),
    ("init = 0.05", 'init = "zeros"', "projections.hidden_out.init", ["a number or"], "uniform"),
    ("init = 0.05", "bounds = [0, 1]", "projections.hidden_out.init", ["missing"], None),
    (
        "init = 0.05",
        "init = 0.05\nbounds = [1.0, 0.0]",
        "projections.hidden_out.bounds",
        ["low < high"],
        None,
    ),
    (
        "init = 0.05",
        'init = 0.05\nsign = "inhibitory"\nbounds = [0.0, 1.0]',
        "projections.hidden_out.bounds",
        ["negative"],
        None,
    ),
    ('max_rate = "100 Hz"', 'max_rate = "100 ms"', "inputs.inp.max_rate", ["frequency"], '"100 Hz"'),
    ('max_rate = "100 Hz"', "max_rate = 100", "inputs.inp.max_rate", ["bare number"], "Hz"),
    ('max_rate = "100 Hz"', 't_max = "10 ms"', "inputs.inp", ["exactly one of rate"], None),
    (
        'max_rate = "100 Hz"',
        'max_rate = "100 Hz"\nt_max = "10 ms"',
        "inputs.inp.t_max",
        ["unknown key"],
        "latency",
    ),
    ("[inputs.inp]", "[inputs.hidden]", "inputs.hidden", ["an input population"], None),
    ('target = "hidden"', 'target = "inp"', "projections.inp_hidden.target", ["non-input"], None),
    ("batch_size = 16", "batch_size = 12", "training.batch_size", ["multiple of microbatch"], None),
    ("batch_size = 16", 'batch_size = "16"', "training.batch_size", ["integer"], None),
    ("batch_size = 16", "bach_size = 16", "training.bach_size", ["unknown key"], "batch_size"),
    ("batch_size = 16", 'readout = "spike_count"', "training.readout", ["max_membrane"], None),
    ("batch_size = 16", 'loss = "mse"', "training.loss", ["cross_entropy"], None),
    ("[training]", "[trainig]", "trainig", ["unknown key"], "did you mean 'training'?"),
    ('name = "small"\n', "", "model.name", ["missing"], None),
    ('dt = "1 ms"', 'dt = "1 ms"\noutput = "outt"', "model.output", ["population name"], "'out'"),
    ('dt = "1 ms"', 'dt = "1 ms"\noutput = "inp"', "model.output", ["non-input"], None),
    (
        'description = "a small test model"',
        'description = "two\\nlines"',
        "model.description",
        ["single line"],
        None,
    ),
    ("[populations.out]", "[populations.out-put]", "populations", ["ASCII letters"], None),
]


@pytest.mark.parametrize(("old", "new", "key", "parts", "hint"), CASES)
def test_error_names_key_expected_found_and_hint(old, new, key, parts, hint):
    err = error_of(edited(old, new))
    assert err.key == key, str(err)
    message = str(err)
    assert f"{SOURCE}: {key}: expected " in message
    assert ", found " in message
    for part in parts:
        assert part in message, (part, message)
    if hint is not None:
        assert err.hint is not None and hint in err.hint, (hint, message)
        assert "hint:" in message


def test_ambiguous_output_asks_for_model_output():
    text = edited("[inputs.inp]", '[populations.other]\ntype = "LIF"\nsize = 2\n\n[inputs.inp]')
    err = error_of(text)
    assert err.key == "model.output"
    assert "hidden_out" not in err.found and "other" in err.found and "out" in err.found
    assert "output = " in err.hint


def test_recurrent_projection_must_be_square():
    text = GOOD + '\n[projections.loop]\nsource = "hidden"\ntarget = "out"\nkind = "recurrent"\n'
    text += "init = 0.0\n"
    err = error_of(text)
    assert err.key == "projections.loop.target"
    assert "square" in err.expected


def test_recurrent_is_the_default_kind_for_a_population_to_itself():
    text = GOOD + '\n[projections.rec]\nsource = "hidden"\ntarget = "hidden"\ninit = 0.0\n'
    graph = loads_model(text, SOURCE)
    assert graph.projections["rec"].kind == "recurrent"
    assert graph.is_recurrent
    err = error_of(
        text.replace('target = "hidden"\ninit = 0.0', 'target = "hidden"\nkind = "dense"\ninit = 0.0')
    )
    assert err.key == "projections.rec.kind"


def test_one_to_one_needs_equal_sizes():
    text = GOOD + '\n[projections.o2o]\nsource = "inp"\ntarget = "out"\nkind = "one_to_one"\n'
    err = error_of(text + "init = 1.0\n")
    assert err.key == "projections.o2o.kind" and "4" in err.found and "3" in err.found


def test_feed_forward_cycles_are_refused():
    text = GOOD.replace('type = "LI"', 'type = "LIF"')
    text += '\n[projections.back]\nsource = "out"\ntarget = "hidden"\ninit = 0.0\n'
    text = text.replace('dt = "1 ms"', 'dt = "1 ms"\noutput = "out"')
    err = error_of(text)
    assert "cycle" in err.found and "recurrent" in err.hint


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("[model]\nname = \n", 2, 8),
        ("[model]\nname = 'x'\nname = 'y'\n", 3, 11),
        ("[model\n", 1, 7),
    ],
)
def test_toml_syntax_errors_carry_line_and_column(text, line, column):
    err = error_of(text)
    assert err.key is None
    assert (err.line, err.column) == (line, column)
    assert str(err).startswith(f"{SOURCE}:{line}:{column}: expected valid TOML")


def test_load_model_errors_name_the_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("size = 8", "size = 0"))
    with pytest.raises(ModelFileError, match=r"bad\.toml: populations\.hidden\.size"):
        load_model(path)
    (tmp_path / "model.toml").write_text(GOOD)
    with pytest.raises(ModelFileError) as info:
        load_model(tmp_path / "modle.toml")
    assert "no such file" in str(info.value) and "model.toml" in info.value.hint
    path.write_bytes(b"\xff\xfe[model]")
    with pytest.raises(ModelFileError, match="UTF-8"):
        load_model(path)


def test_model_from_dict_refuses_non_tables():
    with pytest.raises(ModelFileError, match="expected a table"):
        model_from_dict([1, 2, 3])
    with pytest.raises(ModelFileError) as info:
        model_from_dict({"model": {"name": "x", "duration": "10 ms"}, "populations": []})
    assert info.value.key == "populations"
