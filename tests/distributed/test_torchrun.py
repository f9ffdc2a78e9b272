"""torchrun with 2 gloo processes on CPU: DDP training, data- and grid-parallel SAE
training, and capture equal their single-process counterparts; relaunches resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from hierlens.models import ActivationStore, build_transformer
from hierlens.models.run_load import latest_valid_checkpoint

from . import worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
WORKER = Path(worker.__file__)
# The key bias of attention cannot change any output (softmax is shift-invariant), so its
# gradient is rounding noise which Adam scales to full-size steps: its values differ
# between any two summation orders and are left out of weight comparisons.
NOISE_ONLY = ("attn.k.bias", "attn.b_K")


def launch(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node NPROC ARGS...`` (a script or ``-m MODULE``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    proc = launch(str(WORKER), *args, nproc=nproc)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def processes_naming(text: str) -> list[int]:
    """Pids of the live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue  # gone meanwhile
            if text in cmdline:
                found.append(int(entry.name))
    return found


def train_steps(run_dir) -> list[int]:
    records = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["split"] == "train"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun")
    torchrun("all", str(out))
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    run = tmp_path_factory.mktemp("single") / "run"
    worker.do_train(str(run))
    return run


def weights(run_dir):
    return latest_valid_checkpoint(run_dir).model_state


def max_diff(a, b, skip=NOISE_ONLY):
    assert a.keys() == b.keys()
    keys = [k for k in a if not any(s in k for s in skip)]
    assert keys
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in keys)


def logits(run_dir):
    model = build_transformer(worker.MODEL, device="cpu")
    model.load_state_dict(weights(run_dir))
    ex = worker.TASK.sample(8, "test_id", 5)
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(e.tokens) for e in ex], True)
    with torch.no_grad():
        return model(tokens)


def test_ddp_equals_single_process(launched, single):
    assert latest_valid_checkpoint(launched / "ddp").step == 20
    assert max_diff(weights(launched / "ddp"), weights(single)) <= 1e-5
    assert float((logits(launched / "ddp") - logits(single)).abs().max()) <= 1e-5


def test_metrics_written_once(launched, single):
    lines = (launched / "ddp" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys))
    assert [r["step"] for r in records if r["split"] == "train"] == [5, 10, 15, 20]
    ref = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in ref] == keys
    for a, b in zip(records, ref):  # sharded evaluation reduces to the whole-set metrics
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)


def test_killed_ranks_relaunch_resumes(launched, tmp_path):
    run = tmp_path / "killed"
    proc = launch(str(WORKER), "train-kill", str(run))
    assert proc.returncode != 0  # both ranks died of SIGKILL right after the step-10 checkpoint
    assert "SIGKILL" in proc.stdout + proc.stderr
    pids = [int(p.read_text()) for p in sorted(Path(f"{run}.pids").iterdir())]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert processes_naming(str(run)) == []  # no worker or agent left behind
    assert latest_valid_checkpoint(run).step == 10
    assert train_steps(run) == [5, 10]

    torchrun("train", str(run))
    assert latest_valid_checkpoint(run).step == 20
    assert max_diff(weights(run), weights(launched / "ddp")) <= 1e-5
    assert train_steps(run) == [5, 10, 15, 20]
    assert processes_naming(str(run)) == []


def test_cli_train_and_fit_sae_under_torchrun(tmp_path):
    run = tmp_path / "cli"
    train = ["train", "--task", "dyck", "--task-param", "max_depth=4", "--task-param"]
    train += ["max_length=12", "--d-model", "16", "--n-layers", "1", "--n-heads", "2"]
    train += ["--d-mlp", "32", "--seed", "1", "--steps", "20", "--batch-size", "8"]
    train += ["--lr", "3e-3", "--warmup-steps", "5", "--log-every", "5", "--eval-every", "10"]
    train += ["--eval-n", "16", "--checkpoint-every", "10", "--train-pool", "200"]
    train += ["--device", "cpu", "--no-progress", "--run-dir", str(run)]
    proc = launch("-m", "hierlens.analysis.cli", *train)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
        "step_0000010",
        "step_0000020",
    ]
    assert train_steps(run) == [5, 10, 15, 20]  # one line per logged step, not one per rank
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys))

    fit = ["fit-sae", str(run), "--hook", "blocks.0.hook_resid_post", "--widths", "16,32"]
    fit += [
        "--ks",
        "4",
        "--steps",
        "10",
        "--batch-size",
        "32",
        "--n-sequences",
        "16",
        "--device",
        "cpu",
    ]
    proc = launch("-m", "hierlens.analysis.cli", *fit, "--no-progress", "--distribute", "saes")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = sorted(p.name for p in (run / "saes").iterdir() if (p / "cfg.json").is_file())
    assert saved == ["topk_w16_k4", "topk_w32_k4"]
    table = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert sorted(r["name"] for r in table) == saved  # printed once, by rank 0
    assert processes_naming(str(run)) == []


def test_resume_two_rank_run_with_one_process(launched, single):
    run = launched / "stopped1"
    assert latest_valid_checkpoint(run).step == 10
    worker.do_train(str(run))
    assert latest_valid_checkpoint(run).step == 20
    assert max_diff(weights(run), weights(single)) <= 1e-5


def test_sae_data_parallel_equals_single_process(launched, tmp_path):
    from hierlens.sae import train_saes

    x, saes = worker.sae_setup()
    train_saes(saes, x, config=worker.sae_config(), progress=False)
    got = torch.load(launched / "sae_data" / "saes.pt")
    for sae, state in zip(saes, got):
        for k, v in sae.state_dict().items():
            assert float((v - state[k]).abs().max()) <= 1e-5, k
    assert (launched / "sae_data" / "ckpt" / "latest.json").exists()


def test_sae_grid_parallel_equals_each_alone(launched):
    from hierlens.sae import train_saes

    x, saes = worker.sae_setup()
    got = torch.load(launched / "sae_saes" / "saes.pt")
    for sae, state in zip(saes, got):
        train_saes([sae], x, config=worker.sae_config(), progress=False)
        for k, v in sae.state_dict().items():
            assert float((v - state[k]).abs().max()) <= 1e-5, k
    parts = sorted(p.name for p in (launched / "sae_saes" / "ckpt").iterdir())
    assert parts == ["part-0-of-2", "part-1-of-2"]


def test_capture_equals_single_process(launched, tmp_path):
    worker.do_capture(str(tmp_path / "one"))
    one = ActivationStore.open(tmp_path / "one")
    two = ActivationStore.open(launched / "capture")
    assert len(two.manifest["shards"]) > 2  # shards really were dealt out to both ranks
    assert [s["seq_start"] for s in two.manifest["shards"]] == [
        s["seq_start"] for s in one.manifest["shards"]
    ]
    assert one.hooks == two.hooks
    for hook in one.hooks:
        assert torch.equal(one[hook], two[hook])
    for key in ("sequence", "position", "token"):
        assert torch.equal(one.index[key], two.index[key])
    assert one.labels.keys() == two.labels.keys() and one.labels
    for key in one.labels:
        assert torch.equal(one.labels[key], two.labels[key])
    assert not (launched / "capture" / "parts").exists()
