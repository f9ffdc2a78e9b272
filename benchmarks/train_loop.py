"""Training throughput: hierlens' loop against TransformerLens' loop and a plain PyTorch model.

Four ways to train the same architecture on the same question-formation batches (the
structural-grokking setting of Murty et al. 2023: causal LM loss on every token, batch 64), in
one process, each run alternated with the others so that machine noise hits all of them:

- ``hierlens``: ``hierlens.models.train`` with its defaults (the fused forward of
  ``hierlens.models.fused``; on the CPU it skips the padding of ragged batches);
- ``hierlens padded``: the same with ``unpad=False`` (compute on padding, like the others);
- ``hierlens compiled``: ``TrainConfig(compile=True)`` (``torch.compile`` of the forward);
- ``TransformerLens``: TransformerLens' own ``tools.training.train`` on the same bridge model;
- ``plain PyTorch``: a nanoGPT-style model written here (one QKV ``nn.Linear``,
  ``scaled_dot_product_attention``, ``nn.LayerNorm``, GELU MLP) trained by a plain loop on
  the same padded batches with fused AdamW: what a hand-written model reaches on this
  hardware.

Reports the steady-state throughput of each (sequences, and real tokens, per second over the
steps after the first ``WARM``, so that one-off costs such as sampling the training pool or
compiling are not counted) and the ratios, at d_model 64 x 4 layers (the grokking setting)
and 256 x 4.

    python benchmarks/train_loop.py            # both sizes
    python benchmarks/train_loop.py --quick    # a few seconds, small size only
    python benchmarks/train_loop.py --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.batches import BatchSampler
from hierlens.models.tasks import IGNORE_INDEX, pad_examples

WARM = 10  # steps not timed


class _Clock:
    """Starts timing when ``tick`` has been called ``WARM`` times (once per step)."""

    def __init__(self) -> None:
        self.calls, self.start = 0, None

    def tick(self, *args) -> None:
        self.calls += 1
        if self.calls == WARM:
            self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


class _TokenDataset(Dataset):
    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i]}


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc_in, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc_in(self.ln2(x))))


class PlainGPT(nn.Module):
    """The reference: a pre-norm causal transformer written directly in PyTorch."""

    def __init__(self, vocab: int, n_ctx: int, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos.weight[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def _train_config(steps: int, batch: int, pool: int, device: str, **kw) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=1e-3,
        warmup_steps=0,
        schedule="constant",
        weight_decay=0.0,
        grad_clip=None,
        log_every=50,
        eval_every=0,
        checkpoint_every=0,
        train_pool=pool,
        loss_on="sequence",
        device=device,
        **kw,
    )


def run_hierlens(setup: dict, **kw) -> float:
    model = build_transformer(setup["model"], device=setup["device"])
    cfg = _train_config(setup["steps"], setup["batch"], setup["pool"], setup["device"], **kw)
    clock = _Clock()
    with tempfile.TemporaryDirectory() as tmp:
        train(model, setup["task"], cfg, tmp, progress=False, callback=clock.tick)
        return clock.seconds()


def run_transformer_lens(setup: dict) -> float:
    from transformer_lens.tools.training import TrainConfig as TLConfig
    from transformer_lens.tools.training import train as tl_train

    model = build_transformer(setup["model"], device=setup["device"])
    clock = _Clock()
    model.register_forward_pre_hook(lambda module, args: clock.tick())  # once per step
    task, pool = setup["task"], setup["pool"]
    tokens = pad_examples(task.sample(pool, "train", 0), task.pad_id).tokens
    data = _TokenDataset(tokens[torch.from_numpy(np.concatenate(setup["rows"]))])
    cfg = TLConfig(
        num_epochs=1,
        batch_size=setup["batch"],
        lr=1e-3,
        optimizer_name="AdamW",
        weight_decay=0.0,
        device=setup["device"],
        print_every=50,
        max_steps=setup["steps"] - 1,
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tl_train(model, cfg, data)
    return clock.seconds()


def run_plain(setup: dict) -> float:
    m = setup["model"]
    device = torch.device(setup["device"])
    torch.manual_seed(0)
    model = PlainGPT(m.d_vocab, m.n_ctx, m.d_model, m.n_layers, m.n_heads).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
    clock = _Clock()
    sampler = BatchSampler(setup["task"], setup["cfg"], device)
    for step in range(setup["steps"]):
        batch = sampler(step)
        logits = model(batch.tokens)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            batch.targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        clock.tick()
    float(loss.detach())  # wait for the device
    return clock.seconds()


def measure(d_model: int, steps: int, args: argparse.Namespace) -> None:
    task = get_task("question_formation")
    model = ModelConfig.for_task(task, d_model=d_model, n_layers=4, n_heads=4)
    batch, pool = 64, 5000
    cfg = _train_config(steps, batch, pool, args.device)
    sampler = BatchSampler(task, cfg, torch.device("cpu"))
    rows = [sampler.rows(s) for s in range(steps)]
    mean_length = float(np.mean([sampler.lengths[r].mean() for r in rows]))
    timed = (steps - WARM) * batch  # sequences in the timed steps
    setup = dict(
        task=task,
        model=model,
        steps=steps,
        batch=batch,
        pool=pool,
        rows=rows,
        device=args.device,
        cfg=cfg,
    )
    runs = {
        "hierlens": lambda: run_hierlens(setup),
        "hierlens padded": lambda: run_hierlens(setup, unpad=False),
        "hierlens compiled": lambda: run_hierlens(setup, compile=True),
        "TransformerLens": lambda: run_transformer_lens(setup),
        "plain PyTorch": lambda: run_plain(setup),
    }
    if args.no_compile:
        del runs["hierlens compiled"]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(fn())
    best = {name: min(t) for name, t in times.items()}
    tl, plain = best["TransformerLens"], best["plain PyTorch"]
    print(
        f"\nd_model={d_model} x 4 layers, question formation, batch {batch}, {steps} steps, "
        f"device={args.device}, threads={torch.get_num_threads()}"
    )
    print(f"{'':20s} {'seq/s':>8s} {'tokens/s':>9s} {'vs TL':>7s} {'vs plain':>9s}")
    for name, t in best.items():
        rate = timed / t
        print(f"{name:20s} {rate:8.1f} {rate * mean_length:9.0f} {tl / t:6.2f}x {plain / t:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name()}")
    if args.quick:
        args.no_compile = True
        measure(64, WARM + 10, args)
        return
    measure(64, 200, args)
    measure(256, 60, args)


if __name__ == "__main__":
    main()
