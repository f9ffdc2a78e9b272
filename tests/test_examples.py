"""Every example script runs end to end at a small setting (smoke tests)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CASES = {
    "train_dyck.py": ["--steps", "5", "--n-eval", "40", "--run-dir", "{tmp}/run"],
    "train_question_formation.py": ["--steps", "5", "--n-eval", "40", "--run-dir", "{tmp}/run"],
    "train_tense_inflection.py": ["--steps", "5", "--n-eval", "40", "--run-dir", "{tmp}/run"],
    "hierarchical_filtering_vs_bp.py": ["--steps", "5", "--n-eval", "40", "--run-dir", "{tmp}/run"],
    "sparse_probing.py": ["--steps", "5", "--n-examples", "60", "--ks", "1,2"],
    "sae_quickstart.py": ["--quick", "--out", "{tmp}/out"],
    "mdl_digits.py": ["--quick", "--out", "{tmp}/out"],
    "structural_grokking.py": ["--steps", "30", "--quick", "--run-dir", "{tmp}/run"],
    "pretrained_minilm.py": ["--quick", "--out-dir", "{tmp}/runs"],
    "chomsky_stack_probe.py": [
        "--steps",
        "5",
        "--n-probe",
        "30",
        "--ks",
        "1,2",
        "--bucket",
        "2",
        "--plot",
        "{tmp}/depth_vs_t.png",
        "--out",
        "{tmp}/runs",
    ],
}


def test_every_example_has_a_smoke_case():
    tested = set(CASES) | {"sae_concepts.py"}  # sae_concepts: tests/test_sae_concepts.py
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script, tmp_path):
    args = [a.format(tmp=tmp_path) for a in CASES[script]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).strip(), "the example printed nothing"
