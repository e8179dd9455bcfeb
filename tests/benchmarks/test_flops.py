"""The FLOP counter of the trainer benchmark (``benchmarks/_flops.py``) against FLOPs worked by hand.

A product of an (m x k) and a (k x n) matrix is 2·m·k·n FLOPs. Backward: a trained weight costs its
gradient and its input's gradient (2x the forward product), a frozen one only the input's gradient,
and nothing is spent below the lowest thing that needs a gradient.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("benchmarks_on_path")


def _two_layer_net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


# Batch 5: layer 1 is 5x4 @ 4x8 -> 2*5*4*8 = 320 FLOPs, layer 2 is 5x8 @ 8x3 -> 2*5*8*3 = 240.
FORWARD = 320 + 240


def test_forward_of_a_two_layer_net() -> None:
    from _flops import count_flops

    net, x = _two_layer_net(), torch.randn(5, 4)
    with torch.no_grad():
        assert count_flops(lambda: net(x)) == FORWARD


@pytest.mark.parametrize(("frozen", "backward"), [
    # both trained: both weight gradients (320 + 240) and layer 2's input gradient (240); the input needs none
    ((), 320 + 240 + 240),
    # layer 1 frozen: layer 2's weight gradient only (nothing below it needs a gradient)
    ((0,), 240),
    # layer 2 frozen: its input gradient (240), to reach layer 1's weight gradient (320)
    ((2,), 240 + 320),
])
def test_training_step_of_a_two_layer_net(frozen: tuple[int, ...], backward: int) -> None:
    from _flops import count_flops

    net, x = _two_layer_net(), torch.randn(5, 4)
    for index in frozen:
        net[index].requires_grad_(False)
    assert count_flops(lambda: net(x).sum().backward()) == FORWARD + backward


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_bert_attention_block(implementation: str) -> None:
    """BERT's attention block (query, key, value and output projections around multi-head attention), batch
    B=2, length L=5, width d=8, 2 heads of 4.

    Projections: 4 x 2·(B·L)·d·d = 4 x 2·10·8·8 = 5,120. Scores q·kᵀ per head: 2·L·(d/h)·L, over B·h = 4
    heads: 2·5·4·5·4 = 800; weights·v the same, 800. Forward 6,720. With the input needing a gradient and
    every weight trained, each product's backward is twice its forward: 13,440; the step 20,160. On the CPU
    "sdpa" runs the fused kernel torch's own counter does not count (it would give 5,120 and 15,360)."""
    from _flops import count_flops
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertAttention

    torch.manual_seed(0)
    config = BertConfig(hidden_size=8, num_attention_heads=2, intermediate_size=16, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, attn_implementation=implementation)
    block = BertAttention(config)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        assert count_flops(lambda: block(x)) == 6_720
    x.requires_grad_(True)
    assert count_flops(lambda: block(x)[0].sum().backward()) == 6_720 + 13_440


def test_attention_backward_is_model_flops_not_the_recomputation() -> None:
    """Fused attention alone, q, k, v of shape (1, 1, 4, 2): forward 2·4·2·4 + 2·4·4·2 = 128, backward 256
    (torch's formula for the flash kernels would add the scores' recomputation, 64)."""
    from _flops import count_flops

    q, k, v = (torch.randn(1, 1, 4, 2, requires_grad=True) for _ in range(3))
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()) == 128 + 256


def test_matmul_peak_is_the_best_repeat() -> None:
    from _flops import matmul_peak

    peak = matmul_peak(torch.float32, size=64, repeats=3)
    assert len(peak["samples_gflops"]) == 3 and peak["gflops"] == max(peak["samples_gflops"]) > 0
    assert (peak["dtype"], peak["size"]) == ("float32", 64)
