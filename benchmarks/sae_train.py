"""Benchmark of hierlens.sae training (ratios measured in one run, on one device).

(a) fused sweep: 8 TopK SAEs trained by ``train_saes`` (one stack, batched matmuls, each
    batch read once) vs the same 8 trained one after another by a plain single-SAE loop
    (``x @ W_enc``, top-k, ``codes @ W_dec``, Adam) on the same batches;
(b) arithmetic reference: the time of one TopK training step vs the time of the five dense
    matrix products of a dense step (encoder and decoder forward, the decoder-weight, code
    and encoder-weight gradients), measured on the same shapes in the same run; a step on
    the sparse kernels (``16 k <= d_sae`` on the CPU) does only the first of them densely,
    so it can take less than this reference;
(c) MP-SAE memory vs k: bytes autograd keeps for the backward pass (and peak CUDA memory on
    a GPU) for hierlens' MP-SAE, which picks atoms without gradients and recomputes values
    from gathered atoms, vs a direct implementation that updates dense ``(B, d_sae)`` codes
    at every pursuit step.

Usage: ``python benchmarks/sae_train.py [--quick] [--device cpu|cuda] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hierlens.core.device import resolve_device
from hierlens.sae import MatchingPursuitSAE, TopKSAE, train_saes

SIZES = {
    True: dict(
        d_in=64, d_sae=512, k=16, batch=256, steps=20, n_saes=8, mp_d_sae=4096, mp_batch=256
    ),
    False: dict(
        d_in=256, d_sae=4096, k=32, batch=1024, steps=40, n_saes=8, mp_d_sae=16384, mp_batch=1024
    ),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _plain_train(sae: TopKSAE, data: torch.Tensor, steps: int, batch: int, lr: float) -> None:
    """What one writes for a single TopK SAE: plain matmuls, Adam, renormalised decoder."""
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    opt = torch.optim.Adam(params, lr=lr)
    k = sae.cfg.k
    for step in range(steps):
        x = data[step * batch : (step + 1) * batch]
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        vals, idx = pre.topk(k, dim=-1)
        codes = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        recon = codes @ sae.W_dec + sae.b_dec
        loss = (recon - x).pow(2).sum(-1).mean()
        loss.backward()
        with torch.no_grad():
            g = sae.W_dec.grad
            g -= (g * sae.W_dec).sum(-1, keepdim=True) * sae.W_dec
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True)


def bench_fused(size: dict, device: torch.device, reps: int) -> dict:
    steps, batch = size["steps"], size["batch"]
    data = torch.randn(steps * batch, size["d_in"], generator=torch.Generator().manual_seed(0)).to(
        device
    )

    def make():
        return [
            TopKSAE(size["d_in"], size["d_sae"], k=size["k"], seed=i, device=device)
            for i in range(size["n_saes"])
        ]

    kw = dict(
        steps=steps,
        batch_size=batch,
        lr=1e-3,
        shuffle=False,
        progress=False,
        log_every=steps,
        device=device,
    )
    train_saes(make(), data, **{**kw, "steps": 2})  # warm-up
    _plain_train(make()[0], data, 2, batch, 1e-3)
    fused_t, seq_t = [], []
    for _ in range(reps):
        saes = make()
        _sync(device)
        t0 = time.perf_counter()
        train_saes(saes, data, **kw)
        _sync(device)
        fused_t.append(time.perf_counter() - t0)
        saes = make()
        _sync(device)
        t0 = time.perf_counter()
        for s in saes:
            _plain_train(s, data, steps, batch, 1e-3)
        _sync(device)
        seq_t.append(time.perf_counter() - t0)
    f, s = statistics.median(fused_t), statistics.median(seq_t)
    return {"fused_s": f, "sequential_s": s, "speedup": s / f}


def bench_arithmetic(size: dict, device: torch.device, reps: int) -> dict:
    d_in, d_sae, B, steps = size["d_in"], size["d_sae"], size["batch"], size["steps"]
    data = torch.randn(steps * B, d_in, generator=torch.Generator().manual_seed(1)).to(device)
    sae = [TopKSAE(d_in, d_sae, k=size["k"], device=device)]
    kw = dict(
        steps=steps, batch_size=B, progress=False, log_every=steps, shuffle=False, device=device
    )
    train_saes(sae, data, **{**kw, "steps": 2})
    step_t = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        train_saes(sae, data, **kw)
        _sync(device)
        step_t.append((time.perf_counter() - t0) / steps)
    x = torch.randn(B, d_in, device=device)
    W_enc = torch.randn(d_in, d_sae, device=device)
    W_dec = torch.randn(d_sae, d_in, device=device)
    codes = torch.randn(B, d_sae, device=device)
    g = torch.randn(B, d_in, device=device)
    gpre = torch.randn(B, d_sae, device=device)

    def matmuls():
        x @ W_enc  # encoder forward
        codes @ W_dec  # decoder forward
        codes.T @ g  # decoder weight gradient
        g @ W_dec.T  # code gradient
        x.T @ gpre  # encoder weight gradient

    matmuls()
    mm_t = []
    for _ in range(reps * 5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            matmuls()
        _sync(device)
        mm_t.append((time.perf_counter() - t0) / 10)
    step, mm = statistics.median(step_t), statistics.median(mm_t)
    flops = 2 * 5 * B * d_in * d_sae
    return {
        "step_ms": 1e3 * step,
        "matmuls_ms": 1e3 * mm,
        "step_over_matmuls": step / mm,
        "matmul_gflops": flops / mm / 1e9,
    }


def _dense_mp_loss(W: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """Direct MP with dense per-step code updates kept in the autograd graph."""
    r = x
    codes = torch.zeros(x.shape[0], W.shape[0], device=x.device)
    for _ in range(k):
        scores = r @ W.T
        j = scores.argmax(-1, keepdim=True)
        z = torch.zeros_like(scores).scatter(-1, j, torch.relu(scores.gather(-1, j)))
        codes = codes + z
        r = r - z @ W
    return (codes @ W - x).pow(2).sum(-1).mean()


def _measure(fn, device: torch.device) -> tuple[int, int | None]:
    seen, saved = set(), 0

    def pack(t):
        nonlocal saved
        st = t.untyped_storage()
        key = (st.data_ptr(), st.nbytes())
        if key not in seen:
            seen.add(key)
            saved += st.nbytes()
        return t

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn().backward()
    peak = torch.cuda.max_memory_allocated() - base if device.type == "cuda" else None
    return saved, peak


def bench_mp_memory(size: dict, device: torch.device, ks=(4, 8, 16, 32, 64)) -> list[dict]:
    d_in, d_sae, B = size["d_in"], size["mp_d_sae"], size["mp_batch"]
    x = torch.randn(B, d_in, generator=torch.Generator().manual_seed(2)).to(device)
    rows = []
    for k in ks:
        sae = MatchingPursuitSAE(d_in, d_sae, k=k, device=device)
        ours, ours_peak = _measure(lambda sae=sae: sae(x).loss, device)
        W = sae.W_dec.detach().clone().requires_grad_(True)
        dense, dense_peak = _measure(lambda W=W, k=k: _dense_mp_loss(W, x, k), device)
        rows.append(
            {
                "k": k,
                "saved_MB": ours / 2**20,
                "dense_saved_MB": dense / 2**20,
                "peak_MB": None if ours_peak is None else ours_peak / 2**20,
                "dense_peak_MB": None if dense_peak is None else dense_peak / 2**20,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 avoids spin-waits on a busy machine)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    size = SIZES[args.quick]
    reps = 1 if args.quick else 3
    torch.manual_seed(0)
    out = {
        "device": str(device),
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "sizes": size,
    }
    out["a_fused_vs_sequential"] = bench_fused(size, device, reps)
    out["b_step_vs_matmuls"] = bench_arithmetic(size, device, reps)
    out["c_mp_memory_vs_k"] = bench_mp_memory(size, device)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
