"""Benchmark of the L0 frontier: every SAE architecture of the registry at every sparsity
(``FrontierSpec``: 6 architectures x 4 values = 24 SAEs) trained as one fused
``train_saes`` call, against one ``train_saes`` call per SAE on the same activations, in the
same run and on the same device. Each mode is timed after one untimed warm-up of the same
work (first calls pay one-off kernel set-up). Reports both wall times and their ratio.

Usage: ``python benchmarks/sae_frontier.py [--quick] [--device cpu|cuda] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hierlens.core.device import resolve_device
from hierlens.sae import FrontierSpec, SAETrainConfig, frontier_saes, train_frontier, train_saes

SIZES = {
    True: dict(d_in=32, d_sae=64, n=8192, steps=60, batch=256),
    False: dict(d_in=64, d_sae=256, n=32768, steps=100, batch=512),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(quick: bool, device: torch.device) -> dict:
    s = SIZES[quick]
    x = torch.randn(s["n"], s["d_in"], generator=torch.Generator().manual_seed(0)).to(device)
    spec = FrontierSpec(d_sae=s["d_sae"], ks=(4, 8, 16, 32), mp_iterations=(4, 8, 16, 32))
    cfg = SAETrainConfig(
        steps=s["steps"], batch_size=s["batch"], lr=1e-3, log_every=s["steps"], device=str(device)
    )

    def fused() -> None:
        train_frontier(spec, x, s["d_in"], config=cfg)

    def separate() -> None:
        saes, _ = frontier_saes(spec, s["d_in"], device=device)
        for sae in saes.values():
            train_saes([sae], x, config=cfg, progress=False)

    times = {}
    for name, fn in (("fused", fused), ("separate", separate)):
        fn()  # warm-up
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times[name] = time.perf_counter() - start
    n_saes = len(frontier_saes(spec, s["d_in"], device="cpu")[0])
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        **s,
        "n_saes": n_saes,
        "fused_s": round(times["fused"], 3),
        "separate_s": round(times["separate"], 3),
        "speedup_fused_vs_separate": round(times["separate"] / times["fused"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(run(args.quick, resolve_device(args.device)), indent=2))


if __name__ == "__main__":
    main()
