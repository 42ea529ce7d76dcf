"""The bundled models' weight digests: the record that "same bits" is checked against.

Each case trains one bundled model through the command line (the one interface that every layout of
the package keeps) and reads ``weights_sha256`` from its ``metrics.json``.  Two tiers:

* ``quick``: one short run per model (one epoch of 64 samples; a few seconds of a plastic
  scenario), plus storage-format variants; checked by the default tests.
* ``full``: the model file's own settings; checked by the slow tests.

Run ``python tests/digest_cases.py quick|full`` to print the digests as JSON (the record in
``tests/fixtures/digests.json`` was made this way before the redesign of issue 13).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "digests.json"

GRADIENT = ("digits_bptt", "yinyang_bptt", "yinyang_eprop", "yinyang_ottt", "yinyang_reversible")
#: case name -> (model, CLI options, shortened duration of a plastic scenario or None)
QUICK: dict[str, tuple[str, list[str], str | None]] = {
    **{m: (m, ["--epochs", "1", "--max-train", "64"], None) for m in GRADIENT},
    "digits_bptt@posit16": ("digits_bptt", ["--epochs", "1", "--max-train", "64", "--format", "posit16"],
                            None),
    "yinyang_eprop@posit16": ("yinyang_eprop", ["--epochs", "1", "--max-train", "64", "--format", "posit16"],
                              None),
    "yinyang_bptt@bptt_checkpoint": ("yinyang_bptt", ["--epochs", "1", "--max-train", "64", "--mode",
                                                      "bptt_checkpoint"], None),
    "diehl_cook_digits": ("diehl_cook_digits", ["--epochs", "1", "--max-train", "20"], None),
    "diehl_cook_digits_400": ("diehl_cook_digits_400", ["--epochs", "1", "--max-train", "10"], None),
    "song2000_stdp": ("song2000_stdp", [], "2 s"),
    "song2000_stdp@posit16": ("song2000_stdp", ["--format", "posit16"], "1 s"),
    "triplet_stdp": ("triplet_stdp", [], "2 s"),
    "distal_reward": ("distal_reward", [], "5 s"),
}
FULL: dict[str, tuple[str, list[str], str | None]] = {
    m.stem: (m.stem, [], None) for m in sorted((ROOT / "models").glob("*.toml"))
    if not m.stem.startswith("crosscheck_")  # reference models for `neuro crosscheck`: nothing trains
}


def model_file(model: str, duration: str | None, folder: Path) -> Path:
    """The bundled model file, or a copy whose ``[model] duration`` is ``duration``."""
    path = ROOT / "models" / f"{model}.toml"
    if duration is None:
        return path
    text, n = re.subn(r'(?m)^duration\s*=\s*"[^"]*"', f'duration = "{duration}"', path.read_text(), count=1)
    assert n == 1, f"{path}: no [model] duration line"
    out = folder / f"{model}.toml"
    out.write_text(text)
    return out


def command(case: tuple[str, list[str], str | None], folder: Path,
            launcher: list[str] | None = None) -> list[str]:
    model, options, duration = case
    path = model_file(model, duration, folder)
    head = launcher or [sys.executable, "-m", "neuro"]
    return [*head, "train", str(path), "--out", str(folder / "run"), "--quiet", *options]


def digest(case: tuple[str, list[str], str | None], launcher: list[str] | None = None) -> str:
    """Train one case in a temporary folder and return its ``weights_sha256``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        done = subprocess.run(command(case, folder, launcher), cwd=folder, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{case}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return json.loads((folder / "run" / "metrics.json").read_text())["weights_sha256"]


def record(tier: str) -> dict[str, str]:
    cases = QUICK if tier == "quick" else FULL
    out = {}
    for name, case in cases.items():
        out[name] = digest(case)
        print(f"{name}: {out[name]}", file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    print(json.dumps(record(sys.argv[1]), indent=2))
