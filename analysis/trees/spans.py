"""Span contextual invariance scores, computed for all spans of many sentences in batched forwards.

Follows [Murty2023a], as used in [Murty2023b]. For a span of words ``i..j`` of a sentence, the
model is run twice:

- in the *full context*: the sentence as it is;
- *isolated*: the same token sequence at the same positions, with every attention key that
  belongs to a word outside ``i..j`` masked out for every query (tokens that are not words --
  ``<bos>``, ``<eos>``, task markers -- stay visible). With ``mask_from_layer=L`` the mask is
  applied only in the attention of blocks ``L`` and above (the "t-shaped" variant); blocks below
  ``L`` see the whole sentence.

The span's vector in each run is the pool (sum or mean over words; a word's vector is the sum
of its tokens' vectors) of the residual stream after block ``layer``
(``blocks.{layer}.hook_resid_post``) over the span's tokens, and the span's score is the
similarity of the two vectors: a span the model computes the same way whatever surrounds it
scores high. :func:`hierlens.analysis.trees.tree_projection` turns the scores into the
tree that best explains them.

Batching (the same numbers as one forward per span, see the tests): all isolated runs of a
group of sentences go through the blocks as one batch. A hidden token is a key of no query and
its output is never read, so each isolated row holds only the tokens it may see (at their
original positions) and the rows are right-padded together. Below ``mask_from_layer`` the
isolated runs equal the full run, so those blocks are run once per sentence and their output
is shared. In a causal model the outputs at positions up to the end of span ``(i, j)`` only
see keys up to there, so one isolated row that hides the words before word ``i`` serves every
span starting at ``i``: ``n - 1`` rows per sentence instead of ``n (n + 1) / 2`` (the spans
starting at word 0, like the whole sentence in a bidirectional model, equal the full run).

TL-native bridges run on fused-kernel blocks (:mod:`.block_runner`); any other bridge (e.g. a
BERT or GPT-2 booted from a local Hugging Face folder) and plain modules taking an attention
mask run the same packed rows through their own forward (:mod:`.forward_runner`), with the
tokens' original positions as ``position_ids`` when the forward takes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hierlens.core.device import model_device, resolve_device
from hierlens.core.validate import check_choice, check_int
from hierlens.models.model_inputs import is_bidirectional
from hierlens.models.tasks.base import Example

from .block_runner import BlockRunner
from .decode import tree_projection  # re-exported: scores -> tree lives beside span_scores
from .forward_runner import ForwardRows
from .isolation import NativeRows
from .sentences import WordSpan, prepare_sentences
from .span_groups import _group, _score_group

__all__ = ["span_scores", "span_scores_many", "tree_projection"]

_POOLS = ("sum", "mean")
_SIMS = ("cosine", "neg_l2")


def _resolve_layers(model: torch.nn.Module, layer: int, mask_from_layer: int) -> tuple[int, int]:
    n_layers = int(model.cfg.n_layers)
    for name, value in (("layer", layer), ("mask_from_layer", mask_from_layer)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if not -n_layers <= layer < n_layers:
        raise ValueError(
            f"layer={layer} is out of range for a model with {n_layers} layers: expected "
            f"{-n_layers} <= layer < {n_layers}"
        )
    layer = layer % n_layers
    if not 0 <= mask_from_layer <= layer:
        raise ValueError(
            f"mask_from_layer={mask_from_layer} must lie in [0, layer={layer}]: masking only "
            "above the read-out layer would leave every span in full context"
        )
    return layer, mask_from_layer


def span_scores(
    model: torch.nn.Module,
    sequences: Sequence[Example] | Sequence[Sequence[int]] | Sequence[torch.Tensor],
    *,
    layer: int | str = -1,
    word_spans: Sequence[Sequence[WordSpan]] | None = None,
    mask_from_layer: int = 0,
    pool: str = "sum",
    sim: str = "cosine",
    causal: bool | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[torch.Tensor]:
    """Span contextual invariance scores of every span of every sentence [Murty2023a].

    Parameters:
        model: one of
            - a TransformerBridge from :func:`hierlens.models.transformer.build_transformer`
              (TL-native source): its blocks run through the fused kernels of
              :class:`~hierlens.analysis.trees.block_runner.BlockRunner`;
            - any other TransformerBridge, e.g. ``TransformerBridge.boot_transformers(path)``
              on a local Hugging Face folder (BERT-style encoders, GPT-2-style causal LMs):
              the isolated rows run through the model's own forward with per-row attention
              masks (see :mod:`hierlens.analysis.trees.forward_runner`);
            - a plain ``nn.Module`` whose ``forward(input_ids, attention_mask=...)`` takes a
              ``(batch, seq)`` key mask (1 = visible) and, optionally, ``position_ids``.
        sequences: :class:`~hierlens.models.tasks.base.Example` objects (their
            ``word_positions`` are the words, unless ``word_spans`` is given) or token-id
            sequences / 1-D tensors (every token is a word unless ``word_spans`` says
            otherwise).
        layer: the block whose output (``blocks.{layer}.hook_resid_post``) is compared;
            negative values count from the end. A bridge also takes a hook name; a plain
            module needs the name of the submodule whose output ``(batch, seq, d)`` is read.
            Blocks after it are not run.
        word_spans: per sequence, the half-open token span ``(start, end)`` of each word, in
            order and disjoint (sub-word vectors are summed into the word). Tokens in no word
            (special tokens such as ``[CLS]``, ``[SEP]``, ``<bos>``) stay visible in every
            isolated run.
        mask_from_layer: first block whose attention is masked (0: all blocks; the
            "t-shaped" variant for larger values); must lie in ``[0, layer]``. Only TL-native
            bridges take a value other than 0.
        pool: "sum" or "mean" of the word vectors over the span.
        sim: "cosine" (cosine similarity) or "neg_l2" (minus the Euclidean distance).
        causal: whether each token attends only to earlier ones. ``None`` reads it from the
            model (a bridge's ``cfg.attention_dir``, a Hugging Face config); a plain module
            that does not say needs it.
        batch_size: isolated rows per batch; a batch runs as a few forward passes of
            rows of equal length (memory grows with ``batch_size`` times the sequence length).
        device: where to compute; ``None`` uses the device the model's parameters are on
            (the model is never moved; a different device is a ``ValueError``).
        progress: show a tqdm progress bar (one step per sentence).

    An isolated span keeps the absolute positions its tokens have in the sentence (positions
    do not restart at the span), for every kind of model.

    Returns:
        One float32 CPU tensor of shape ``(n, n)`` per sentence (``n`` words):
        ``scores[i, j]`` is the score of the span of words ``i..j`` inclusive (the half-open
        word span ``(i, j + 1)``) for ``i <= j``, and NaN below the diagonal.

    Raises:
        ValueError: before any forward pass, for an empty list, an empty sequence or one with
            no words, a sequence longer than the model's context, token ids outside the
            vocabulary, word spans outside the tokens, overlapping or out of order, ``layer``
            or ``mask_from_layer`` out of range, an unknown ``pool``/``sim``, or a model whose
            attention direction cannot be told without ``causal``.
        TypeError: for a model with no way to hide tokens (a plain module whose forward takes
            no ``attention_mask``), or a plain module with an int ``layer``.
    """
    _check_options(pool, sim, batch_size)
    rows, causal, sentences = _backend(
        model, sequences, word_spans, layer, mask_from_layer, causal, device
    )
    return _score_all([rows], [model], sentences, causal, pool, sim, batch_size, progress)[0]


def span_scores_many(
    models: Sequence[torch.nn.Module],
    sequences: Sequence[Example] | Sequence[Sequence[int]] | Sequence[torch.Tensor],
    *,
    layer: int | str = -1,
    word_spans: Sequence[Sequence[WordSpan]] | None = None,
    mask_from_layer: int = 0,
    pool: str = "sum",
    sim: str = "cosine",
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    progress: bool = True,
    stack: bool | None = None,
) -> list[list[torch.Tensor]]:
    """:func:`span_scores` of each of ``models`` on the same sentences (one list per model,
    the same numbers up to float rounding).

    Models of one shape on the fused block (TL-native bridges of one configuration: the
    checkpoints of a run, the seeds of a sweep) run as one stack: their parameters stacked
    on a leading model axis, one batched forward per group of rows for all of them, the
    isolated rows packed once. Any other set of models runs one after another. Arguments as
    :func:`span_scores` (``causal`` is read from the models). ``stack``: ``None`` stacks on
    CUDA only (on the CPU, where each model's rows are already large batches bound by their
    products, ``benchmarks/tree_projection.py --stack 8`` measures the stack at 0.86-1.17x
    of one model after another); ``True`` stacks wherever the models allow, ``False`` never.
    """
    models = list(models)
    if not models:
        raise ValueError("span_scores_many needs at least one model")
    kwargs = dict(
        layer=layer,
        word_spans=word_spans,
        mask_from_layer=mask_from_layer,
        pool=pool,
        sim=sim,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    runner = None
    if stack is None:
        stack = model_device(models[0], device).type == "cuda"
    if stack and len(models) > 1 and not isinstance(layer, str):
        runner = BlockRunner.stacked(models)
    if runner is None:
        return [span_scores(m, sequences, **kwargs) for m in models]
    _check_options(pool, sim, batch_size)
    first, causal, sentences = _backend(
        models[0], sequences, word_spans, layer, mask_from_layer, None, device
    )
    assert isinstance(first, NativeRows)
    runner.device = first.device
    rows = NativeRows(runner, layer=first.layer, mask_from=first.mask_from, causal=causal)
    views = _StackViews(rows, len(models))
    return _score_all(views.views, models, sentences, causal, pool, sim, batch_size, progress)


def _check_options(pool: str, sim: str, batch_size: int) -> None:
    if pool not in _POOLS:
        raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}")
    check_choice("sim", sim, _SIMS)
    check_int("batch_size", batch_size)


def _backend(model, sequences, word_spans, layer, mask_from_layer, causal, device):
    """The rows backend of ``model`` (checked and on its device), whether it is causal, and
    the checked sentences; every input error is raised here, before any forward pass."""
    try:
        runner = BlockRunner(model)
    except TypeError:
        runner = None
    rows: NativeRows | ForwardRows
    if runner is not None and not isinstance(layer, str):
        native_causal = not is_bidirectional(model)
        if causal is not None and causal != native_causal:
            raise ValueError(
                f"causal={causal} but the model's config says attention_dir="
                f"{model.cfg.attention_dir!r}"
            )
        causal = native_causal
        layer, mask_from = _resolve_layers(model, layer, mask_from_layer)
    else:
        if mask_from_layer != 0:
            raise ValueError(
                f"mask_from_layer={mask_from_layer!r}: only TL-native bridges (built with "
                "build_transformer) run the t-shaped variant; this model masks every layer "
                "(mask_from_layer=0)"
            )
        rows = ForwardRows(model, layer, causal=causal)
        causal = rows.causal
    sentences = prepare_sentences(model, sequences, word_spans)
    model_device = runner.device if runner is not None else rows.device
    if device is not None:
        wanted = resolve_device(device)
        if wanted.type != model_device.type or (
            wanted.index is not None and wanted.index != model_device.index
        ):
            raise ValueError(
                f"device={str(wanted)!r} but the model's parameters are on {model_device}; "
                "move the model first (model.to(device)) or pass device=None"
            )
        if wanted.index is not None:
            model_device = wanted
    if runner is not None and not isinstance(layer, str):
        runner.device = model_device
        rows = NativeRows(runner, layer=layer, mask_from=mask_from, causal=causal)
    else:
        rows.device = model_device
    return rows, causal, sentences


class _StackViews:
    """One rows backend per model of a stacked :class:`NativeRows`: the first model's calls
    run the stack and keep its outputs, the others' calls (the same calls in the same
    order, since they depend only on the sentences) read their model's slice."""

    def __init__(self, rows: NativeRows, n_models: int) -> None:
        self.rows = rows
        self.outputs: list[torch.Tensor] = []
        self.views = [_StackView(self, k) for k in range(n_models)]


class _StackView:
    def __init__(self, stack: _StackViews, index: int) -> None:
        self.stack, self.index, self.calls = stack, index, 0
        self.device = stack.rows.device

    def _output(self, compute) -> torch.Tensor:
        if self.index == 0:
            self.stack.outputs.append(compute())
        out = self.stack.outputs[self.calls][self.index]
        self.calls += 1
        return out

    def full(self, tokens: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        self.calls = 0  # a new group of sentences
        if self.index == 0:
            self.stack.outputs.clear()
        return self._output(lambda: self.stack.rows.full(tokens, is_pad))

    def isolated(self, src, keep, pool_weight=None) -> torch.Tensor:
        return self._output(lambda: self.stack.rows.isolated(src, keep, pool_weight))


def _score_all(backends, models, sentences, causal, pool, sim, batch_size, progress):
    """Every model's scores: ``backends[k]`` runs ``models[k]``; for each group of
    sentences the backends run in order."""
    results = [
        [torch.full((len(s.words), len(s.words)), float("nan")) for s in sentences]
        for _ in backends
    ]
    groups = _group(sentences, batch_size, causal)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sentences), desc="span scores", unit="sent")
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.inference_mode():
            for group in groups:
                for rows, out in zip(backends, results, strict=True):
                    _score_group(
                        rows,
                        [sentences[k] for k in group],
                        [out[k] for k in group],
                        causal=causal,
                        pool=pool,
                        sim=sim,
                        batch_size=batch_size,
                    )
                if bar is not None:
                    bar.update(len(group))
    finally:
        for m, mode in zip(models, was_training, strict=True):
            m.train(mode)
        if bar is not None:
            bar.close()
    return results
