"""One worker or two: every training mode gives the same weight bits (issue 13).

The in-process test starts two gloo workers with torch.multiprocessing and trains one small model
per mode in each; the torchrun tests run the command line as a user would (``torchrun
--nproc_per_node 2 -m neuro train ...``) and compare with the recorded one-worker digests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from digest_cases import QUICK, command

from neuro.model.graph import ModelGraph
from neuro.model.spec import load_model
from neuro.training import train

MODELS = Path(__file__).resolve().parent.parent / "models"
RECORD = json.loads((Path(__file__).resolve().parent / "fixtures" / "digests.json").read_text())["quick"]


def _small(name: str, **changes) -> ModelGraph:
    d = load_model(MODELS / f"{name}.toml").to_dict()
    d.update(changes)
    return ModelGraph.from_dict(d)


#: case -> (graph builder, train() options); 2 microbatches per global batch in the loss modes
CASES = {
    "bptt": (lambda: _small("yinyang_bptt").with_training(batch_size=16, microbatch=8), {}),
    "bptt_checkpoint": (lambda: _small("yinyang_bptt").with_training(batch_size=16, microbatch=8),
                        {"mode": "bptt_checkpoint"}),
    "eprop": (lambda: _small("yinyang_eprop").with_training(batch_size=16, microbatch=8), {}),
    "ottt": (lambda: _small("yinyang_ottt").with_training(batch_size=16, microbatch=8), {}),
    "reversible": (lambda: _small("yinyang_reversible").with_training(batch_size=16, microbatch=8), {}),
    "local (triplet STDP)": (lambda: _small("triplet_stdp", duration=0.5), {}),
    "local (Diehl & Cook)": (lambda: _small("diehl_cook_digits"), {"max_train": 3}),
}


def _digests(out_dir: str | None = None) -> dict[str, str]:
    out = {}
    for name, (graph, options) in CASES.items():
        options = {"epochs": 1, "max_train": 32, **options}
        folder = f"{out_dir}/{name}" if out_dir else None
        out[name] = train(graph(), progress=False, out_dir=folder, **options).metrics["weights_sha256"]
    return out


def _worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        digests = _digests(out_dir=f"{path}.out{rank}")
        with open(f"{path}.{rank}", "w") as f:
            json.dump(digests, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_mode_gives_one_workers_bits_on_two_gloo_workers():
    single = _digests()
    assert len(set(single.values())) == len(single)  # the cases really differ
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "digest")
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        mp.start_processes(_worker, args=(2, _free_port(), path), nprocs=2, join=True, start_method=method)
        ranks = [json.load(open(f"{path}.{r}")) for r in range(2)]
        written = [os.path.exists(f"{path}.out{r}") for r in range(2)]
        manifests = [os.path.exists(f"{path}.out0/{name}/manifest.json") for name in CASES]
    for name in CASES:
        assert ranks[0][name] == ranks[1][name] == single[name], name
    assert written == [True, False] and all(manifests)  # only rank 0 writes run folders


def _torchrun(case: str, tmp: Path) -> str:
    port = str(_free_port())
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", port, "-m", "neuro"]
    done = subprocess.run(command(QUICK[case], tmp, launcher), cwd=tmp, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(" -> ") == 1, done.stdout  # only rank 0 reports
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    assert metrics["workers"] == 2
    return metrics["weights_sha256"]


@pytest.mark.parametrize("case", ["digits_bptt", "yinyang_eprop", "yinyang_reversible", "triplet_stdp"])
def test_torchrun_cli_matches_one_worker(case, tmp_path):
    assert _torchrun(case, tmp_path) == RECORD[case]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(QUICK))
def test_torchrun_cli_matches_one_worker_for_every_bundled_model(case, tmp_path):
    assert _torchrun(case, tmp_path) == RECORD[case]
