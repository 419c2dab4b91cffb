"""Counting, per training step on a CPU, what would make a GPU step wait: host-device synchronisations and
collectives. Used by tests/test_gpu_path.py in-process and by tests/ddp_checks.py under torchrun.

A step is what train.py's loop body runs between two batches of its loader: counting is on from the moment the
loader hands a batch over until the loop asks for the next one (batches.loader is wrapped), so the loader's own
host work (decoding, the sampler) is not counted, and the epoch's end (evaluation, checkpoint) is not a step.

Synchronisations (a dispatch hook, TorchDispatchMode, plus the Python methods that read tensors without an aten op):
  reads        aten._local_scalar_dense (.item(), int(t), float(t), bool(t)), Tensor.tolist (Tensor.numpy is not
               counted: it only works on host tensors, a CUDA tensor refuses it, so it never waits for a GPU);
  data shapes  aten.nonzero, aten.masked_select, aten.unique*: their output size is only known after the GPU ran;
  copies       aten._to_copy / aten.copy_ that change device or name one, without non_blocking=True: on a CPU
               the device is the host, so every .to(device=...) that would block on a GPU is counted.
Collectives: torch.distributed's Python calls (all_reduce, broadcast, all_gather(_object), barrier, the buffer
broadcast DDP makes through _broadcast_coalesced), and DDP's gradient all-reduces, counted per bucket by a comm
hook registered on every DistributedDataParallel train.py builds.
"""
import os
import sys

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from video import batches

READS = {"aten._local_scalar_dense.default"}
DATA_SHAPES = ("aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique")


def optimiser_step_read():
    """Whether the read under way is AdamW's of its step counter (torch.optim.optimizer._get_value): unless fused
    or capturable, torch/optim/adam.py keeps those counters in host memory on a GPU too (device="cpu"), so the read
    never waits for the GPU; on this CPU it would be counted like any other."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "_get_value" and frame.f_code.co_filename.endswith(
                os.path.join("optim", "optimizer.py")):
            return True
        frame = frame.f_back
    return False


class SyncCounter(TorchDispatchMode):
    """Counts the synchronisations a GPU would make, by kind, while active."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def add(self, kind):
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in READS and not optimiser_step_read():
            self.add("read")
        elif name.startswith(DATA_SHAPES):
            self.add("data-dependent shape")
        elif name.startswith(("aten._to_copy", "aten.copy_")):
            src = args[1] if name.startswith("aten.copy_") else args[0]
            dst = args[0] if name.startswith("aten.copy_") else None
            moves = "device" in kwargs or (dst is not None and dst.device != src.device)
            if moves and not kwargs.get("non_blocking", args[2] if len(args) > 2 and name.startswith(
                    "aten.copy_") else False):
                self.add("blocking copy")
        return func(*args, **kwargs)


class StepCounts:
    """Install with .patch(monkeypatch-like setattr); .steps is a list of {kind: count} per training step."""

    PY_COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_object", "broadcast_object_list",
                      "barrier", "reduce_scatter", "_broadcast_coalesced")

    def __init__(self):
        self.steps, self.current, self.mode = [], None, None

    def add(self, kind):
        if self.current is not None:
            self.current[kind] = self.current.get(kind, 0) + 1

    def patch(self, setattr):
        original_loader = batches.loader

        def counted_loader(*args, **kwargs):
            sampler, loader = original_loader(*args, **kwargs)
            return sampler, Counted(loader, self)
        setattr(batches, "loader", counted_loader)
        for name in self.PY_COLLECTIVES:
            if hasattr(dist, name):
                setattr(dist, name, self.wrap(getattr(dist, name), name))
        counts = self

        class CountingDDP(torch.nn.parallel.DistributedDataParallel):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)

                def hook(state, bucket):  # DDP's default: the bucket's mean over ranks, by the unwrapped all_reduce
                    counts.add("ddp bucket all_reduce")
                    tensor = bucket.buffer().div_(dist.get_world_size())
                    work = dist.distributed_c10d.all_reduce(tensor, async_op=True)
                    return work.get_future().then(lambda fut: fut.value()[0])
                self.register_comm_hook(None, hook)
        setattr(torch.nn.parallel, "DistributedDataParallel", CountingDDP)
        tolist = torch.Tensor.tolist  # reads without an aten op; .item() is _local_scalar_dense, counted above

        def counted_tolist(t):
            self.add("tolist")
            return tolist(t)
        setattr(torch.Tensor, "tolist", counted_tolist)

    def wrap(self, fn, name):
        def counted(*args, **kwargs):
            self.add(name)
            return fn(*args, **kwargs)
        return counted


class Counted:
    """A loader whose batches are counted steps: counting runs while the loop body holds a batch."""

    def __init__(self, loader, counts):
        self.loader, self.counts = loader, counts

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            mode = SyncCounter()
            self.counts.current = {}
            with mode:
                yield batch
            for kind, n in mode.counts.items():
                self.counts.current[kind] = self.counts.current.get(kind, 0) + n
            self.counts.steps.append(self.counts.current)
            self.counts.current = None


def syncs(step):
    """The host-device synchronisations of one step's counts."""
    return sum(n for kind, n in step.items() if kind in ("read", "data-dependent shape", "blocking copy",
                                                          "tolist", "item"))
