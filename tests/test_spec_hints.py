"""Hints that know what people write (one alias table), the cycle message, and each vocabulary
defined once where its behaviour lives."""

from __future__ import annotations

import pytest
from spec_cases import SMALL

from neuro.model import errors, graph, schema
from neuro.model.graph import GraphError, Init, Population, Projection
from neuro.model.settings import SCENARIOS
from neuro.model.spec import ModelFileError, loads_model

BASE = SMALL


def error_of(old: str, new: str) -> ModelFileError:
    assert old in BASE, old
    with pytest.raises(ModelFileError) as info:
        loads_model(BASE.replace(old, new, 1), "hints.toml")
    return info.value


# (edit old -> new, key of the error, the hint)
CASES = [
    ("batch_size = 16", "batch = 16", "training.batch", "did you mean 'batch_size'?"),
    ("batch_size = 16", "lr = 0.01", "training.lr", "did you mean 'learning_rate'?"),
    ("batch_size = 16", "epoch = 3", "training.epoch", "did you mean 'epochs'?"),
    ("batch_size = 16", "seeds = 3", "training.seeds", "did you mean 'seed'?"),
    ("batch_size = 16", 'loss = "CE"', "training.loss", "did you mean 'cross_entropy'?"),
    ("batch_size = 16", 'readout = "count"', "training.readout", "did you mean 'spike_count'?"),
    ('init = 0.05\nrule = "bptt"', 'init = 0.05\nrule = "backprop"', "projections.hidden_out.rule",
     "did you mean 'bptt'?"),
    ('init = 0.05\nrule = "bptt"', 'init = 0.05\nrule = "STDP"', "projections.hidden_out.rule",
     "did you mean 'stdp_pair'?"),
    ('encoding = "poisson"', 'encoding = "rate"', "inputs.inp.encoding", "did you mean 'poisson'?"),
    ('tau_mem = "10 ms"', 'tau = "10 ms"', "populations.hidden.tau", "did you mean 'tau_mem'?"),
    ('tau_mem = "10 ms"', "threshold = 1.0", "populations.hidden.threshold", "did you mean 'v_th'?"),
    ('type = "LIF"', 'type = "lif"', "populations.hidden.type", "did you mean 'LIF'?"),
    ('type = "LIF"', 'type = "ALIF"', "populations.hidden.type", "did you mean 'AdaptiveLIF'?"),
    ("init = 0.05", 'init = { dist = "gaussian", mean = 0, std = 1 }', "projections.hidden_out.init.dist",
     "did you mean 'normal'?"),
    ('tau_mem = "10 ms"', "tau_mem = 10", "populations.hidden.tau_mem", '"10 ms"'),
    ('duration = "20 ms"', "duration = 20", "model.duration", '"20 ms"'),
    ('max_rate = "100 Hz"', "max_rate = 100", "inputs.inp.max_rate", '"100 Hz"'),
    # a required key written under another name: the hint says which
    ("init = 0.05", "weights = 0.05", "projections.hidden_out.init", "rename 'weights' to 'init'"),
    ('source = "inp"', 'from = "inp"', "projections.inp_hidden.source", "rename 'from' to 'source'"),
    ("size = 8", "neurons = 8", "populations.hidden.size", "rename 'neurons' to 'size'"),
    ('duration = "20 ms"', 'duraton = "20 ms"', "model.duration", "rename 'duraton' to 'duration'"),
]


@pytest.mark.parametrize(("old", "new", "key", "hint"), CASES)
def test_hints_know_common_aliases(old, new, key, hint):
    err = error_of(old, new)
    assert err.key == key, str(err)
    assert err.hint is not None and hint in err.hint, str(err)


def test_an_alias_is_only_suggested_where_it_is_valid():
    # "rate" is a poisson key as it is; in a population it is no key at all (the encoding goes elsewhere)
    err = error_of('tau_mem = "10 ms"', 'rate = "10 Hz"')
    assert err.key == "populations.hidden.rate" and "[inputs.hidden]" in err.hint
    assert loads_model(BASE.replace('max_rate = "100 Hz"', 'rate = "10 Hz"')).encodings["inp"].rate == 10.0
    # "batch" is not microbatch, although both spellings are as close
    assert errors.suggest("batch", ["microbatch", "batch_size"]) == "batch_size"
    assert errors.suggest("batch", ["microbatch"]) == "microbatch"
    assert errors.suggest("batch", ["microbatch"], spelling=False) is None


def test_graphs_built_in_code_get_the_same_hints():
    with pytest.raises(GraphError) as info:
        Projection("p", "a", "b", "dense", Init("constant", value=0.0), rule="backprop")
    assert info.value.key == "projections.p.rule" and "'bptt'" in info.value.hint
    with pytest.raises(GraphError) as info:
        Population("p", "lsnn", 3)
    assert "'AdaptiveLIF'" in info.value.hint


def _vocabulary() -> set[str]:
    """Every key and value a model file may hold."""
    words = set(schema.TOP_LEVEL) | set(schema.MODEL_KEYS) | set(schema.PROJECTION_KEYS)
    words |= set(schema.POPULATION_DEFAULTS) | {"type", "size"} | set(schema.TRAINING_KEYS)
    words |= set(schema.CROSSCHECK_KEYS) | {"encoding", *schema.ENCODING_KEYS}
    words |= {k for ps in graph.INIT_PARAMETERS.values() for k in ps} | {"dist", "name"}
    for values in (graph.NEURON_TYPES, graph.SURROGATES, graph.FORMATS, graph.PROJECTION_KINDS,
                   graph.SIGNS, graph.INIT_DISTS, graph.ENCODINGS, graph.DATASETS, graph.READOUTS,
                   graph.LOSSES, graph.LR_SCHEDULES):
        words |= set(values)
    from neuro.rules import registry

    words |= set(registry.names())
    return words


def test_every_alias_names_a_word_of_the_model_file_format():
    unknown = sorted(set(errors.ALIASES) - _vocabulary())
    assert not unknown, unknown
    for name, aliases in errors.ALIASES.items():
        assert name not in aliases and all(a == a.lower() for a in aliases), name


def test_each_vocabulary_is_the_one_its_behaviour_lives_with():
    import neuro.data
    import neuro.engine.schedules
    import neuro.numerics.formats
    import neuro.rules.bptt
    from neuro.rules import registry

    assert graph.FORMATS is neuro.numerics.formats.STORAGE_FORMATS
    assert graph.READOUTS is neuro.rules.bptt.READOUTS
    assert graph.LR_SCHEDULES is neuro.engine.schedules.LR_SCHEDULES
    assert graph.ENCODINGS is neuro.data.ENCODINGS
    assert set(neuro.data.dataset_names()) <= set(graph.DATASETS)
    assert set(graph.DATASETS) - set(neuro.data.dataset_names()) == set(SCENARIOS)
    for words in (graph.FORMATS, graph.READOUTS, graph.ENCODINGS, registry.names()):
        assert ", ".join(words) in schema.FORMAT_HELP.replace(" | ", ", ")


CYCLE = BASE.replace('type = "LI"', 'type = "LIF"').replace('dt = "1 ms"', 'dt = "1 ms"\noutput = "out"')


def test_a_cycle_between_populations_is_refused_plainly():
    text = CYCLE + '\n[projections.back]\nsource = "out"\ntarget = "hidden"\ninit = 0.0\n'
    with pytest.raises(ModelFileError) as info:
        loads_model(text, "cycle.toml")
    err = info.value
    assert err.key == "projections.back"  # the projection that closes the loop
    assert "hidden -> out -> hidden" in err.found and "projections hidden_out, back" in err.found
    assert ("cycles between two populations are not supported yet; only a recurrent projection "
            "(a population to itself) may close a loop") in str(err)


def test_a_longer_cycle_names_its_projections_in_order():
    text = CYCLE.replace("[training]", '[populations.extra]\ntype = "LIF"\nsize = 2\n\n'
                         '[projections.out_extra]\nsource = "out"\ntarget = "extra"\ninit = 0.0\n\n'
                         '[projections.extra_hidden]\nsource = "extra"\ntarget = "hidden"\ninit = 0.0\n\n'
                         "[training]")
    with pytest.raises(ModelFileError) as info:
        loads_model(text, "cycle.toml")
    err = info.value
    assert "extra -> hidden -> out -> extra" in err.found
    assert "(projections extra_hidden, hidden_out, out_extra)" in err.found
    assert err.key == "projections.extra_hidden"
    # a recurrent projection is no cycle
    loads_model(CYCLE + '\n[projections.rec]\nsource = "out"\ntarget = "out"\ninit = 0.0\n')
