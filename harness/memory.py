"""Fitting a training step into GPU memory: the micro-batch size, and the line train.py stops with when CUDA runs out.

train.py splits each optimiser step of --batch-size videos into micro-batches (train.accumulate_step: the same
gradients as one pass). --micro-batch auto picks the largest that fits the GPU's free memory, once, before the
first step, by a trial that holds what a real step holds; when a step still runs out of memory,
out_of_memory_advice names the options that use less for the same result. The measured memory per clip, and
which options fit which GPU: docs/performance.md.
"""
import math

import torch
import torch.distributed as dist

from harness import runs
from video import transforms


class OutOfMemory(runs.UsageError):
    """CUDA ran out of memory in a step: one line naming the options that use less, exit status 2."""


def choose_micro_batch(value, local, device, fits):
    """--micro-batch as a number of videos per process: `value` itself (at most the local batch), or for "auto"
    the largest of local, local/2, local/4, ... 1 for which fits(m) holds on a GPU (a trial forward and
    backward); on the CPU the whole local batch (memory is the machine's, and one pass is fastest)."""
    if value != "auto":
        return min(int(value), local)
    if device.type != "cuda":
        return local
    m = local
    while m > 1 and not fits(m):
        m = (m + 1) // 2
    return m


def worst_draws(n):
    """Photometric draws (n, PHOTOMETRIC_PARAMS) that run every operation on every clip, jitter and grayscale:
    the augmentation's largest temporaries, for the trial."""
    params = transforms.no_photometric().repeat(n, 1)
    params[:, 0], params[:, 9] = 1, 1
    return params


def trial_fits(step_fn, msta, optimizer, shape, tokens, autocast, device, local, mean=transforms.CLIP_MEAN,
               std=transforms.CLIP_STD, margin=0.9):
    """fits(m) for choose_micro_batch: whether a real step in micro-batches of m videos fits the memory that is
    FREE on the GPU now (mem_get_info()[0]: other processes and this one's weights already hold the rest).

    The trial holds what a step holds: the process's whole batch of `local` uint8 clips (shape (T, 3, H, W) each)
    on the device, the float batch the augmentation makes of it (photometric with every operation on, so its
    temporaries are in the peak), the class features with autograd, and one micro-batch's forward and backward.
    Added to its peak: AdamW's two fp32 moments of the adapters when the first step has not made them yet, and
    the previous step's float batch, still alive while the next one is augmented. Leaves no gradient and touches
    no adapter."""
    trainable = sum(p.numel() * 4 for p in msta.parameters() if p.requires_grad)
    floats = local * math.prod(shape) * 4
    extra = (0 if optimizer.state else 2 * trainable) + floats

    def fits(m):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        held, free = torch.cuda.memory_allocated(device), torch.cuda.mem_get_info(device)[0]
        try:
            clips = torch.zeros(local, *shape, dtype=torch.uint8, device=device)
            videos = transforms.photometric(clips, worst_draws(local), mean, std)          # (local, T, 3, H, W) float
            with autocast:
                text = msta.encode_text(tokens)
                logits = step_fn(videos[:m], text)
            logits.float().sum().backward()
            del clips, videos, text, logits
            ok = torch.cuda.max_memory_allocated(device) - held + extra < margin * free
        except torch.cuda.OutOfMemoryError:
            ok = False
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return ok
    return fits


def micro_batch(requested, local, frames, step_fn, model, optimizer, tokens, autocast, device, distributed, log):
    """The micro-batch size for `local` videos per process (--micro-batch: None, a number, or "auto"), found once
    before the first step; logged when it splits the batch. step_fn: the step's module without DDP
    (train.TrainStep), called as step_fn(videos, text_features)."""
    # The trials run on this process alone (no DDP: no collective); then every process takes the smallest found.
    resolution = model.clip.visual.input_resolution
    micro = choose_micro_batch(requested or local, local, device, trial_fits(
        step_fn, model, optimizer, (frames, 3, resolution, resolution), tokens, autocast, device, local,
        getattr(model.clip, "mean", transforms.CLIP_MEAN), getattr(model.clip, "std", transforms.CLIP_STD)))
    if distributed and requested == "auto":
        found = torch.tensor([micro], device=device)
        dist.all_reduce(found, op=dist.ReduceOp.MIN)
        micro = int(found)
    if micro < local:
        log(f"micro-batches: {micro} video(s) per pass, {-(-local // micro)} passes per optimiser step of "
            f"{local} video(s) per process (the gradients add up to the whole batch's)")
    return micro


def out_of_memory_advice(micro, local, precision, checkpointing, half="bf16"):
    """The one line train.py ends with when CUDA runs out of memory: the settings that ran out, and the options
    that use less memory for the same result (all of them keep the global batch). half: the 16-bit precision the
    card computes natively (precision.half(): bf16 from sm80, fp16 below), the one to advise instead of fp32."""
    options = []
    if micro > 1:
        options.append(f"--micro-batch {micro // 2} (or auto: the largest that fits)")
    if not checkpointing:
        options.append("--grad-checkpointing")
    if precision == "fp32":
        options.append(f"--precision {half}")
    ran = (f"micro-batches of {micro} of {local} videos per process, {precision}, "
           f"{'with' if checkpointing else 'no'} activation checkpointing")
    if not options:
        return (f"CUDA ran out of memory in the training step ({ran}): no option left that keeps the result; a GPU "
                "with more memory, or a smaller --rank or --blocks (which change the method), would fit")
    return (f"CUDA ran out of memory in the training step ({ran}); options that use less memory for the same "
            f"result: {', '.join(options)} (docs/performance.md, memory table)")
