"""A small valid model file shared by the model-file tests: edit it with ``str.replace``."""

SMALL = """\
[model]
name = "small"
description = "a small test model"
dt = "1 ms"
duration = "20 ms"

[populations.inp]
type = "input"
size = 4

[populations.hidden]
type = "LIF"
size = 8
tau_mem = "10 ms"

[populations.out]
type = "LI"
size = 3

[inputs.inp]
encoding = "poisson"
max_rate = "100 Hz"

[projections.inp_hidden]
source = "inp"
target = "hidden"
init = { dist = "normal", mean = 0.0, std = 0.1 }
rule = "bptt"

[projections.hidden_out]
source = "hidden"
target = "out"
init = 0.05
rule = "bptt"

[training]
batch_size = 16
"""
