"""A run killed mid-epoch resumes to the bits of the uninterrupted run (issue 14).

Each case trains through the command line twice: once straight through, once killed right after
its second checkpoint (SIGKILL, from the checkpoint writer's test hook, so the kill lands at a known
point mid-epoch) and then resumed with ``--resume``.  Ctrl-C (SIGINT) stops with one line and keeps
the checkpoint; a folder left by a killed run has no manifest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from neuro.training.checkpoint import SIGNAL_AFTER

#: case -> (model and its graph options, which a resume repeats; run options, which it takes from
#: the checkpoint)
CASES = {
    "bptt": (["digits_bptt"], ["--epochs", "2", "--max-train", "128"]),
    "eprop": (["yinyang_eprop"], ["--epochs", "2", "--max-train", "96"]),
    "local (Diehl & Cook)": (["diehl_cook_digits"], ["--max-train", "6"]),
    "local (distal reward scenario)": (["distal_reward", "--duration", "3"], []),
}


def _neuro(args: list[str], cwd: Path, hook: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != SIGNAL_AFTER}
    if hook:
        env[SIGNAL_AFTER] = hook
    return subprocess.run([sys.executable, "-m", "neuro", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


def _digest(folder: Path) -> str:
    return json.loads((folder / "metrics.json").read_text())["weights_sha256"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_killed_run_resumes_to_the_same_bits(case, tmp_path):
    model, options = CASES[case]
    args = ["train", *model, *options, "--checkpoint-every", "1", "--quiet"]
    straight = _neuro([*args, "--out", "straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr
    killed = _neuro([*args, "--out", "run"], tmp_path, hook="2")
    assert killed.returncode == -signal.SIGKILL
    run = tmp_path / "run"
    assert (run / "checkpoint.json").exists() and not (run / "manifest.json").exists()  # visibly incomplete
    position = json.loads((run / "checkpoint.json").read_text())["position"]
    assert position["epoch"] == 0 and position["batch"] == 2  # mid-epoch
    resumed = _neuro(["train", *model, "--resume", "run", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _digest(run) == _digest(tmp_path / "straight")
    assert (run / "manifest.json").exists() and not (run / "checkpoint.json").exists()


def test_ctrl_c_stops_with_one_line_and_keeps_the_checkpoint(tmp_path):
    done = _neuro(["train", "digits_bptt", "--epochs", "2", "--max-train", "128", "--checkpoint-every", "1",
                   "--quiet", "--out", "run"], tmp_path, hook="1:INT")
    assert done.returncode == 130
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert "--resume run" in done.stderr and (tmp_path / "run" / "checkpoint.json").exists()


def test_resume_refuses_another_runs_checkpoint(tmp_path):
    killed = _neuro(["train", "digits_bptt", "--epochs", "2", "--max-train", "128", "--checkpoint-every", "1",
                     "--quiet", "--out", "run"], tmp_path, hook="1")
    assert killed.returncode == -signal.SIGKILL
    other = _neuro(["train", "digits_bptt", "--format", "posit16", "--resume", "run", "--quiet"], tmp_path)
    assert other.returncode == 2 and "another run" in other.stderr and "model_hash" in other.stderr
    nothing = _neuro(["train", "digits_bptt", "--resume", "elsewhere", "--quiet"], tmp_path)
    assert nothing.returncode == 2 and "no checkpoint" in nothing.stderr
