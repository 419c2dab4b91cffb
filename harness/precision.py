"""Which arithmetic a GPU really runs: the autocast dtype chosen by the card's capability, and TF32 for fp32.

bf16 only where the card computes it natively: torch.cuda.is_bf16_supported(including_emulation=False), true from
compute capability 8.0 (Ampere) on, and on ROCm (torch/cuda/__init__.py, torch 2.14). Its default,
including_emulation=True, also answers True on a T4, V100 or RTX 20xx, which only emulate bf16: autocast accepts
it, the matmuls run without tensor cores at about fp32's speed, and SDPA falls back to its math kernel, which keeps
the whole L x L attention matrix. Those cards get fp16 instead, with the GradScaler train.py already has; the
residual stream stays fp32 either way (clip.py's VisionTransformer.embed). The CPU runs fp32 unless asked.

TF32 (a 10-bit mantissa inside fp32 matmuls and convolutions, on tensor cores from sm80) is on for fp32 work unless
--tf32 off: torch 2.14 leaves matmuls in full fp32 by default, so `--precision fp32` would run at about an eighth of
an A100's TF32 rate. The authors' stack had it on: ViFi-CLIP's requirements.txt pins torch==1.11.0, whose defaults
allowed TF32 in cuBLAS matmuls and cuDNN convolutions (torch 1.12 turned the matmul default off,
pytorch/pytorch#76509; cuDNN's stayed on), so `--recipe paper` sets it on too.
"""
import torch

PRECISIONS = ("bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class PrecisionError(ValueError):
    """--precision bf16 on a card that only emulates it: one line naming what to use instead."""


def native_bf16():
    """Does this process's GPU compute bf16 in hardware? False without CUDA and on emulating cards."""
    if not torch.cuda.is_available():
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument: the rule it implements, compute capability 8.0 or newer
        return torch.version.hip is not None or torch.cuda.get_device_capability()[0] >= 8


def card():
    """The current GPU in words, e.g. "Tesla T4 (sm75)", for messages; "" without CUDA."""
    if not torch.cuda.is_available():
        return ""
    p = torch.cuda.get_device_properties(torch.cuda.current_device())
    return f"{p.name} (sm{p.major}{p.minor})"


def half():
    """The 16-bit autocast dtype this GPU runs natively: bf16 where it has it, else fp16 (with loss scaling)."""
    return "bf16" if native_bf16() else "fp16"


def choose(requested, cuda):
    """--precision as the run uses it. None: the card's 16-bit type on a GPU (half()), fp32 on the CPU. bf16 on a
    GPU that only emulates it is refused (PrecisionError): it would run slower than fp16 and hold more memory."""
    if requested is None:
        return half() if cuda else "fp32"
    if requested == "bf16" and cuda and not native_bf16():
        raise PrecisionError(f"--precision bf16: this GPU, {card()}, has no native bf16 (compute capability 8.0 "
                             "or newer has); use --precision fp16 (its default here, with loss scaling) or fp32")
    return requested


def tf32_supported():
    """Does this GPU have TF32 tensor cores? torch.cuda.is_tf32_supported: the cards with native bf16."""
    if not torch.cuda.is_available():
        return False
    return torch.cuda.is_tf32_supported() if hasattr(torch.cuda, "is_tf32_supported") else native_bf16()


def set_tf32(on):
    """Allow (or forbid) TF32 in fp32 matmuls (cuBLAS) and convolutions (cuDNN); a no-op for the CPU and for
    cards without TF32, where the flags change nothing. Autocast's bf16/fp16 ops are not affected."""
    torch.backends.cuda.matmul.allow_tf32 = bool(on)
    torch.backends.cudnn.allow_tf32 = bool(on)


def describe(precision, tf32, cuda):
    """One line for the log: what the arithmetic of this run is on this machine."""
    if not cuda:
        return f"precision {precision} (CPU; --tf32 {tf32} applies to GPUs only)"
    kind = {"bf16": "bf16 autocast, native on this card", "fp16": "fp16 autocast with loss scaling",
            "fp32": "fp32"}[precision]
    has = "has TF32" if tf32_supported() else "has no TF32 (needs sm80+)"
    return f"precision {precision}: {kind}; residual stream fp32; TF32 for fp32 matmuls/convolutions {tf32} " \
           f"({card()} {has})"
