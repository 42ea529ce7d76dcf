"""Given weights in model files: init = { file = "W.safetensors", key = "..." } or { file = "W.npy" }."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from spec_cases import SMALL

from neuro.model.graph import GraphError, Init, ModelGraph
from neuro.model.spec import ModelFileError, dump_model, load_model, loads_model

FIRST = 'init = { file = "weights/W.safetensors", key = "inp_hidden" }'
MODEL = SMALL.replace('init = { dist = "normal", mean = 0.0, std = 0.1 }', FIRST).replace(
    "init = 0.05", 'init = { file = "weights/hidden_out.npy" }')


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A model file with a weights/ folder next to it: W.safetensors and hidden_out.npy."""
    gen = torch.Generator().manual_seed(0)
    (tmp_path / "weights").mkdir()
    save_file({"inp_hidden": torch.randn(8, 4, generator=gen), "other": torch.ones(2)},
              tmp_path / "weights" / "W.safetensors")
    np.save(tmp_path / "weights" / "hidden_out.npy", np.random.default_rng(0).normal(size=(3, 8)))
    (tmp_path / "model.toml").write_text(MODEL)
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "model.toml"
    path.write_text(text)
    return path


def error_of(folder: Path, old: str, new: str) -> ModelFileError:
    assert old in MODEL, old
    path = write(folder, MODEL.replace(old, new, 1))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def test_given_weights_are_read_relative_to_the_model_file(folder, monkeypatch):
    monkeypatch.chdir(folder.parent)  # not the model file's folder
    graph = load_model(folder / "model.toml")
    init = graph.projections["inp_hidden"].init
    assert init.dist == "file" and init.key == "inp_hidden"
    assert Path(init.file) == (folder / "weights" / "W.safetensors").resolve()
    from safetensors.torch import load_file

    stored = load_file(init.file)["inp_hidden"]
    w = init.load()
    assert w.dtype == torch.float64 and torch.equal(w, stored.double())
    npy = graph.projections["hidden_out"].init
    assert npy.key is None and "key" not in npy.to_dict()
    assert torch.equal(npy.load(), torch.from_numpy(np.load(folder / "weights" / "hidden_out.npy")))


def test_the_network_starts_from_the_given_weights(folder):
    from neuro.sim.network import Network

    graph = load_model(folder / "model.toml")
    net = Network(graph, dtype=torch.float64)
    for name, proj in graph.projections.items():  # snapped to the storage format (float32 here)
        assert proj.format == "float32"
        assert torch.equal(net.weights[name].detach(), proj.init.load().float().double())
    out = net(torch.ones(graph.steps, 2, 4))
    assert out is not None


def test_the_hash_follows_the_content_of_the_file(folder):
    before = load_model(folder / "model.toml")
    assert load_model(folder / "model.toml").canonical_hash() == before.canonical_hash()
    path = folder / "weights" / "W.safetensors"
    save_file({"inp_hidden": torch.zeros(8, 4), "other": torch.ones(2)}, path)
    after = load_model(folder / "model.toml")
    assert after.canonical_hash() != before.canonical_hash()
    with pytest.raises(GraphError) as info:  # the old graph refuses the changed file
        before.projections["inp_hidden"].init.load()
    assert info.value.key == "init.file" and "changed since" in info.value.found


def test_dump_writes_absolute_paths_and_sha256_and_round_trips(folder, monkeypatch):
    graph = load_model(folder / "model.toml")
    text = dump_model(graph)
    init = graph.projections["inp_hidden"].init
    assert f'file = "{init.file}"' in text and f'sha256 = "{init.sha256}"' in text
    monkeypatch.chdir(folder.parent)
    again = loads_model(text, "<dump>")
    assert again == graph and dump_model(again) == text
    assert ModelGraph.from_dict(json.loads(graph.canonical_json())) == graph
    # a pinned sha256 that no longer matches the file is refused
    np.save(folder / "weights" / "hidden_out.npy", np.zeros((3, 8)))
    with pytest.raises(ModelFileError) as info:
        loads_model(text, "<dump>")
    assert info.value.key == "projections.hidden_out.init.sha256" and "changed" in info.value.hint


def test_half_precision_and_one_to_one_weights(tmp_path):
    save_file({"w": torch.full((4,), 0.5, dtype=torch.bfloat16)}, tmp_path / "d.safetensors")
    text = SMALL.replace('dt = "1 ms"', 'dt = "1 ms"\noutput = "out"') + (
        '\n[populations.side]\ntype = "LIF"\nsize = 4\n\n[projections.diag]\nsource = "inp"\n'
        'target = "side"\nkind = "one_to_one"\ninit = { file = "d.safetensors", key = "w" }\n')
    graph = loads_model(text, "m.toml", base=tmp_path)
    assert torch.equal(graph.projections["diag"].init.load(), torch.full((4,), 0.5, dtype=torch.float64))


def test_a_graph_built_in_code_takes_init_from_file(folder):
    graph = load_model(folder / "model.toml")
    path = folder / "weights" / "hidden_out.npy"
    init = Init.from_file(path)
    assert init == graph.projections["hidden_out"].init
    with pytest.raises(GraphError) as info:
        Init("file", file=str(path)).check("projections.p.init")
    assert info.value.key == "projections.p.init.sha256" and "from_file" in info.value.hint
    with pytest.raises(GraphError) as info:
        Init("file", file="weights/W.npy", sha256="0" * 64).check("projections.p.init")
    assert info.value.key == "projections.p.init.file" and "absolute" in info.value.expected
    with pytest.raises(ValueError, match="no file"):
        Init("constant", value=0.0).load()


# (edit of the first init, key of the error, substrings of the message, substring of the hint)
CASES = [
    ('init = { file = "weights/W2.safetensors", key = "inp_hidden" }', "projections.inp_hidden.init.file",
     ["no such file", "W2.safetensors"], "did you mean 'W.safetensors'?"),
    ('init = { file = "W.safetensors", key = "inp_hidden" }', "projections.inp_hidden.init.file",
     ["no such file"], "starts from the model file's folder"),
    ('init = { file = "weights/W.safetensors" }', "projections.inp_hidden.init.key",
     ["the key is missing", "W.safetensors"], 'add key = "inp_hidden"'),
    ('init = { file = "weights/W.safetensors", key = "inp_hiden" }', "projections.inp_hidden.init.key",
     ["inp_hiden", "inp_hidden, other"], "did you mean 'inp_hidden'?"),
    ('init = { file = "weights/W.safetensors", key = "other" }', "projections.inp_hidden.init",
     ["shape (8, 4)", "(target hidden, source inp)", "shape (2,)", "W.safetensors['other']"], "that shape"),
    ('init = { file = "weights/hidden_out.npy" }', "projections.inp_hidden.init",
     ["shape (8, 4)", "shape (3, 8)", "hidden_out.npy"], "that shape"),
    ('init = { file = "weights/hidden_out.npy", key = "w" }', "projections.inp_hidden.init.key",
     ["no key for a .npy file"], "remove key"),
    ('init = { file = "weights/W.pt", key = "w" }', "projections.inp_hidden.init.file",
     [".safetensors or .npy", "W.pt"], "save_file"),
    ('init = { file = "weights/W.safetensors", key = "inp_hidden", std = 0.1 }',
     "projections.inp_hidden.init.std", ["unknown key"], "normal"),
    ('init = { file = "weights/W.safetensors", key = "inp_hidden", sha256 = "00" }',
     "projections.inp_hidden.init.sha256", ["sha256 of", '"00"'], "changed"),
    ('init = { file = 3 }', "projections.inp_hidden.init.file", ["a string"], None),
]


@pytest.mark.parametrize(("new", "key", "parts", "hint"), CASES)
def test_errors_name_the_file_the_key_and_the_fix(folder, new, key, parts, hint):
    err = error_of(folder, FIRST, new)
    assert err.key == key, str(err)
    for part in parts:
        assert part in str(err), (part, str(err))
    if hint is not None:
        assert err.hint is not None and hint in err.hint, (hint, str(err))


def test_transposed_weights_say_so(folder):
    save_file({"w": torch.zeros(4, 8)}, folder / "weights" / "T.safetensors")
    err = error_of(folder, FIRST, 'init = { file = "weights/T.safetensors", key = "w" }')
    assert err.key == "projections.inp_hidden.init" and "shape (4, 8)" in err.found
    assert "transposed" in err.hint


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(folder, bad):
    w = torch.zeros(8, 4)
    w[2, 3] = bad
    save_file({"w": w}, folder / "weights" / "bad.safetensors")
    err = error_of(folder, FIRST, 'init = { file = "weights/bad.safetensors", key = "w" }')
    assert err.key == "projections.inp_hidden.init.file"
    assert "finite weights" in err.expected and "1 NaN or infinite" in err.found and "(2, 3)" in err.found


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64])
def test_weights_that_are_not_floats_are_refused(folder, dtype):
    save_file({"w": torch.zeros(8, 4, dtype=dtype)}, folder / "weights" / "int.safetensors")
    err = error_of(folder, FIRST, 'init = { file = "weights/int.safetensors", key = "w" }')
    assert err.key == "projections.inp_hidden.init.file"
    assert "floating-point" in err.expected and str(dtype) in err.found and "float" in err.hint


@pytest.mark.parametrize("array", [np.zeros((8, 4), dtype=np.int32), np.zeros((8, 4), dtype=bool),
                                   np.array([[None] * 4] * 8, dtype=object)])
def test_npy_that_is_not_floats_is_refused(folder, array):
    np.save(folder / "weights" / "x.npy", array, allow_pickle=True)
    err = error_of(folder, FIRST, 'init = { file = "weights/x.npy" }')
    assert err.key == "projections.inp_hidden.init.file"
    assert "floating-point" in err.expected or "readable" in err.expected


def test_a_corrupt_file_is_refused(folder):
    (folder / "weights" / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    err = error_of(folder, FIRST, 'init = { file = "weights/junk.safetensors", key = "w" }')
    assert err.key == "projections.inp_hidden.init.file" and "readable" in err.expected


def test_given_weights_must_respect_bounds_and_sign(folder):
    save_file({"w": torch.full((8, 4), -0.5)}, folder / "weights" / "neg.safetensors")
    given = 'init = { file = "weights/neg.safetensors", key = "w" }'
    err = error_of(folder, FIRST, given + '\nsign = "excitatory"')
    assert err.key == "projections.inp_hidden.init.file" and "32 values outside" in err.found
    err = error_of(folder, FIRST, given + "\nbounds = [0.0, 1.0]")
    assert "[0.0, 1.0]" in err.expected and "-0.5" in err.found
    path = write(folder, MODEL.replace(FIRST, given + '\nsign = "inhibitory"\nbounds = [-1.0, 0.0]'))
    assert load_model(path).projections["inp_hidden"].sign == "inhibitory"


def test_a_vanished_file_is_reported_when_the_network_is_built(folder):
    graph = load_model(folder / "model.toml")
    os.remove(folder / "weights" / "hidden_out.npy")
    from neuro.sim.network import Network

    with pytest.raises(GraphError) as info:
        Network(graph)
    assert info.value.key == "projections.hidden_out.init.file" and "no such file" in info.value.found
