"""Injection of a key/value prefix into a transformers model's self-attention layers.

transformers (>= 5) looks every attention computation up by name in a registry
(``AttentionInterface``) and builds masks through a second one (``AttentionMaskInterface``).
We register one attention function under :data:`ATTN_IMPLEMENTATION` that prepends the
prefix keys/values of the calling module, widens the mask by ``P`` "attend" columns on
the left, folds a T5-style relative position bias (zero towards the prefix) into that mask,
and hands over to transformers' own SDPA function. The mask registry gets the
stock SDPA mask builder under the same name; without it transformers skips building the
padding mask and padded tokens would be attended.

The prefix is attached to modules only inside :meth:`PrefixAttention.apply` (a context
manager); outside it the function is plain SDPA, so the model computes exactly what it
did before. Token positions are not shifted: the prefix has no position of its own.

Where it applies: self-attention of encoders (BERT), of causal decoders (Llama: every token
sees the whole prefix, causality is kept among real tokens, grouped-query K/V heads), and
both stacks of encoder-decoders (T5: encoder self-attention and decoder self-attention,
with ``scaling=1.0`` and ``position_bias`` passed through). Cross-attention never gets one.

Caveat: this relies on the transformers 5.x attention interface (``module.layer_idx``,
query/key/value as ``[batch, heads, tokens, head_dim]``, a boolean ``[B, 1, T, S]`` mask
from ``sdpa_mask``). It was written against transformers 5.23.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from workers.prefix import AttentionSlot, PrefixKV

ATTN_IMPLEMENTATION = "searchsvc_prefix"

# Attribute set on an attention module while a prefix applies to it.
_PREFIX_ATTR = "_searchsvc_prefix_kv"
# Last name component (or class-name fragment) of cross-attention modules, which keep
# attending to the encoder only.
_CROSS_NAMES = ("EncDecAttention", "encoder_attn", "crossattention", "cross_attn")


def prefix_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA attention over ``[prefix keys; keys]`` when the module carries a prefix, else plain SDPA."""
    prefix: tuple[torch.Tensor, torch.Tensor] | None = getattr(module, _PREFIX_ATTR, None)
    if prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    prefix_key, prefix_value = prefix
    batch, kv_heads, _, head_dim = key.shape
    if prefix_key.shape[0] != kv_heads or prefix_key.shape[-1] != head_dim:
        raise ValueError(
            f"prefix of shape {tuple(prefix_key.shape)} does not fit keys with {kv_heads} heads of size {head_dim}"
        )
    length = prefix_key.shape[1]
    key = torch.cat([prefix_key.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([prefix_value.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)

    is_causal = kwargs.pop("is_causal", None)
    if is_causal is None:
        is_causal = bool(getattr(module, "is_causal", False))
    attention_mask = _widen_mask(attention_mask, length, query=query, key=key, is_causal=is_causal)
    position_bias = kwargs.pop("position_bias", None)
    if position_bias is not None:  # T5-style additive bias: zero bias towards the prefix
        attention_mask = _fold_bias(nn.functional.pad(position_bias, (length, 0)), attention_mask)
    return sdpa_attention_forward(module, query, key, value, attention_mask, is_causal=False, **kwargs)


def _fold_bias(bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One additive float mask from a position bias ``[1 or B, H, T, S]`` and a (widened) mask.

    Folding here, rather than passing ``position_bias`` on, keeps the computation exact on
    every transformers version whose SDPA function ignores an unknown ``position_bias``.
    """
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return torch.where(mask, bias, torch.finfo(bias.dtype).min)
    return bias + mask


def _widen_mask(
    mask: torch.Tensor | None, length: int, *, query: torch.Tensor, key: torch.Tensor, is_causal: bool
) -> torch.Tensor | None:
    """The mask over ``[prefix; keys]``: every query sees the prefix, the rest is unchanged."""
    if mask is None:
        q_len = query.shape[2]
        real = key.shape[2] - length
        if not is_causal or q_len == 1:
            return None  # no padding and no causality: every key is visible
        # Causal over the real tokens, queries aligned to the end of the keys (as with a cache).
        q_pos = torch.arange(q_len, device=key.device) + (real - q_len)
        k_pos = torch.arange(real, device=key.device)
        mask = (k_pos[None, :] <= q_pos[:, None])[None, None]
    if mask.dtype == torch.bool:
        visible = torch.ones(*mask.shape[:-1], length, dtype=torch.bool, device=mask.device)
    else:  # an additive float mask: 0 means "attend"
        visible = torch.zeros(*mask.shape[:-1], length, dtype=mask.dtype, device=mask.device)
    return torch.cat([visible, mask], dim=-1)


_registered = False


def register_prefix_attention() -> None:
    """Register the attention and mask functions under :data:`ATTN_IMPLEMENTATION` (idempotent)."""
    global _registered
    if not _registered:
        AttentionInterface.register(ATTN_IMPLEMENTATION, prefix_attention_forward)
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
        _registered = True


def find_attention_slots(model: nn.Module) -> list[tuple[nn.Module, AttentionSlot]]:
    """The self-attention modules of a model, in module order, with their K/V geometry.

    A self-attention module is an innermost module that has a ``layer_idx`` attribute
    and is not a cross-attention module; slot ``i`` is the i-th one found (for BERT and
    Llama this equals ``layer_idx``; T5's encoder and decoder reuse layer indices, so the
    order, not ``layer_idx``, identifies a slot).

    Raises:
        ValueError: no self-attention module found, or its geometry cannot be read.
    """
    candidates = [(name, m) for name, m in model.named_modules() if getattr(m, "layer_idx", None) is not None]
    names = [name for name, _ in candidates]
    slots: list[tuple[nn.Module, AttentionSlot]] = []
    for name, module in candidates:
        if any(other.startswith(name + ".") for other in names):
            continue  # a layer that holds an attention module; keep the innermost
        if _is_cross_attention(name, module):
            continue
        slots.append((module, _geometry(module)))
    if not slots:
        raise ValueError(f"found no self-attention module (with a layer_idx) in {type(model).__name__}")
    return slots


def _is_cross_attention(name: str, module: nn.Module) -> bool:
    last = name.rsplit(".", 1)[-1]
    cls = type(module).__name__
    return last in _CROSS_NAMES or "Cross" in cls or bool(getattr(module, "is_cross_attention", False))


def _geometry(module: nn.Module) -> AttentionSlot:
    """K/V heads and head size, from the module's attributes first, then its config."""
    config = getattr(module, "config", None)
    kv_heads = _first_int(config, ("num_key_value_heads",)) or _first_int(
        module, ("num_attention_heads", "n_heads", "num_heads")
    ) or _first_int(config, ("num_attention_heads", "num_heads"))
    head_dim = _first_int(module, ("head_dim", "attention_head_size", "key_value_proj_dim")) or _first_int(
        config, ("head_dim", "d_kv")
    )
    if head_dim is None:
        hidden = _first_int(config, ("hidden_size",))
        query_heads = _first_int(config, ("num_attention_heads",))
        head_dim = hidden // query_heads if hidden and query_heads else None
    if head_dim is None or kv_heads is None:
        raise ValueError(f"cannot read the key/value geometry of {type(module).__name__}")
    return AttentionSlot(kv_heads=kv_heads, head_dim=head_dim)


def _first_int(obj: object, names: Sequence[str]) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class PrefixAttention:
    """A model's self-attention slots, switched to the prefix-aware attention function.

    Build it once per model (before wrapping the model with PEFT, which does not mind),
    then wrap each forward in ``with prefix_attention.apply(generator()):``.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        register_prefix_attention()
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
        found = find_attention_slots(model)
        self.modules: list[nn.Module] = [module for module, _ in found]
        self.slots: list[AttentionSlot] = [slot for _, slot in found]

    @contextmanager
    def apply(self, prefix: PrefixKV) -> Iterator[None]:
        """Attach one ``(key, value)`` pair per slot for the duration of the block."""
        if len(prefix) != len(self.modules):
            raise ValueError(f"prefix has {len(prefix)} layers, the model {len(self.modules)} attention slots")
        for module, (pk, pv), slot in zip(self.modules, prefix, self.slots, strict=True):
            if pk.dim() != 3 or pk.shape[0] != slot.kv_heads or pk.shape[2] != slot.head_dim or pv.shape != pk.shape:
                raise ValueError(f"prefix keys {tuple(pk.shape)} / values {tuple(pv.shape)} do not fit slot {slot}")
            setattr(module, _PREFIX_ATTR, (pk, pv))
        try:
            yield
        finally:
            for module in self.modules:
                if hasattr(module, _PREFIX_ATTR):
                    delattr(module, _PREFIX_ATTR)
