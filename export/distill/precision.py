"""Training precision: fp32, or bf16 autocast where the hardware computes bf16 natively.

Under ``torch.autocast`` matrix products run in bfloat16 while the weights, the optimizer state, the losses
and the cached teacher targets stay float32 (mixed precision). On a CPU with AVX512-BF16 or AMX, and on a
GPU with bf16, that makes a distillation step faster, so a time budget buys more steps; where bf16 would be
emulated (older CPUs) ``auto`` keeps fp32. Evaluation is always fp32.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from mbert_edge_export.errors import DistillError

if TYPE_CHECKING:
    from collections.abc import Iterator

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve(precision: str, device: str) -> str:
    """``fp32`` or ``bf16`` for a run on ``device``: ``auto`` picks bf16 only where it is native."""
    if precision not in PRECISIONS:
        raise DistillError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: str) -> Iterator[None]:
    """Run the enclosed forward passes in ``precision`` (``fp32``: unchanged)."""
    if precision != "bf16":
        yield
        return
    import torch

    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
        yield
