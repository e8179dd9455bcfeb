"""Tiny models built from configs, for tests and demos that must run offline in seconds.

:func:`build_tiny_model` writes a directory that ``AutoModel.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load without a network: a randomly initialised model
(hidden size 32, 2 layers, 2 heads, seeded) and a WordPiece tokenizer trained on the
texts given, so the vocabulary covers the test data and no token is ``[UNK]`` by accident.

The decoder families are saved with their language-model heads (``LlamaForCausalLM``,
``T5ForConditionalGeneration``), so they train text-to-text; ``AutoModel`` still loads
their bare trunks. Their tokenizers mirror the real ones: Llama's adds only BOS
(``[CLS]``) in front, T5's only EOS (``[SEP]``) at the end; both name ``[SEP]`` their EOS
and ``[PAD]`` their padding, and T5 starts decoding from the pad token, as T5 does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

FAMILIES: tuple[str, ...] = ("bert", "llama", "t5")
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Words and characters of the default label texts (yes/no, numbers of regression bins),
# always in the vocabulary so text-to-text models can write every label.
LABEL_TEXTS: tuple[str, ...] = ("yes no true false", "0 1 2 3 4 5 6 7 8 9 . - 0.0 0.5 1.0 2.5")

HIDDEN = 32
LAYERS = 2
HEADS = 2
INTERMEDIATE = 64


def build_tiny_model(
    path: str | Path,
    *,
    family: str = "bert",
    texts: Iterable[str],
    vocab_size: int = 2000,
    seed: int = 0,
) -> Path:
    """Write a tiny ``family`` model and its tokenizer to ``path``; returns the path.

    ``llama`` uses one key/value head for its two query heads (grouped-query attention),
    so tests of the prefix injection cover that case too.

    Raises:
        ValueError: unknown family, or no texts to train the tokenizer on.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("need some texts to train the tokenizer on")
    texts += LABEL_TEXTS
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(texts, vocab_size=vocab_size, family=family)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    model: PreTrainedModel
    if family == "bert":
        model = BertModel(
            BertConfig(
                vocab_size=vocab,
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                intermediate_size=INTERMEDIATE,
                max_position_embeddings=512,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    elif family == "llama":
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                num_key_value_heads=1,
                intermediate_size=INTERMEDIATE,
                max_position_embeddings=512,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
            )
        )
    else:
        model = T5ForConditionalGeneration(
            T5Config(
                vocab_size=vocab,
                d_model=HIDDEN,
                d_kv=HIDDEN // HEADS,
                d_ff=INTERMEDIATE,
                num_layers=LAYERS,
                num_heads=HEADS,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.sep_token_id,
                decoder_start_token_id=tokenizer.pad_token_id,
            )
        )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _train_tokenizer(texts: list[str], *, vocab_size: int, family: str) -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer with the special-token templates of the family.

    bert: ``[CLS] a [SEP] b [SEP]`` with token types; llama: ``[CLS] a b``; t5: ``a b [SEP]``.
    """
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    specials = [("[CLS]", cls_id), ("[SEP]", sep_id)]
    if family == "bert":
        template = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=specials)
    elif family == "llama":
        template = processors.TemplateProcessing(single="[CLS] $A", pair="[CLS] $A $B", special_tokens=specials)
    else:
        template = processors.TemplateProcessing(single="$A [SEP]", pair="$A $B [SEP]", special_tokens=specials)
    tok.post_processor = template
    names = ["input_ids", "token_type_ids", "attention_mask"] if family == "bert" else ["input_ids", "attention_mask"]
    decoder_tokens = {} if family == "bert" else {"bos_token": "[CLS]", "eos_token": "[SEP]"}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=names,
        **decoder_tokens,
    )
