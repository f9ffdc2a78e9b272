"""Training throughput: hierlens' loop vs TransformerLens' own ``tools.training.train``.

Both train the same freshly built model (same initial weights) on the same Dyck training
pool, with the same batch size and number of optimizer steps, on the same device, in one
process, alternating runs so that machine noise hits both. Prints sequences/s and tokens/s of
each and the ratio (TransformerLens time / hierlens time).

    python benchmarks/train_loop.py            # full setting
    python benchmarks/train_loop.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import Dataset

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.tasks import pad_examples


class _TokenDataset(Dataset):
    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i]}


def run_hierlens(model_cfg, task, steps, batch_size, pool, device) -> float:
    model = build_transformer(model_cfg, device=device)
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=1e-3,
        warmup_steps=0,
        schedule="constant",
        weight_decay=0.0,
        grad_clip=None,
        log_every=50,
        eval_every=0,
        checkpoint_every=0,
        train_pool=pool,
        device=str(device),
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(model, task, cfg, tmp, progress=False)
        return time.perf_counter() - t0


def run_transformer_lens(model_cfg, task, steps, batch_size, pool, device) -> float:
    from transformer_lens.tools.training import TrainConfig as TLConfig
    from transformer_lens.tools.training import train as tl_train

    model = build_transformer(model_cfg, device=device)
    t0 = time.perf_counter()  # sampling the pool is part of both timings
    tokens = pad_examples(task.sample(pool, "train", 0), task.pad_id).tokens
    data = _TokenDataset(tokens[torch.randint(0, pool, (steps * batch_size,))])
    cfg = TLConfig(
        num_epochs=1,
        batch_size=batch_size,
        lr=1e-3,
        optimizer_name="AdamW",
        weight_decay=0.0,
        device=device,
        print_every=50,
        max_steps=steps - 1,
    )
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tl_train(model, cfg, data)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    steps, batch, pool = (30, 32, 500) if args.quick else (300, 64, 5000)
    task = get_task("dyck", n_types=2, max_depth=6, min_length=4, max_length=32)
    model_cfg = ModelConfig.for_task(task, d_model=128, n_layers=2, n_heads=4)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(run_hierlens(model_cfg, task, steps, batch, pool, args.device))
        theirs.append(run_transformer_lens(model_cfg, task, steps, batch, pool, args.device))
    t_ours, t_theirs = min(ours), min(theirs)
    seqs = steps * batch
    print(f"device={args.device} steps={steps} batch={batch} model=2x128 task=dyck(2,6,len<=32)")
    print(f"hierlens.train          : {t_ours:7.2f} s  {seqs / t_ours:9.1f} seq/s")
    print(f"transformer_lens train  : {t_theirs:7.2f} s  {seqs / t_theirs:9.1f} seq/s")
    print(f"speed-up (TL time / hierlens time): {t_theirs / t_ours:.2f}x")


if __name__ == "__main__":
    main()
