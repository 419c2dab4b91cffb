"""How benchmark.py measures: time, memory, the FLOP ceiling, and whether this CPU computes bf16 natively.

  time      timed(): seconds of each call after untimed warm-up calls, the device synchronised around each.
  memory    StepProbe: the peak bytes of the tensors a stretch of work allocated and still held at once (every
            aten op's new outputs, freed when their storage dies), whatever the device; it also records each
            matmul, convolution and attention op the work ran, with its shapes and FLOPs. Bytes do not depend
            on the machine's load, so these figures repeat exactly on any machine with the same torch.
  ceiling   ceiling(): each recorded op run again alone on random inputs of the same shapes, strides and dtype,
            best of several runs; the highest GFLOP/s of them. A step's FLOPs divided by its time cannot exceed
            it: the step spends at least FLOPs_i / rate_i on each of its ops, so FLOPs / time <= max_i rate_i.
  bf16      native_bf16(): CUDA's own answer on a GPU; on an x86 CPU the avx512_bf16 or amx_bf16 flag (a CPU
            without them emulates bf16 matmuls, e.g. 0.93 against fp32's 55 GFLOP/s measured on a 2-core AVX2
            EPYC); elsewhere a short measured probe. BENCHMARK_NATIVE_BF16=0 or 1 overrides it (the tests force
            the no-bf16 path on a machine that has it).
"""
import json
import math
import os
import platform
import resource
import sys
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

ATTENTION_OPS = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
PRECISION_OF = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, warmup, steps, device):
    """Seconds of each of `steps` calls of fn after `warmup` untimed ones; the device is synchronised around
    each call, so the time is the work's, not the launch's."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


# ---------------------------------------------------------------------------------------------- bf16
def native_bf16(device):
    """(native, how it was decided): does this device compute bf16 matmuls in hardware?"""
    forced = os.environ.get("BENCHMARK_NATIVE_BF16")
    if forced in ("0", "1"):
        return forced == "1", f"BENCHMARK_NATIVE_BF16={forced}"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(), "torch.cuda.is_bf16_supported()"
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        flags = cpu_flags()
        found = sorted(flags & {"avx512_bf16", "amx_bf16"})
        if flags:
            return bool(found), f"CPU flags: {', '.join(found) or 'no avx512_bf16 or amx_bf16'}"
    return bf16_probe()


def cpu_flags():
    """The flags line of /proc/cpuinfo (Linux), as a set; empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith(("flags", "Features"))).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def bf16_probe(n=256):
    """A bf16 matmul at least half as fast as fp32 counts as native (emulation runs some 50x slower)."""
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(n, n, dtype=dtype)
        a @ a
        t0, reps = time.perf_counter(), 0
        while reps < 3 or time.perf_counter() - t0 < 0.05:
            a @ a
            reps += 1
        rates[dtype] = reps / (time.perf_counter() - t0)
    ratio = rates[torch.bfloat16] / rates[torch.float32]
    return ratio >= 0.5, f"measured: bf16 matmul at {ratio:.2f}x fp32's rate"


# ---------------------------------------------------------------------------------------------- memory + ops
def op_flops(name, args, out):
    """FLOPs of one aten op (2 per multiply-add), or 0 for ops that are not matmuls, convolutions or attention.
    Attention: q k^T and weights @ v, 4 L S d per head forward, twice that backward (bench/flops.py's convention)."""
    t = [a for a in args if isinstance(a, torch.Tensor)]
    if name == "mm":
        return 2 * t[0].shape[0] * t[0].shape[1] * t[1].shape[1]
    if name == "addmm":
        return 2 * t[1].shape[0] * t[1].shape[1] * t[2].shape[1]
    if name in ("bmm", "baddbmm"):
        a, b = t[-2:]
        return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if name == "convolution":
        return 2 * out.numel() * math.prod(t[1].shape[1:])
    if name == "convolution_backward":  # grad_out, input, weight; output_mask says which gradients are made
        mask = args[-1]
        return 2 * t[0].numel() * math.prod(t[2].shape[1:]) * (int(mask[0]) + int(mask[1]))
    base = name[:-len("_backward")] if name.endswith("_backward") else name
    if base in ATTENTION_OPS:
        q, k = (t[1], t[2]) if name.endswith("_backward") else (t[0], t[1])  # backward: grad_out comes first
        fwd = 4 * math.prod(q.shape[:-1]) * k.shape[-2] * q.shape[-1]      # (B, H, L, d) . (B, H, S, d)
        return 2 * fwd if name.endswith("_backward") else fwd
    return 0


def tensor_meta(x):
    return ("tensor", tuple(x.shape), tuple(x.stride()), x.dtype, x.device.type) if isinstance(x, torch.Tensor) else x


class StepProbe(TorchDispatchMode):
    """Within `with StepProbe() as p:`: p.peak, the most bytes of tensors allocated inside and alive at once
    (an op's output whose storage is none of its inputs' is a new allocation, released when its storage dies),
    and p.ops, the distinct matmul/convolution/attention calls {key: (op, args as shapes, flops, count)}."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.held, self.ops = {}, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                  if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if storage.data_ptr() not in inputs and key not in self.held:
                    n = storage.nbytes()
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    self.held[key] = weakref.ref(storage, lambda _, key=key, n=n: self.release(key, n))
        name = func._overloadpacket.__name__
        flops = op_flops(name, args, out if isinstance(out, torch.Tensor) else None)
        if flops:
            meta = tree_map(tensor_meta, (args, kwargs))
            key = (str(func), repr(meta))
            op, margs, f, count = self.ops.get(key, (func, meta, flops, 0))
            self.ops[key] = (op, margs, f, count + 1)
        return out

    def release(self, key, n):
        self.live -= n
        self.held.pop(key, None)


def materialise(x, device):
    """A recorded argument back as a tensor of its shape, strides and dtype (random values)."""
    if not (isinstance(x, tuple) and len(x) == 5 and x[0] == "tensor"):
        return x
    _, shape, stride, dtype, _ = x
    size = 1 + sum((s - 1) * st for s, st in zip(shape, stride)) if all(shape) else 0
    base = torch.empty(size, dtype=dtype, device=device)
    if dtype.is_floating_point:
        base.normal_(0, 0.1)
    else:
        base.zero_()
    return base.as_strided(shape, stride)


def ceiling(ops, device, min_s=0.02, cache=None):
    """The best GFLOP/s of the recorded ops, each run alone: {precision: dict(flops_per_s, op, shapes)}, the
    precision being the dtype of the op's first floating-point input. Each distinct op runs once untimed, then
    until 3 runs and min_s seconds; its best run counts. `cache`: a folder where each op's rate is kept, so the
    rows after the first (which share most shapes) run only the ops new to them."""
    path = os.path.join(cache, "ceiling-ops.json") if cache else None
    rates = {}
    if path and os.path.exists(path):
        with open(path) as f:
            rates = json.load(f)
    best = {}
    for func, meta, flops, _ in ops:
        key = f"{func} {meta!r} {device.type}"
        if key not in rates:
            rates[key] = measure_op(func, meta, flops, device, min_s)
        r = rates[key]
        if r["flops_per_s"] > best.get(r["precision"], {}).get("flops_per_s", 0):
            best[r["precision"]] = {k: v for k, v in r.items() if k != "precision"}
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(rates, f)
        os.replace(path + ".tmp", path)
    return best


def measure_op(func, meta, flops, device, min_s):
    """One recorded op on random inputs of its shapes, strides and dtype: dict(flops_per_s, precision, op,
    shapes)."""
    is_tensor = lambda x: isinstance(x, tuple) and len(x) == 5 and x[0] == "tensor"  # noqa: E731
    args, kwargs = tree_map(lambda x: materialise(x, device), meta, is_leaf=is_tensor)
    dtype = next(a.dtype for a in tree_flatten((args, kwargs))[0]
                 if isinstance(a, torch.Tensor) and a.dtype.is_floating_point)
    func(*args, **kwargs)
    times, t_all = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - t_all < min_s:
        sync(device)
        t0 = time.perf_counter()
        func(*args, **kwargs)
        sync(device)
        times.append(time.perf_counter() - t0)
    return dict(flops_per_s=flops / min(times), precision=PRECISION_OF.get(dtype, str(dtype)), op=str(func),
                shapes=[list(a[1]) for a in meta[0] if is_tensor(a)])


# ---------------------------------------------------------------------------------------------- the machine
def rss_peak():
    """Peak RSS of this process in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def machine():
    """What ran it: CPU model, threads, GPU, versions, bf16."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = dict(cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               python=platform.python_version(), torch=torch.__version__, platform=platform.platform())
    if torch.cuda.is_available():
        out.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   gpu_bytes=torch.cuda.get_device_properties(0).total_memory)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out["native_bf16"], out["native_bf16_by"] = native_bf16(device)
    return out


class OtherLoad:
    """The share of the CPUs that other processes used while the benchmark ran: all busy CPU time (/proc/stat)
    minus this process's and its children's. Timings on a machine others are using are not to be trusted."""

    def __init__(self):
        self.start = self.sample()

    @staticmethod
    def sample():
        try:
            with open("/proc/stat") as f:
                user, nice, system, idle, iowait, irq, softirq = map(int, f.readline().split()[1:8])
        except (OSError, ValueError):
            return None
        ours = sum(getattr(resource.getrusage(who), k) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for k in ("ru_utime", "ru_stime"))
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), ours, time.time()

    def share(self):
        end = self.sample()
        if self.start is None or end is None:
            return None
        busy, ours, wall = (e - s for e, s in zip(end, self.start))
        return max(0.0, (busy - ours) / (wall * (os.cpu_count() or 1)))
