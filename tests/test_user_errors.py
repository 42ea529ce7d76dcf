"""Bad input never ends in a traceback (issue 14): every malformed model file and command-line call
of this corpus exits with code 2 and a message that names what is wrong.

Each case is ``(arguments, words the message must contain)``; ``{model}`` in the arguments is a
model file the case writes from a bundled one with one line changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"
DIGITS = (MODELS / "digits_bptt.toml").read_text()

#: (name, model-file edit (old, new) or None, CLI arguments, words the message contains)
CASES = [
    ("negative epochs", None, ["train", "digits_bptt", "--epochs", "-1"], ["--epochs", ">= 1"]),
    ("zero epochs", None, ["train", "digits_bptt", "--epochs", "0"], ["--epochs", ">= 1"]),
    ("epochs not a number", None, ["train", "digits_bptt", "--epochs", "abc"], ["--epochs", "whole number"]),
    ("zero samples", None, ["train", "digits_bptt", "--max-train", "0"], ["--max-train", ">= 1"]),
    ("negative samples", None, ["train", "digits_bptt", "--max-train", "-5"], ["--max-train", ">= 1"]),
    ("fewer samples than a batch", None, ["train", "digits_bptt", "--max-train", "10"],
     ["batch_size", "32"]),
    ("negative seed", None, ["train", "digits_bptt", "--seed", "-3"], ["--seed", ">= 0"]),
    ("zero duration", None, ["train", "triplet_stdp", "--duration", "0"], ["--duration", "> 0"]),
    ("duration not a time", None, ["train", "triplet_stdp", "--duration", "soon"], ["--duration", "ms"]),
    ("duration in volts", None, ["train", "triplet_stdp", "--duration", "5 mV"], ["--duration"]),
    ("unknown model", None, ["train", "digits_bpt"], ["digits_bpt", "did you mean 'digits_bptt'"]),
    ("unknown format", None, ["train", "digits_bptt", "--format", "posit12"], ["format", "posit16"]),
    ("unknown mode", None, ["train", "digits_bptt", "--mode", "backprop"], ["--mode", "bptt"]),
    ("loss mode for an STDP model", None, ["train", "triplet_stdp", "--mode", "eprop"], ["local", "eprop"]),
    ("local mode for a BPTT model", None, ["train", "digits_bptt", "--mode", "local"], ["local", "bptt"]),
    ("reversible mode without the section", None, ["train", "digits_bptt", "--mode", "reversible"],
     ["[reversible]"]),
    ("no CUDA", None, ["train", "digits_bptt", "--device", "cuda"], ["CUDA", "--device cpu"]),
    ("not a device", None, ["train", "digits_bptt", "--device", "banana"], ["banana", "cpu"]),
    ("resume without a checkpoint", None, ["train", "digits_bptt", "--resume", "nowhere"],
     ["nowhere", "no checkpoint"]),
    ("resume into another folder", None, ["train", "digits_bptt", "--resume", "a", "--out", "b"],
     ["--resume", "--out"]),
    ("negative checkpoint interval", None, ["train", "digits_bptt", "--checkpoint-every", "-1"],
     ["--checkpoint-every", ">= 0"]),
    ("plan of no samples", None, ["plan", "digits_bptt", "--batch", "0"], ["--batch", ">= 1"]),
    ("plan budget not a size", None, ["plan", "digits_bptt", "--budget", "lots"], ["budget", "2x"]),
    ("crosscheck of an unknown model", None, ["crosscheck", "crosscheck_f"], ["crosscheck_ff"]),
    ("crosscheck of a negative duration", None, ["crosscheck", "crosscheck_ff", "--duration", "-1"],
     ["--duration", "> 0"]),
    ("import of a missing NIR file", None, ["import-nir", "nofile.nir", "out"], ["nofile.nir"]),
    ("models of a missing folder", None, ["models", "--dir", "nowhere"], ["nowhere", "no such folder"]),
    ("a port out of range", None, ["serve", "reg", "--key", "k.pem", "--port", "70000"], ["--port", "65535"]),
    ("no serving threads", None, ["serve", "reg", "--key", "k.pem", "--threads", "0"], ["--threads", ">= 1"]),
    ("certify of nothing", None, ["certify", "nofile"], ["nofile"]),
    ("sign of a missing run", None, ["sign", "reg", "norun", "--key", "k.pem"],
     ["norun", "no such run folder"]),
    # model files with one line wrong
    ("a time without a unit", ('tau_mem = "10 ms"', 'tau_mem = 10'), ["train", "{model}"], ["tau_mem", "ms"]),
    ("a misspelt key", ('tau_mem = "10 ms"', 'tau_mme = "10 ms"'), ["train", "{model}"],
     ["tau_mme", "tau_mem"]),
    ("an alias for batch_size", ("batch_size = 32", "batch = 32"), ["train", "{model}"],
     ["training.batch", "did you mean 'batch_size'"]),
    ("an alias for a rule", ('rule = "bptt"', 'rule = "backprop"'), ["train", "{model}"],
     ["backprop", "did you mean 'bptt'"]),
    ("a negative size", ("size = 128", "size = -128"), ["train", "{model}"], ["size"]),
    ("an unknown neuron type", ('type = "LIF"', 'type = "Izhikevich"'), ["train", "{model}"],
     ["Izhikevich", "LIF"]),
    ("a storage format that does not exist", ('format = "float32"', 'format = "float16"'),
     ["train", "{model}"],
     ["float16"]),
    ("not TOML", ("[training]", "[training"), ["train", "{model}"], ["TOML"]),
    ("an unknown data set", ('name = "digits"', 'name = "mnist"'), ["train", "{model}"], ["mnist"]),
    ("a learning rate of zero", ("learning_rate = 5e-3", "learning_rate = 0"), ["train", "{model}"],
     ["learning_rate", "> 0"]),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("errors")


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30 and sum(edit is not None for _, edit, _, _ in CASES) >= 10


@pytest.mark.parametrize("name, edit, args, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_a_message_and_no_traceback(name, edit, args, words, folder):
    if edit is not None:
        old, new = edit
        assert old in DIGITS, f"{name}: {old!r} is not in digits_bptt.toml"
        model = folder / f"{re.sub(r'[^a-z]+', '_', name)}.toml"
        model.write_text(DIGITS.replace(old, new, 1))
        args = [str(model) if a == "{model}" else a for a in args]
    quiet = ["--quiet"] if args[0] == "train" else []
    done = subprocess.run([sys.executable, "-m", "neuro", *args, *quiet], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    message = done.stderr + done.stdout
    assert done.returncode == 2, f"{name}: exit {done.returncode}\n{message}"
    assert "Traceback" not in message, message
    for word in words:
        assert word in message, f"{name}: {word!r} not in:\n{message}"
