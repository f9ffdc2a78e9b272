"""Span scores of one group of sentences [Murty2023a], the step that
:func:`~hierlens.analysis.span_scores` repeats.

Sentences are grouped so that their isolated rows fill about one batch. Each group gets one
full-context run and its isolated runs (one row per span, or per span start in a causal model)
in chunks of the batch size, and each span's score is the similarity of its pooled word vectors
in the two runs (the method is described in :mod:`hierlens.analysis.trees.spans`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .forward_runner import ForwardRows
from .isolation import NativeRows
from .sentences import TokenizedSentence


def _word_matrix(sentences: Sequence[TokenizedSentence], n_words: int, seq: int) -> torch.Tensor:
    """``(S, n_words, seq)`` 0/1 matrix: token t belongs to word w."""
    mat = torch.zeros(len(sentences), n_words, seq, dtype=torch.float64)
    for row, sent in enumerate(sentences):
        for w, (a, b) in enumerate(sent.words):
            mat[row, w, a:b] = 1.0
    return mat


def _prefix(word_mat: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Prefix sums over words of the word vectors: ``(R, n_words + 1, d)`` in float64."""
    words = torch.bmm(word_mat, hidden.double())
    return torch.cat([words.new_zeros(words.shape[0], 1, words.shape[2]), words.cumsum(1)], 1)


def _similarity(full: torch.Tensor, iso: torch.Tensor, sim: str) -> torch.Tensor:
    if sim == "cosine":
        num = (full * iso).sum(-1)
        den = full.norm(dim=-1) * iso.norm(dim=-1)
        return num / den.clamp_min(1e-12)
    return -(full - iso).norm(dim=-1)


def _rows(sent: TokenizedSentence, causal: bool) -> list[tuple[int, int]]:
    """The isolated runs a sentence needs, as word spans ``(i, j)`` inclusive; in a causal model
    ``j`` is the last word (the row serves every span starting at ``i``). The span starting at
    word 0 (causal) or covering the whole sentence (bidirectional) equals the full run."""
    n = len(sent.words)
    if causal:
        return [(i, n - 1) for i in range(1, n)]
    return [(i, j) for i in range(n) for j in range(i, n) if (i, j) != (0, n - 1)]


def _group(
    sentences: Sequence[TokenizedSentence], batch_size: int, causal: bool
) -> list[list[int]]:
    """Consecutive sentences whose isolated rows fit (roughly) one batch."""
    groups: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for k, sent in enumerate(sentences):
        r = max(1, len(_rows(sent, causal)))
        if current and (rows + r > batch_size or len(current) >= batch_size):
            groups.append(current)
            current, rows = [], 0
        current.append(k)
        rows += r
    if current:
        groups.append(current)
    return groups


def _score_group(
    rows: NativeRows | ForwardRows,
    sentences: Sequence[TokenizedSentence],
    out: Sequence[torch.Tensor],
    *,
    causal: bool,
    pool: str,
    sim: str,
    batch_size: int,
) -> None:
    """Fill every sentence's score matrix ``out[k]`` (words x words) for one group of
    sentences: one full-context run of the group, then its isolated-span runs
    (:func:`_rows`) in chunks of ``batch_size`` rows."""
    dev = rows.device
    tokens, is_pad = _padded_tokens(sentences)
    tokens, is_pad = tokens.to(dev), is_pad.to(dev)
    seq = tokens.shape[1]
    n_max = max(len(s.words) for s in sentences)
    word_mat = _word_matrix(sentences, n_max, seq).to(dev)

    # Full-context run (the native backend keeps the blocks below mask_from for the rows).
    full = rows.full(tokens, is_pad)
    full_prefix = _prefix(word_mat, full)  # (S, n_max + 1, d)
    _score_full_run_spans(sentences, out, full_prefix, causal=causal, pool=pool, sim=sim)

    jobs = [(row, i, j) for row, s in enumerate(sentences) for i, j in _rows(s, causal)]
    word_start, word_end = _word_bounds(sentences, n_max)
    is_word = word_mat.sum(1) > 0  # (S, seq)
    positions = torch.arange(seq)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        src = torch.tensor([r for r, _, _ in chunk])
        first = torch.tensor([i for _, i, _ in chunk])
        last = torch.tensor([j for _, _, j in chunk])
        lo = word_start[src, first]  # first token of the span
        hi = word_end[src, last]  # one past its last token
        outside = (positions[None, :] < lo[:, None]) | (positions[None, :] >= hi[:, None])
        src_d = src.to(dev)
        keep = ~(outside.to(dev) & is_word[src_d]) & ~is_pad[src_d]
        if causal:
            iso = rows.isolated(src_d, keep)
            values = _causal_chunk_scores(
                iso, word_mat[src_d], full_prefix[src_d], first.to(dev), pool=pool, sim=sim
            )
            for k, (row, i, _) in enumerate(chunk):
                n = len(sentences[row].words)
                out[row][i, i:n] = values[k, i:n]
        else:
            # Only the span's summed word vectors are needed: pooled inside the runs.
            in_span = ~outside.to(dev) & is_word[src_d]
            iso_sums = rows.isolated(src_d, keep, pool_weight=in_span)
            values = _span_chunk_scores(
                iso_sums, full_prefix[src_d], first.to(dev), last.to(dev), pool=pool, sim=sim
            )
            # One write per sentence (the jobs are in sentence order).
            cuts = [0] + [k for k in range(1, len(chunk)) if chunk[k][0] != chunk[k - 1][0]]
            for a, b in zip(cuts, [*cuts[1:], len(chunk)]):
                out[chunk[a][0]][first[a:b], last[a:b]] = values[a:b]


def _padded_tokens(sentences: Sequence[TokenizedSentence]) -> tuple[torch.Tensor, torch.Tensor]:
    """The group's token ids right-padded with 0 to its longest sentence, ``(S, seq)``, and
    the padding mask (True at padding), on the CPU."""
    seq = max(len(s.tokens) for s in sentences)
    tokens = torch.zeros(len(sentences), seq, dtype=torch.long)
    is_pad = torch.ones(len(sentences), seq, dtype=torch.bool)
    for row, sent in enumerate(sentences):
        tokens[row, : len(sent.tokens)] = torch.tensor(sent.tokens)
        is_pad[row, : len(sent.tokens)] = False
    return tokens, is_pad


def _score_full_run_spans(
    sentences: Sequence[TokenizedSentence],
    out: Sequence[torch.Tensor],
    full_prefix: torch.Tensor,
    *,
    causal: bool,
    pool: str,
    sim: str,
) -> None:
    """Score the spans whose isolated run is the full run itself, from the full run's word
    prefix sums ``(S, n_max + 1, d)``: every span ``(0, j)`` in a causal model (row 0 of
    ``out[k]``), the whole sentence in a bidirectional one."""
    dev = full_prefix.device
    for row, sent in enumerate(sentences):
        n = len(sent.words)
        if causal:
            iso_sums = full_prefix[row, 1 : n + 1]  # spans (0, j)
            full_sums = iso_sums
            sizes = torch.arange(1, n + 1, device=dev, dtype=torch.float64)
            out[row][0, :n] = _pooled_sim(full_sums, iso_sums, sizes, pool, sim).float().cpu()
        else:
            whole = full_prefix[row, n : n + 1] - full_prefix[row, 0:1]
            size = torch.tensor([float(n)], device=dev, dtype=torch.float64)
            out[row][0, n - 1] = _pooled_sim(whole, whole, size, pool, sim).float().cpu()[0]


def _word_bounds(
    sentences: Sequence[TokenizedSentence], n_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, n_max)`` first token and one-past-last token of every word; a sentence shorter
    than ``n_max`` words repeats its last word's bounds."""
    word_start = torch.tensor(
        [[s.words[min(w, len(s.words) - 1)][0] for w in range(n_max)] for s in sentences]
    )
    word_end = torch.tensor(
        [[s.words[min(w, len(s.words) - 1)][1] for w in range(n_max)] for s in sentences]
    )
    return word_start, word_end


def _causal_chunk_scores(
    iso: torch.Tensor,
    word_mat: torch.Tensor,
    full_prefix: torch.Tensor,
    first: torch.Tensor,
    *,
    pool: str,
    sim: str,
) -> torch.Tensor:
    """The scores of one chunk of causal isolated runs: row ``r`` kept the tokens from word
    ``first[r]`` on, so it serves every span ``(first[r], j)``. ``iso`` holds the runs' token
    vectors ``(R, seq, d)``; ``word_mat`` and ``full_prefix`` are the rows' sentences' word
    matrices and full-run prefix sums. Returns ``(R, n_max)`` on the CPU, span ``(i, j)`` at
    ``[r, j]``."""
    dev = first.device
    iso_prefix = _prefix(word_mat, iso)
    # Spans (i, j) for every j >= i, from the one row of start i.
    base_iso = iso_prefix.gather(1, first[:, None, None].expand(-1, 1, iso_prefix.shape[2]))
    base_full = full_prefix.gather(1, first[:, None, None].expand(-1, 1, iso_prefix.shape[2]))
    iso_sums = iso_prefix[:, 1:] - base_iso  # (R, n_max, d): span (i, j) at index j
    full_sums = full_prefix[:, 1:] - base_full
    n_max = iso_sums.shape[1]
    sizes = (
        torch.arange(1, n_max + 1, device=dev, dtype=torch.float64)[None, :]
        - first[:, None].double()
    )
    values = _pooled_sim(full_sums, iso_sums, sizes.clamp_min(1.0), pool, sim).float()
    return values.cpu()


def _span_chunk_scores(
    iso_sums: torch.Tensor,
    full_prefix: torch.Tensor,
    first: torch.Tensor,
    last: torch.Tensor,
    *,
    pool: str,
    sim: str,
) -> torch.Tensor:
    """The scores of one chunk of bidirectional isolated runs, one span ``(first[r],
    last[r])`` per row: ``iso_sums`` ``(R, d)`` is the span's summed word vectors in its
    isolated run, ``full_prefix`` the rows' full-run prefix sums. Returns ``(R,)`` on the
    CPU."""
    idx = torch.arange(len(first), device=first.device)
    full_sums = full_prefix[idx, last + 1] - full_prefix[idx, first]
    sizes = (last - first + 1).double()
    return _pooled_sim(full_sums, iso_sums, sizes, pool, sim).float().cpu()


def _pooled_sim(
    full_sums: torch.Tensor, iso_sums: torch.Tensor, sizes: torch.Tensor, pool: str, sim: str
) -> torch.Tensor:
    if pool == "mean":
        full_sums = full_sums / sizes[..., None]
        iso_sums = iso_sums / sizes[..., None]
    return _similarity(full_sums, iso_sums, sim)
