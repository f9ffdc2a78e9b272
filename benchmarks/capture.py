"""Benchmark of hierlens.models.capture (ratios measured in one run, on one device).

(a) overhead: capture of the last block's residual stream (all tokens, in memory) vs a bare
    forward pass with no hooks over the same batches;
(b) one middle-layer hook: capture (which stops after that layer) vs what users write by
    hand: TransformerLens ``run_with_cache(names_filter=hook)`` per batch, copy to the host,
    drop the padding, concatenate;
(c) resident memory (fresh subprocesses, RSS sampled every 5 ms): growth of the RSS during a
    capture of every residual stream for N tokens in memory vs N and 10 N tokens to disk.
    Capturing to disk must stay flat as tokens grow.

Usage: ``python benchmarks/capture.py [--quick] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch

from hierlens.core.device import resolve_device
from hierlens.models.capture import capture
from hierlens.models.transformer import ModelConfig, build_transformer

SIZES = {
    True: dict(d_model=64, n_layers=4, n_heads=4, seq_len=32, n_seq=64, batch_size=32, reps=5),
    False: dict(d_model=128, n_layers=6, n_heads=4, seq_len=64, n_seq=256, batch_size=32, reps=5),
}


def _model(size: dict, device: torch.device):
    cfg = ModelConfig(
        d_vocab=64,
        n_ctx=size["seq_len"],
        d_model=size["d_model"],
        n_layers=size["n_layers"],
        n_heads=size["n_heads"],
        seed=0,
    )
    return build_transformer(cfg, device=device).eval()


def _data(size: dict, n_seq: int) -> list[torch.Tensor]:
    """Variable-length sequences (half to full length), so padding is exercised."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(size["seq_len"] // 2, size["seq_len"] + 1, (n_seq,), generator=g)
    return [torch.randint(0, 64, (int(n),), generator=g) for n in lengths]


def _padded(seqs: list[torch.Tensor], batch_size: int):
    for a in range(0, len(seqs), batch_size):
        chunk = seqs[a : a + batch_size]
        t = max(len(s) for s in chunk)
        tokens = torch.zeros(len(chunk), t, dtype=torch.long)
        mask = torch.zeros(len(chunk), t, dtype=torch.long)
        for i, s in enumerate(chunk):
            tokens[i, : len(s)] = s
            mask[i, : len(s)] = 1
        yield tokens, mask


def _timed(fns: dict, device: torch.device, reps: int) -> dict[str, float]:
    """Median wall time of each function; repetitions are interleaved (round robin) so that
    load from other processes hits every contender alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_speed(size: dict, device: torch.device) -> dict:
    model = _model(size, device)
    seqs = _data(size, size["n_seq"])
    n_tokens = sum(len(s) for s in seqs)
    bs, reps = size["batch_size"], size["reps"]
    batches = list(_padded(seqs, bs))
    last = f"blocks.{size['n_layers'] - 1}.hook_resid_post"
    mid = f"blocks.{size['n_layers'] // 2 - 1}.hook_resid_post"
    ident = {"benchmark": "capture"}  # skip hashing the state dict: time the capture loop

    def bare():
        with torch.inference_mode():
            for tokens, mask in batches:
                model(tokens.to(device), attention_mask=mask.to(device))

    def cap(hook):
        return lambda: capture(
            model, seqs, hook, batch_size=bs, model_id=ident, progress=False, device=device
        )

    def by_hand():
        out = []
        with torch.inference_mode():
            for tokens, mask in batches:
                _, cache = model.run_with_cache(
                    tokens.to(device), attention_mask=mask.to(device), names_filter=mid
                )
                x = cache[mid].cpu()
                out.append(x[mask.bool()])
        return torch.cat(out)

    # the hand-written loop and capture agree (checked once, outside the timings)
    ref = by_hand()
    got = capture(model, seqs, mid, batch_size=bs, model_id=ident, progress=False)[mid]
    assert torch.allclose(ref, got, atol=1e-4), "capture and run_with_cache disagree"
    cap(last)()  # warm-up
    t = _timed({"bare": bare, "cap": cap(last), "mid": cap(mid), "hand": by_hand}, device, reps)
    t_bare, t_cap, t_mid, t_hand = t["bare"], t["cap"], t["mid"], t["hand"]
    return {
        "n_tokens": n_tokens,
        "bare_forward_s": t_bare,
        "capture_last_layer_s": t_cap,
        "overhead_ratio": t_cap / t_bare,
        "capture_mid_layer_s": t_mid,
        "run_with_cache_by_hand_s": t_hand,
        "speedup_vs_by_hand": t_hand / t_mid,
        "tokens_per_s_capture": n_tokens / t_cap,
    }


def _rss_mib() -> float:
    """Current resident set size (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _RssSampler(threading.Thread):
    """Samples the RSS every few milliseconds; ``peak`` is the highest sample."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_mib()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_mib())


def _child(mode: str, factor: int, quick: bool, device: str) -> None:
    """Subprocess body for (c): RSS right before the capture and its peak during the
    capture (the store is kept alive until the peak is read), every residual stream hooked."""
    size = SIZES[quick]
    dev = torch.device(device)
    model = _model(size, dev)
    seqs = _data(size, size["n_seq"] * factor)
    with torch.inference_mode():  # warm up kernels and allocator before the baseline
        model(seqs[0][None].to(dev))
    with tempfile.TemporaryDirectory() as tmp:
        base = _rss_mib()
        sampler = _RssSampler()
        sampler.start()
        store = capture(
            model,
            seqs,
            "blocks.*.hook_resid_post",
            batch_size=size["batch_size"],
            out_dir=tmp if mode == "disk" else None,
            shard_bytes=1 << 22,
            model_id={"benchmark": "rss"},
            progress=False,
        )
        peak = sampler.stop()
        n = len(store)
    print(json.dumps({"base_mib": base, "peak_mib": peak, "n_tokens": n}))


def bench_memory(quick: bool, device: torch.device) -> dict:
    def run(mode: str, factor: int) -> dict:
        cmd = [sys.executable, __file__, "--child", mode, str(factor), "--device", str(device)]
        cmd += ["--threads", str(torch.get_num_threads())]
        if quick:
            cmd.append("--quick")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    mem1, disk1, disk10 = run("memory", 1), run("disk", 1), run("disk", 10)
    # growth over the RSS right before capture: what the capture itself holds
    growth = {
        k: v["peak_mib"] - v["base_mib"]
        for k, v in {"memory_1x": mem1, "disk_1x": disk1, "disk_10x": disk10}.items()
    }
    return {
        "tokens_1x": disk1["n_tokens"],
        "tokens_10x": disk10["n_tokens"],
        "peak_rss_mib": {
            "memory_1x": mem1["peak_mib"],
            "disk_1x": disk1["peak_mib"],
            "disk_10x": disk10["peak_mib"],
        },
        "rss_growth_during_capture_mib": growth,
        "growth_ratio_disk_10x_over_disk_1x": growth["disk_10x"] / max(growth["disk_1x"], 1e-9),
        "growth_ratio_disk_10x_over_memory_1x": growth["disk_10x"] / max(growth["memory_1x"], 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable on shared CPUs)",
    )
    parser.add_argument("--part", choices=("all", "speed", "memory"), default="all")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FACTOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    if args.child:
        _child(args.child[0], int(args.child[1]), args.quick, str(device))
        return
    size = SIZES[args.quick]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch threads: {torch.get_num_threads()}; sizes: {size}")
    speed = memory = None
    if args.part in ("all", "speed"):
        speed = bench_speed(size, device)
        for k, v in speed.items():
            print(f"  {k:36s} {v:.4g}")
    if args.part in ("all", "memory"):
        memory = bench_memory(args.quick, device)
        for k, v in memory.items():
            print(f"  {k:36s} {v}")
    print(json.dumps({"device": name, "sizes": size, "speed": speed, "memory": memory}))


if __name__ == "__main__":
    main()
