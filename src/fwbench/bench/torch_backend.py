"""PyTorch side of a bench job: modes, precision, sync, inference, device memory.

The adapter (fwbench.training.torch_adapter) is the pipeline's loop over
pre-loaded tensors. A mode replaces only `adapter.model`: compile wraps it in
`torch.compile` (the optimizer keeps the same parameters). Its first call
compiles; that time is the job's first_step_s. Inductor keeps a cache on disk
(by default under /tmp), so a later process compiles faster: the hit and miss
counts of the first step are recorded (`compile_cache_note`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fwbench.bench.timing import no_sync
from fwbench.training.torch_adapter import predict_in_batches

BYTES_PER_MIB = 1 << 20
# cuBLAS needs this to run deterministically (the pipeline asks torch for determinism).
CUBLAS_WORKSPACE = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def has_gpu() -> bool:
    return torch.cuda.is_available()


def prepare_process() -> None:
    """Before CUDA starts: deterministic cuBLAS needs its workspace setting."""
    name, value = CUBLAS_WORKSPACE
    os.environ.setdefault(name, value)


def before_build(precision: str) -> str:
    """torch has no global dtype policy; bf16 autocast wraps the model after it is built."""
    return "bfloat16 autocast" if precision == "bf16" else "none"


class Autocast(nn.Module):
    """Runs the wrapped model under bf16 autocast; logits come back in fp32 for the loss."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner = inner
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def apply_mode(adapter, mode: str, precision: str) -> None:
    if precision == "bf16":
        adapter.model = Autocast(adapter.model, adapter.torch_device.type)
    if mode == "compile":
        adapter.model = torch.compile(adapter.model)


def sync() -> Callable[[], None]:
    return torch.cuda.synchronize if has_gpu() else no_sync


def predictor(adapter) -> Callable[[np.ndarray], np.ndarray]:
    """NumPy in, NumPy out, through the pipeline's inference function (evaluate uses it).

    One call is one batch; the result is copied to the host, so it has finished.
    """
    return lambda x: predict_in_batches(adapter.model, x, len(x), adapter.torch_device)


def reset_device_peak() -> None:
    if has_gpu():
        torch.cuda.reset_peak_memory_stats()


def device_peak_mb() -> float:
    if not has_gpu():
        return math.nan
    return torch.cuda.max_memory_allocated() / BYTES_PER_MIB


def compile_cache_note() -> str:
    """Inductor FX-graph cache hits and misses so far (a warm cache compiles much faster)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return ""
    inductor = counters.get("inductor", {})
    hits, misses = inductor.get("fxgraph_cache_hit", 0), inductor.get("fxgraph_cache_miss", 0)
    if not hits and not misses:
        return ""
    return f"fxgraph cache: {hits} hit, {misses} miss"
