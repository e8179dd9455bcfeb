"""Model FLOPs of a training step, and the matrix-multiply throughput this machine attains.

MFU (model FLOPs utilisation) = the model FLOPs a step does per second / the attainable peak,
both measured in the same run: :func:`count_flops` counts the first, :func:`matmul_peak` the second.

**The counting convention (model FLOPs).** The matrix products one step executes, 2 FLOPs per
multiply-add, counted by ``torch.utils.flop_counter.FlopCounterMode`` while the step runs:
``mm``/``addmm``/``bmm``/``baddbmm``/convolutions and attention. The backward pass counts what
autograd actually runs: a trained weight's gradient and its input's gradient (2x the forward
product), a frozen layer's input gradient only (1x), and nothing below the lowest trained
parameter. So a PEFT step costs less than the "6 x params x tokens" of full fine-tuning, and the
count says by how much. Attention's backward counts its 4 products (2x its forward), not the
flash kernels' recomputation of the scores (hardware FLOPs, not model FLOPs; torch's own formula
counts 5), and this module adds the fused CPU kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``), which torch's counter does not know: without
it every attention score on the CPU would count 0. Elementwise work (softmax, LayerNorm, GELU, the
optimizer's update) is not counted: it is memory-bound, and a small share of a step's FLOPs at
these widths. A causal mask is counted as the full square (as torch does).

**The peak.** :func:`matmul_peak`: the best of ``repeats`` timings of square ``torch.mm`` in the
given dtype on the given device, with the threads torch uses for training, i.e. what this machine
attains for the operation that dominates a step, not a datasheet figure. bf16 is measured only
where the hardware has it natively (:func:`native_bf16`: AVX512-BF16 or AMX on x86 CPUs, compute
capability >= 8 on CUDA); emulated bf16 would be no peak at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def _bmm(batch: int, m: int, k: int, n: int) -> int:
    return 2 * batch * m * k * n


def _sdpa_forward(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """Forward attention: scores ``q @ k^T`` and ``softmax @ v``."""
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _sdpa_backward(grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any, *args: Any,
                   **kwargs: Any) -> int:
    """Backward attention, model FLOPs: grad of the scores and of v (through ``softmax @ v``), grad of q and of k
    (through ``q @ k^T``): 4 products, twice the forward; the scores' recomputation is not counted."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return (_bmm(b * h, s_q, d_v, s_k) + _bmm(b * h, s_k, s_q, d_v)
            + _bmm(b * h, s_q, s_k, d_q) + _bmm(b * h, d_q, s_q, s_k))


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    """Formulas for the attention kernels: the CPU one torch does not count, and every backward as model FLOPs."""
    forward = ["_scaled_dot_product_flash_attention_for_cpu"]
    backward = ["_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_flash_attention_backward",
                "_scaled_dot_product_efficient_attention_backward", "_scaled_dot_product_cudnn_attention_backward"]
    mapping: dict[Any, Callable[..., int]] = {}
    for names, formula in ((forward, _sdpa_forward), (backward, _sdpa_backward)):
        for name in names:
            op = getattr(aten, name, None)  # an op this torch build lacks cannot run either
            if op is not None:
                mapping[op] = formula
    return mapping


def count_flops(run: Callable[[], Any]) -> int:
    """Model FLOPs of everything ``run()`` executes (see the module docstring for what counts)."""
    with FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        run()
    return int(counter.get_total_flops())


# ---- the peak ----------------------------------------------------------------------------------


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (CPU: the avx512_bf16 or amx_bf16 flag of
    /proc/cpuinfo; CUDA: compute capability 8 or more)."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, *, size: int, repeats: int, device: str = "cpu", per_repeat: int = 3) -> dict[str, Any]:
    """Attainable GFLOP/s of ``size x size`` matrix products in ``dtype``: the best of ``repeats`` timings of
    ``per_repeat`` back-to-back products (after one untimed). The best, not the mean: the peak is what the
    machine can do, and a slower repeat measured a neighbour. Every repeat's figure is kept."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=generator, device=device).to(dtype)
    b = torch.randn(size, size, generator=generator, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    _sync(device)
    flops = 2 * size**3 * per_repeat
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(per_repeat):
            torch.mm(a, b, out=out)
        _sync(device)
        samples.append(flops / (time.perf_counter() - started) / 1e9)
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "repeats": repeats, "per_repeat": per_repeat,
            "gflops": max(samples), "samples_gflops": samples}
