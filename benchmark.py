"""What MSTA costs, measured: against full fine-tuning, and against the machine's own matmul rate.

`python benchmark.py` builds a ViT-B/16-shaped CLIP with random weights in memory (clip.build_random: no download;
speed and memory do not depend on the values) and measures, on one device in one run so that ratios compare:
  1. ceiling    the dense matmul rate of large square matmuls, fp32 and bf16: the most the device can do
  2. MSTA       one training step exactly as train.py runs it (forward, L_CE + L_CC, backward, AdamW step) in the
                few-shot setting (r 128, blocks 8-12) and the paper's largest (r 256, blocks 1-12): median time,
                peak memory, and achieved FLOP/s as a fraction of (1)
  3. full FT    the same step with every CLIP weight trainable (frame-mean video feature, no adapters); and a
                plain ViT-B/16 forward+backward, the reference for what FLOP/s this device reaches on this model
     stream     the few-shot step under bf16 autocast on any device, with the residual stream in fp32 (clip.py's)
                and in bf16 (as before): what keeping lambda*A from being rounded away costs in time and memory
     ViCLIP     the few-shot MSTA step on a ViCLIP-B/16-shaped random model (viclip.py): one joint sequence of
                1 + 196 x 8 = 1,569 tokens per video instead of 8 per-frame sequences of 197, the paper's backbone
  4. ablation   the MSTA few-shot step with its four efficiency measures off, all together and one at a time
  5. inference  clips/s with the class text features cached, single view and UCF101's 5 x 3 views
  6. data       data.read_frames on the 8 test-sampled frames of a 10-s 340x256 30-fps video (written here with
                PyAV) vs decoding every frame; clips per CPU-second of one pinned single-threaded process (per
                DataLoader worker core) for (a) reading plus the whole training transform, (b) the same on the
                video's prepare.py copy, (c) (b) with the photometric half deferred to the training device, and
                the pictures each decodes (the loader targets: (c) >= 3x (a), (b) <= 1/4 of (a)'s pictures);
                then the loader as train.py builds it with all cores, beside the training step's clips/s on a GPU
The batch is random pixels (CPU: 2 videos, GPU: 32) x T = 8 frames; the text is UCF101's: 101 prompts "a video of
{class}." and 2 spatial + 2 temporal descriptions per class, their features computed once (as train.py does).
Precision as train.py: bf16 autocast on a GPU, fp32 on the CPU. Times are medians of --steps timed steps after
--warmup untimed ones (CPU 2 after 1, GPU 10 after 3), the device synchronised around each. Output: a table, the
project's target checks (PASS/MISS) and benchmark.json. `--quick` runs everything on the 4-layer random-tiny CLIP in
a few seconds (the tests' mode; its numbers mean nothing).

Each configuration of 2-5 runs in a fresh process (`benchmark.py --worker NAME`, one JSON line on stdout), so
its peak memory is its own. What "peak memory" is:
  GPU  torch.cuda.max_memory_allocated() over the warm-up and timed steps, reset just before them: weights,
       activations, gradients and optimiser state (the baseline before the first step is reported too);
  CPU  the process's peak RSS (getrusage ru_maxrss) minus its RSS after building the model, the text tokens and
       description features and the optimiser, just before the first step: what training adds on top of the
       resident weights (activations, gradients, AdamW state, allocator slack).

Shape legend: B videos, V views, T frames, N tokens per frame (1 + grid^2), D width, C classes, K descriptions
per class, E embedding, L text length, L' trimmed text length, r adapter rank.
"""
import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types

import torch

import adapters
import clip
import losses
import prepare
import viclip
from flops import mm, step_flops  # analytic counts, flops.py
from prompts import description_features

HERE = os.path.dirname(os.path.abspath(__file__))
# The efficiency measures of MSTA's step (item 4), by the name --worker off-NAME switches off.
MEASURES = {
    "prefix": "no-grad frozen prefix",    # off: autograd records the frozen blocks below the first adapter
    "cache": "text prefix cached",        # off: the text prefix is recomputed every step
    "trim": "text trimmed to L'",         # off: all 77 token positions, as OpenAI's encode_text runs them
    "desc": "description features cached",  # off: re-encoded by the frozen text branch every step
}
# Model sizes: the real one, and random-tiny for --quick (its 4 blocks stand in for ViT-B/16's 12).
SIZES = {
    "ViT-B/16": dict(clip="random-ViT-B/16", few_shot=(128, (8, 12)), largest=(256, (1, 12)),
                     video=(10, 340, 256), resolution=224,  # seconds, width, height of the data part's video
                     viclip="random-ViCLIP-B/16"),
    "tiny": dict(clip="random-tiny", few_shot=(16, (3, 4)), largest=(32, (1, 4)), video=(2, 68, 52),
                 resolution=32, viclip="random-ViCLIP-tiny"),
}
VIEWS = (5, 3)  # UCF101's test views, clips x crops (evaluate.VIEWS): 15 views per video
DESCRIPTIONS = 2  # of each kind (spatial, temporal) per class, train.py's --num-descriptions default
TARGETS = dict(time=0.5, memory=0.4, measures=1.5, sparse=3.0, utilisation=1.5)  # what check() asks
DATA_TARGETS = dict(speedup=3.0, decoded=0.25)  # loader: (c) / (a) clips/s at least, (b) / (a) pictures at most


# ---------------------------------------------------------------------------------------------- the models
def embed_text_full(model, tokens):
    """clip.CLIP.embed_text without the trim: all L = 77 positions, as OpenAI's reference encode_text runs them."""
    x = model.token_embedding(tokens).to(model.dtype) + model.positional_embedding.to(model.dtype)  # (C, L, D)
    return x, model.attn_mask


class AblationMSTA(adapters.MSTA):
    """adapters.MSTA whose efficiency measures can be switched off, for item 4. With none off, every call goes to
    adapters.MSTA's own code, so the measured step is the real one. ("cache" off is done by the step itself:
    it empties _text_cache before each forward.)"""

    def __init__(self, clip_model, off=(), **kwargs):
        super().__init__(clip_model, **kwargs)
        self.off = frozenset(off)
        if "trim" in self.off:
            # An instance attribute shadows CLIP.embed_text for this model only, so MSTA.text_prefix and
            # CLIP.encode_text (the frozen description branch) both run all 77 positions.
            clip_model.embed_text = types.MethodType(embed_text_full, clip_model)

    def encode_video(self, videos):
        """As MSTA.encode_video; with "prefix" off the frozen blocks below the first adapter run under autograd
        and the backward pass goes through them (input gradients only: their weights stay frozen). That is what
        an implementation pays when anything below the first adapter wants a gradient; a plain one whose
        prefix sees no trainable tensor records nothing there either (autograd skips it)."""
        if "prefix" not in self.off:
            return super().encode_video(videos)
        B, T = videos.shape[:2]
        visual, blocks = self.clip.visual, self.clip.visual.transformer.resblocks
        with torch.no_grad():
            z = visual.embed(videos.flatten(0, 1))  # (B, T, 3, H, W) -> (B*T, 3, H, W) -> (B*T, N, D)
        z.requires_grad_(True)  # a leaf wanting a gradient: autograd records every block above it
        for block in blocks[:self.start]:
            z = block(z)
        z = self.adapted_blocks(z, blocks, lambda j, u: self.adapters[str(j)].vision(u, T))  # (B*T, N, D)
        return visual.head(z).view(B, T, -1).mean(1)  # (B*T, E) -> (B, T, E) -> (B, E)

    def text_prefix(self, tokens):
        """As MSTA.text_prefix; with "prefix" and "cache" both off, the prefix runs each step under autograd."""
        if not {"prefix", "cache"} <= self.off:
            return super().text_prefix(tokens)
        x, mask = self.clip.embed_text(tokens)  # (C, L', D), (L', L')
        x.requires_grad_(True)
        for block in self.clip.transformer.resblocks[:self.start]:
            x = block(x, mask)
        return x, mask


@torch.no_grad()
def adapter_error(net, videos, autocast):
    """|d - d_fp32| / |d_fp32| for the adapters' contribution d = MSTA's video feature minus the frozen CLIP's
    frame mean (equal when A = 0), at initialisation, d under `autocast` and d_fp32 without it."""
    def contribution():
        B, T = videos.shape[:2]
        frozen = net.clip.visual(videos.flatten(0, 1)).view(B, T, -1).mean(1)  # (B*T, E) -> (B, E)
        return net.encode_video(videos).float() - frozen.float()
    exact = contribution()
    with autocast:
        approx = contribution()
    return ((approx - exact).norm() / exact.norm()).item()


def bf16_stream(model):
    """The vision stream in bf16 under autocast, as clip.py had it before keeping it fp32 (the text stream was
    fp32 already): embed's output cast to bf16, which every block then keeps. Only to measure what fp32 costs."""
    embed = model.visual.embed

    def bf16_embed(images):  # an instance attribute shadows the method; without autocast, fp32 as before
        x = embed(images)
        return x.to(torch.bfloat16) if torch.is_autocast_enabled(images.device.type) else x
    model.visual.embed = bf16_embed


class FullFineTune(torch.nn.Module):
    """Full fine-tuning, ViFi-CLIP style: every CLIP weight trainable, the video feature the frame mean, no
    adapters. It has MSTA's interface (encode_video, encode_text, logits, .clip), so one step serves both."""

    def __init__(self, clip_model):
        super().__init__()
        self.clip = clip_model.requires_grad_(True)

    def encode_video(self, videos):
        B, T = videos.shape[:2]
        return self.clip.encode_image(videos.flatten(0, 1)).view(B, T, -1).mean(1)  # (B*T, E) -> (B, E)

    def encode_text(self, tokens, adapted=True):
        if adapted:
            return self.clip.encode_text(tokens)
        with torch.no_grad():  # the frozen description branch, as prompts.description_features calls it
            return self.clip.encode_text(tokens)

    logits = adapters.MSTA.logits  # exp(logit_scale) * cos in fp32: the same head as MSTA's


# ---------------------------------------------------------------------------------------------- measuring
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


def rss_now():
    """Resident set size in bytes, from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def rss_peak():
    """Peak RSS of this process in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class PeakMemory:
    """Peak memory over a stretch of work (see the module docstring for exactly what is measured)."""

    def __init__(self, device):
        self.device = device
        gc.collect()
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.baseline = torch.cuda.memory_allocated(device)
        else:
            self.baseline, self.setup_peak = rss_now(), rss_peak()

    def result(self):
        if self.device.type == "cuda":
            sync(self.device)
            return dict(peak_bytes=torch.cuda.max_memory_allocated(self.device), baseline_bytes=self.baseline,
                        memory_measure="cuda max_memory_allocated during the steps (includes the weights)")
        peak = rss_peak()
        out = dict(peak_bytes=max(0, peak - self.baseline) if self.baseline is not None else None,
                   baseline_bytes=self.baseline, peak_rss_bytes=peak,
                   memory_measure="peak RSS minus RSS before the first step (excludes the resident weights)")
        if peak <= self.setup_peak:  # ru_maxrss is a lifetime maximum: the steps never rose above the setup
            out["memory_measure"] += "; the steps never exceeded the setup's peak, so this is an upper bound"
        return out


def matmul_ceiling(device, quick):
    """Best GFLOP/s of large square matmuls per dtype: the device's dense ceiling. Each size repeats for at
    least 0.3 s (0.05 s in --quick) after one untimed call."""
    sizes = (512,) if quick else (2048, 4096) if device.type == "cpu" else (4096, 8192)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        del dtypes["bf16"]
    out = {}
    for name, dtype in dtypes.items():
        best = None
        for n in sizes:
            a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
            a @ b
            sync(device)
            reps, t0 = 0, time.perf_counter()
            while reps < 2 or time.perf_counter() - t0 < (0.05 if quick else 0.3):
                a @ b
                reps += 1
                if reps % 8 == 0:
                    sync(device)
            sync(device)
            rate = mm(n, n, n) * reps / (time.perf_counter() - t0)
            if best is None or rate > best["flops_per_s"]:
                best = dict(flops_per_s=rate, n=n)
        out[name] = best
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give the workers' processes the memory back
    return out


# ---------------------------------------------------------------------------------------------- the workers
def setup(args):
    """Device, autocast context, batch size and model size for a worker."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        # Tiny ops gain nothing from a second thread, and a CPU shared with other jobs makes OpenMP threads wait
        # for each other at every op (tests then take minutes instead of seconds).
        torch.set_num_threads(1)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")  # train.py's default
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    batch = args.batch or (32 if device.type == "cuda" else 2)
    return device, precision, autocast, batch, SIZES["tiny" if args.quick else "ViT-B/16"]


def ucf101_text(context_length=77):
    """UCF101's class prompts (C, L) and its first 2 spatial and 2 temporal descriptions per class, (C*K, L)
    each, all tokenised to the model's context length (CLIP 77, ViCLIP 32), as train.py does. Class names are
    the keys of descriptions/ucf101.json, in its order."""
    with open(os.path.join(HERE, "descriptions", "ucf101.json")) as f:
        table = json.load(f)
    names = list(table)
    prompts = clip.tokenize([f"a video of {name}." for name in names], context_length)  # prompts.class_tokens'
    spatial, temporal = ([s for name in names for s in table[name][kind][:DESCRIPTIONS]]
                         for kind in ("spatial", "temporal"))
    return (prompts, clip.tokenize(spatial, context_length, truncate=True),
            clip.tokenize(temporal, context_length, truncate=True))


def per_class(tokens, C):
    """(C*K, L) -> the (C, K, L) form prompts.description_features takes."""
    return tokens.view(C, -1, tokens.shape[1])


def cached_description_features(model, spatial, temporal, C, cache_dir, name):
    """prompts.description_features for both kinds, computed once and kept in cache_dir for the next workers
    (the random CLIP is the same in every process, seed 0, so are its features)."""
    path = os.path.join(cache_dir, f"descriptions-{name.replace('/', '-')}.pt") if cache_dir else None
    device = model.clip.logit_scale.device
    if path and os.path.exists(path):
        return [f.to(device) for f in torch.load(path, weights_only=True)]
    feats = [description_features(model, per_class(tokens, C)) for tokens in (spatial, temporal)]
    if path:
        torch.save([f.cpu() for f in feats], path + ".tmp")
        os.replace(path + ".tmp", path)
    return feats


def descriptions_worker(name, args):
    """Computes the description features into the cache before any configuration is timed, so the first one
    measured does not run in a process that has just done that extra work."""
    device, _, _, _, size = setup(args)
    torch.manual_seed(0)
    net = FullFineTune(clip.build_random(size["clip"]).to(device))  # any wrapper: only the frozen branch runs
    prompts, spatial, temporal = ucf101_text()
    cached_description_features(net, spatial, temporal, len(prompts), args.cache_dir, size["clip"])
    return dict(config=name)


def build_train_step(name, args):
    """The model, data and optimiser of one training configuration: (step function, facts about it including its
    analytic FLOPs, device). The step is train.py's loop body, with the ablation's switches."""
    device, precision, autocast, B, size = setup(args)
    T, kind = args.frames, "full" if name == "full-ft" else "vit" if name == "vit" else "msta"
    rank, blocks = size["largest"] if name == "msta-largest" else size["few_shot"]
    off = set(MEASURES) if name == "off-all" else {name[4:]} if name.startswith("off-") else set()
    if name.startswith("stream-"):  # the residual stream's cost: both rows under bf16 autocast, whatever the device
        precision, autocast = "bf16", torch.autocast(device.type, dtype=torch.bfloat16)
    torch.manual_seed(0)
    backbone = size["viclip"] if name == "msta-viclip" else size["clip"]
    model = (viclip if name == "msta-viclip" else clip).build_random(backbone).to(device)
    if name == "stream-bf16":
        bf16_stream(model)
    prompts, spatial, temporal = (x.to(device) for x in ucf101_text(model.context_length))
    C = len(prompts)
    if kind == "msta":
        net = AblationMSTA(model, off=off, num_frames=T, rank=rank, blocks=blocks)
        trainable, total = adapters.parameter_counts(net)
    else:
        net = FullFineTune(model)
        trainable = total = sum(p.numel() for p in model.parameters())
    R = model.visual.input_resolution
    videos = torch.randn(B, T, 3, R, R, device=device)
    labels = torch.randint(0, C, (B,), device=device)
    if kind != "vit":
        spatial_feats, temporal_feats = cached_description_features(net, spatial, temporal, C, args.cache_dir,
                                                                    backbone)
    params = [p for p in net.parameters() if p.requires_grad]
    # train.py's optimiser; its state is created by the first (warm-up) step.
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1e-3)

    def train_step():  # train.py's loop body
        s, t = spatial_feats, temporal_feats
        if "cache" in off:
            net._text_cache.clear()
        with autocast:
            if "desc" in off:  # in the forward's precision, as a step that encodes them would
                s, t = (description_features(net, per_class(x, C)) for x in (spatial, temporal))
            text = net.encode_text(prompts)                                    # (C, E)
            logits = net.logits(net.encode_video(videos), text)                # (B, C)
        loss = losses.total_loss(logits, labels, text, s, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def vit_step():  # the reference: image encoder forward + backward, every weight trainable, no optimiser
        with autocast:
            out = model.visual(videos.flatten(0, 1))                           # (B*T, E)
        optimizer.zero_grad(set_to_none=True)
        loss = out.float().square().mean()
        loss.backward()
        return loss.detach()

    extra = dict(adapter_error=adapter_error(net, videos, autocast)) if name.startswith("stream-") else {}
    fwd, bwd = step_flops(kind, model, B, T, prompts, net if kind == "msta" else None, off,
                          (spatial, temporal) if "desc" in off else ())
    facts = dict(config=name, kind=kind, off=sorted(off), rank=rank if kind == "msta" else None,
                 blocks=list(blocks) if kind == "msta" else None, batch=B, frames=T, classes=C,
                 precision=precision, trainable_params=trainable, backbone_params=total,
                 flops_forward=fwd, flops_backward=bwd, flops=fwd + bwd, **extra)
    return (vit_step if kind == "vit" else train_step), facts, device


def train_worker(name, args):
    """One training configuration: time, memory and FLOPs of its step."""
    t0 = time.perf_counter()
    step, facts, device = build_train_step(name, args)
    facts["setup_s"] = time.perf_counter() - t0
    memory = PeakMemory(device)
    times = timed(step, args.warmup, args.steps, device)
    return dict(facts, time_s=statistics.median(times), times_s=times,
                flops_per_s=facts["flops"] / statistics.median(times), **memory.result())


def infer_worker(name, args):
    """Inference with MSTA few-shot: class text features computed once, then video features and logits."""
    device, precision, autocast, B, size = setup(args)
    T = args.frames
    rank, blocks = size["few_shot"]
    torch.manual_seed(0)
    model = clip.build_random(size["clip"]).to(device)
    net = adapters.MSTA(model, num_frames=T, rank=rank, blocks=blocks).eval()
    prompts = ucf101_text()[0].to(device)
    R, V = model.visual.input_resolution, VIEWS[0] * VIEWS[1]
    # Multi-view as evaluate.py: 8 videos x 15 views per batch on a GPU; one video's 15 views on the CPU.
    Bm = min(8, max(1, B // 4)) if device.type == "cuda" else 1
    with torch.no_grad(), autocast:
        text = net.encode_text(prompts)  # (C, E): once per label set

    def run(videos, views):
        with torch.no_grad(), autocast:
            feats = net.encode_video(videos)                                   # (B*V, E)
        return net.logits(feats, text).softmax(-1).view(-1, views, len(text)).sum(1)  # (B, C), summed over views

    single = torch.randn(B, T, 3, R, R, device=device)
    multi = torch.randn(Bm * V, T, 3, R, R, device=device)                     # (B*V, T, 3, H, W)
    memory = PeakMemory(device)
    t1 = timed(lambda: run(single, 1), args.warmup, args.steps, device)
    # The CPU runs the 15-view batch (1 video, 120 frames) once, warmed up by the single-view runs; a GPU warms
    # it up on its own shapes.
    mv_warmup, mv_steps = (0, 1) if device.type == "cpu" else (args.warmup, args.steps)
    tm = timed(lambda: run(multi, V), mv_warmup, mv_steps, device)
    f1, fm = step_flops("infer", model, B, T, msta=net)[0], step_flops("infer", model, Bm * V, T, msta=net)[0]
    s1, sm = statistics.median(t1), statistics.median(tm)
    return dict(config=name, precision=precision, frames=T, rank=rank, blocks=list(blocks),
                single=dict(videos=B, views=1, time_s=s1, times_s=t1, clips_per_s=B / s1, videos_per_s=B / s1,
                            flops=f1, flops_per_s=f1 / s1),
                multi=dict(videos=Bm, views=V, time_s=sm, times_s=tm, clips_per_s=Bm * V / sm,
                           videos_per_s=Bm / sm, flops=fm, flops_per_s=fm / sm),
                **memory.result())


def write_video(path, seconds, width, height, fps=30):
    """A test video with PyAV: a textured background panning 2 px per frame and a square crossing it, so the
    encoder sees real motion. H.264 (libx264) when the PyAV wheel has it, else MPEG-4 Part 2; the encoder's
    defaults otherwise (libx264: a keyframe every 250 frames, B-frames), as ffmpeg re-encoded datasets have."""
    import av  # imported here: only the data part needs it

    codec = next((c for c in ("libx264", "h264", "mpeg4") if _has_encoder(av, c)), None)
    if codec is None:
        raise RuntimeError("this PyAV build has neither an H.264 nor an MPEG-4 encoder")
    g = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, height // 8, width // 4 + 1, generator=g),
                                              size=(height, 2 * width), mode="bilinear")[0]  # (3, H, 2W)
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            shift = (2 * i) % width
            img = texture[:, :, shift:shift + width].clone()                   # (3, H, W)
            x, y = (5 * i) % (width - 40), height // 3
            img[:, y:y + 40, x:x + 40] = 1.0
            img = (img.permute(1, 2, 0) * 255).to(torch.uint8).contiguous()   # (3, H, W) -> (H, W, 3)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img.numpy(), format="rgb24")))
        out.mux(stream.encode())  # flush the encoder's delayed frames
    return codec


def _has_encoder(av, name):
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # PyAV raises UnknownCodecError or ValueError depending on the version
        return False


def decode_everything(path, indices, convert_all=True):
    """The dense baseline: decode every frame of the file and convert each to RGB (torchvision.io.read_video's
    way), then pick the wanted ones. convert_all=False converts only those: the decoding alone."""
    import av

    wanted, frames = set(indices), {}
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if convert_all or i in wanted:
                frames[i] = torch.from_numpy(frame.to_ndarray(format="rgb24"))
    return torch.stack([frames[i] for i in indices])  # (T, H, W, 3)


def keyframe_count(path):
    import av

    with av.open(path) as container:
        return sum(p.is_keyframe for p in container.demux(video=0) if p.size)


def data_worker(name, args):
    """Item 6: the sparse reader vs decoding every frame, and the training pipeline's clips/s, in one process of
    one thread (a DataLoader worker: torch gives each one thread) pinned to one core (FFmpeg's decoder threads
    share it), for the original clip and its prepare.py copy."""
    import data  # imported here: only this part needs PyAV and torchvision

    torch.set_num_threads(1)
    if args.worker and hasattr(os, "sched_setaffinity"):  # its own process: one core, FFmpeg's threads included
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    size, T = SIZES["tiny" if args.quick else "ViT-B/16"], args.frames
    seconds, width, height = size["video"]
    reps = 1 if args.quick else 5
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "original", "video.mp4")
        os.makedirs(os.path.dirname(path))
        codec = write_video(path, seconds, width, height)
        length = data.video_length(path)
        indices = data.sample_indices(length, T, train=False)  # the single-view test's segment centres
        reader = sys.modules.get(data.read_frames.__module__)  # video.py counts the pictures it decodes
        before = getattr(reader, "decoded_frames", None)
        if not torch.equal(data.read_frames(path, indices), decode_everything(path, indices)):
            raise RuntimeError("data.read_frames differs from a full decode at the same indices")
        decoded = None if before is None else reader.decoded_frames - before
        sparse = timed(lambda: data.read_frames(path, indices), 1, reps, cpu)
        full = timed(lambda: decode_everything(path, indices), 1, reps, cpu)
        decode_only = timed(lambda: decode_everything(path, indices, convert_all=False), 1, reps, cpu)
        # The training pipeline for one clip through data.py's public API, per worker core:
        # (a) the original clip, whole augmentation in the worker; (b) its prepare.py copy, likewise; (c) (b) with
        # the photometric half deferred to the training device (the worker returns uint8 + its draws).
        prepared = os.path.join(tmp, "prepared", "video.mp4")
        os.makedirs(os.path.dirname(prepared))
        prepare.encode_mp4(path, prepared, 256, prepare.GOP, prepare.CRF)
        items = 2 if args.quick else 20
        pipelines = {key: pipeline_rate(data, os.path.dirname(p), T, size["resolution"], defer, items)
                     for key, p, defer in (("a", path, False), ("b", prepared, False), ("c", prepared, True))}
        keyframes, prepared_keyframes = keyframe_count(path), keyframe_count(prepared)
    s, f = statistics.median(sparse), statistics.median(full)
    a, b, c = (pipelines[k] for k in "abc")
    return dict(config=name, codec=codec, seconds=seconds, width=width, height=height, fps=30, frames=length,
                keyframes=keyframes, indices=indices, sparse_s=s, sparse_times_s=sparse,
                sparse_decoded_frames=decoded, full_decode_s=f, full_times_s=full, sparse_speedup=f / s,
                full_decode_convert_wanted_s=statistics.median(decode_only),
                pipeline_s=a["s"], pipeline_times_s=a["times_s"], pipeline_clips_per_s=a["clips_per_s"],
                pipelines=pipelines, prepared_gop=prepare.GOP, prepared_keyframes=prepared_keyframes,
                cores=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                resolution=size["resolution"], threads=torch.get_num_threads())


def one_video_list(data, folder, T, resolution, defer):
    """A training dataset of the one video.mp4 in folder, through data.py's "list" reader."""
    with open(os.path.join(folder, "train.txt"), "w") as f:
        f.write("video.mp4 0\n")
    with open(os.path.join(folder, "labels.csv"), "w") as f:
        f.write("id,name\n0,video\n")
    return data.build_dataset("list", folder, "full", train=True, num_frames=T, resolution=resolution,
                              train_list=os.path.join(folder, "train.txt"),
                              labels_csv=os.path.join(folder, "labels.csv"), defer_photometric=defer)


def pipeline_rate(data, folder, T, resolution, defer, items):
    """Clips per CPU-second and decoded pictures per clip of dataset items (open, demux, 8 random TSN frames,
    augmentation), item k seeded with k, so every pipeline reads the same frames. CPU time of this process (all
    its threads, FFmpeg's included) is what a worker core pays per clip, and other load on the machine does not
    inflate it (the wall times are kept too)."""
    import video  # noqa: PLC0415 (the decoded-picture counter)

    dataset = one_video_list(data, folder, T, resolution, defer)
    data.seed_everything(0)
    dataset[0]  # warm-up: file cache, codec set-up
    times, wall, before = [], [], video.decoded_frames
    for k in range(items):
        data.seed_everything(k)
        t0, w0 = time.process_time(), time.perf_counter()
        dataset[0]
        times.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    p = statistics.median(times)
    return dict(s=p, times_s=times, clips_per_s=1 / p, wall_s=statistics.median(wall), wall_times_s=wall,
                decoded_per_clip=(video.decoded_frames - before) / items,
                photometric="training device" if defer else "worker")


def loader_worker(name, args):
    """The loader as train.py builds it (persistent workers, pinned memory, batches.PREFETCH batches each, uint8
    clips, photometric half on the device), all the process's cores as workers, over copies of the prepared
    clip: clips/s delivered to the device. Then the prefetch depth: with a stand-in training step as long as
    the loader's own time per batch (where waiting is likeliest), the share of the time the step waits for
    data at prefetch 2, 4 and 8 batches per worker."""
    import data  # noqa: PLC0415
    import batches  # noqa: PLC0415

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, T = SIZES["tiny" if args.quick else "ViT-B/16"], args.frames
    workers = 1 if args.quick else data.default_workers()
    B, timed_batches = (2, 3) if args.quick else (32 if device.type == "cuda" else 8, 12)
    with tempfile.TemporaryDirectory() as tmp:
        src, folder = os.path.join(tmp, "src.mp4"), os.path.join(tmp, "prepared")
        os.makedirs(folder)
        write_video(src, *size["video"])
        prepare.encode_mp4(src, os.path.join(folder, "video.mp4"), 256, prepare.GOP, prepare.CRF)
        n = B * (timed_batches + 2 * workers + 2)  # every item the same video, as train.py's datasets defer
        dataset = data.VideoDataset("loader", [(os.path.join(folder, "video.mp4"), 0)] * n, ["video"], T, True,
                                    size["resolution"], defer_photometric=True)

        def run(prefetch, step_s=0.0):
            loader = torch.utils.data.DataLoader(dataset, batch_size=B, num_workers=workers,
                                                 pin_memory=device.type == "cuda", persistent_workers=True,
                                                 prefetch_factor=prefetch)
            it, waited, n = iter(loader), 0.0, 0
            for _ in range(2 * workers):  # warm-up: every worker has started and delivered
                next(it)
            t0 = time.perf_counter()
            for _ in range(timed_batches):
                w0 = time.perf_counter()
                (clips, params), _ = next(it)
                waited += time.perf_counter() - w0  # the step could not start: no batch was ready
                videos = data.photometric(clips.to(device, non_blocking=True), params)
                sync(device)
                n += len(videos)
                time.sleep(step_s)  # the training step: the GPU works while the workers decode
            total = time.perf_counter() - t0
            del it, loader
            return n / total, waited / total

        rate, _ = run(batches.PREFETCH)
        step_s = B / rate
        waits = {p: run(p, step_s)[1] for p in (2, 4, 8)}
    return dict(config=name, device=device.type, workers=workers, batch=B, batches=timed_batches,
                clips_per_s=rate, prefetch=batches.PREFETCH, step_s=step_s,
                wait_share={str(p): w for p, w in waits.items()})


WORKERS = {  # name -> (function, row label); the order is the order they run and print in
    "msta-few-shot": (train_worker, "MSTA few-shot (r {r}, blocks {b})"),
    "msta-largest": (train_worker, "MSTA largest (r {r}, blocks {b})"),
    "full-ft": (train_worker, "full fine-tuning"),
    "vit": (train_worker, "plain {model} fwd+bwd (reference)"),
    "stream-fp32": (train_worker, "MSTA few-shot bf16, fp32 stream (ours)"),
    "stream-bf16": (train_worker, "MSTA few-shot bf16, bf16 stream (before)"),
    "msta-viclip": (train_worker, "MSTA few-shot on {viclip} (joint)"),
    "off-all": (train_worker, "MSTA few-shot, all 4 measures off"),
    **{f"off-{m}": (train_worker, f"  off: {text}") for m, text in MEASURES.items()},
    "infer": (infer_worker, "inference"),
    "data": (data_worker, "data"),
    "loader": (loader_worker, "loader"),
}
FUNCTIONS = {"descriptions": descriptions_worker, **{name: fn for name, (fn, _) in WORKERS.items()}}


# ---------------------------------------------------------------------------------------------- the report
def machine():
    """What ran it: CPU model, threads, GPU, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = dict(cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               python=platform.python_version(), torch=torch.__version__, platform=platform.platform())
    if torch.cuda.is_available():
        out.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
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


def ratio(a, b):
    return a / b if a is not None and b else None


def check(results):
    """The efficiency targets (TARGETS), read from this run's numbers: [(pass, line)]."""
    train, lines = results["train"], []
    fs, full, off, vit = (train.get(k, {}) for k in ("msta-few-shot", "full-ft", "off-all", "vit"))
    d = results.get("data", {})

    def add(value, ok, text):
        lines.append(dict(passed=bool(ok) if value is not None else None, value=value, text=text))

    r = ratio(fs.get("time_s"), full.get("time_s"))
    add(r, r is not None and r <= TARGETS["time"],
        f"MSTA few-shot step time / full fine-tuning: {r:.2f}x (target <= {TARGETS['time']}x)" if r else
        "MSTA few-shot step time / full fine-tuning: not measured")
    r = ratio(fs.get("peak_bytes"), full.get("peak_bytes"))
    add(r, r is not None and r <= TARGETS["memory"],
        f"MSTA few-shot peak memory / full fine-tuning: {r:.2f}x (target <= {TARGETS['memory']}x)" if r else
        "MSTA few-shot peak memory / full fine-tuning: not measured")
    r = ratio(off.get("time_s"), fs.get("time_s"))
    add(r, r is not None and r >= TARGETS["measures"],
        f"efficiency measures together: {r:.2f}x faster than all off (target >= {TARGETS['measures']}x)" if r else
        "efficiency measures together: not measured")
    r = d.get("sparse_speedup")
    add(r, r is not None and r >= TARGETS["sparse"],
        f"sparse decoding: {r:.2f}x faster than decoding every frame (target >= {TARGETS['sparse']}x)" if r else
        "sparse decoding: not measured")
    u, v = fs.get("utilisation"), vit.get("utilisation")
    r = ratio(v, u)
    add(r, r is not None and r <= TARGETS["utilisation"],
        f"FLOP utilisation: MSTA few-shot {100 * u:.1f}% vs plain ViT fwd+bwd {100 * v:.1f}% of the "
        f"{fs.get('precision')} ceiling: {r:.2f}x apart (target within {TARGETS['utilisation']}x)" if r else
        "FLOP utilisation: not measured")
    return lines


def check_data(results):
    """The loader's targets, from this run's pipeline rows (one worker core): [dict(passed, value, target, text)]."""
    pipes, lines = results.get("data", {}).get("pipelines", {}), []
    a, b, c = (pipes.get(k, {}) for k in "abc")
    r = ratio(c.get("clips_per_s"), a.get("clips_per_s"))
    lines.append(dict(name="pipeline_speedup", passed=r is not None and r >= DATA_TARGETS["speedup"], value=r,
                      target=f">= {DATA_TARGETS['speedup']}", text=f"(c) prepared clip, photometric half on the "
                      f"device: {r:.2f}x the clips/s of (a) today's pipeline on the original clip (target >= "
                      f"{DATA_TARGETS['speedup']}x)" if r else "(c) / (a) clips/s: not measured"))
    r = ratio(b.get("decoded_per_clip"), a.get("decoded_per_clip"))
    lines.append(dict(name="decoded_pictures", passed=r is not None and r <= DATA_TARGETS["decoded"], value=r,
                      target=f"<= {DATA_TARGETS['decoded']}", text=f"(b) prepared clip decodes "
                      f"{b.get('decoded_per_clip', 0):.1f} pictures for 8 frames, (a) the original "
                      f"{a.get('decoded_per_clip', 0):.1f}: {r:.2f}x (target <= {DATA_TARGETS['decoded']}x)"
                      if r else "(b) / (a) decoded pictures: not measured"))
    return lines


def table(results):
    """The screen report (also what the README's Performance section shows)."""
    m, s, train = results["machine"], results["settings"], results["train"]
    out = [f"MSTA benchmark: {s['model']} with random weights on {s['device']} ({m.get('gpu', m['cpu'])}, "
           f"{m['torch_threads']} threads), torch {m['torch']}",
           f"{s['precision']}, batch {s['batch']} videos x {s['frames']} frames, {s['classes']} classes (UCF101) "
           f"+ {DESCRIPTIONS}+{DESCRIPTIONS} descriptions each; median of {s['steps']} steps after {s['warmup']} "
           "warm-up"]
    busy = m.get("other_processes_cpu_share")
    if busy is not None:
        out.append(f"other processes used {100 * busy:.0f}% of the CPUs during the run"
                   + (": the machine was busy, so the timings are disturbed" if busy > 0.1 else ""))
    out.append("")
    c = results["ceiling"]
    out.append("1. dense matmul ceiling: " + ", ".join(
        f"{k} {v['flops_per_s'] / 1e9:,.0f} GFLOP/s (n={v['n']})" for k, v in c.items()))
    full = train.get("full-ft", {})
    fs = train.get("msta-few-shot", {})
    mib = lambda b: f"{b / 2**20:,.0f}" if b is not None else "-"  # noqa: E731
    x = lambda a, b: f"{a / b:.2f}x" if a is not None and b else "-"  # noqa: E731
    header = (f"{'':40s} {'trainable':>10s} {'step s':>7s} {'vs full':>7s} {'vs MSTA':>7s} {'peak MiB':>9s} "
              f"{'vs full':>7s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'of ceil':>7s}")
    out += ["", "2-4. training step (forward, L_CE + L_CC, backward, AdamW; the reference row: no loss or optimiser)",
            header]
    for name, row in train.items():
        if name == "off-all":
            out.append("     efficiency measures off (4. ablation):")
        if "error" in row:
            out.append(f"{row['label']:40s} FAILED: {row['error'].splitlines()[-1] if row['error'] else ''}")
            continue
        tr = f"{row['trainable_params'] / 1e6:.2f}M" if row["kind"] != "vit" else "all"
        out.append(f"{row['label']:40s} {tr:>10s} {row['time_s']:7.2f} {x(row['time_s'], full.get('time_s')):>7s} "
                   f"{x(row['time_s'], fs.get('time_s')):>7s} {mib(row['peak_bytes']):>9s} "
                   f"{x(row['peak_bytes'], full.get('peak_bytes')):>7s} {row['flops'] / 1e9:7.0f} "
                   f"{row['flops_per_s'] / 1e9:8.1f} {100 * row['utilisation']:6.1f}%")
    s32, s16 = train.get("stream-fp32", {}), train.get("stream-bf16", {})
    if "adapter_error" in s32 and "adapter_error" in s16:
        out.append(f"     bf16: the adapters' contribution to the video feature is off by "
                   f"{100 * s32['adapter_error']:.1f}% (fp32 stream) / {100 * s16['adapter_error']:.1f}% "
                   "(bf16 stream) against fp32")
    mem = fs.get("memory_measure") or full.get("memory_measure")
    if mem:
        out.append(f"     peak memory = {mem}")
    inf = results.get("inference", {})
    if "single" in inf:
        out += ["", f"5. inference, MSTA few-shot, class text features cached ({inf['precision']})"]
        for key, what in (("single", "single view"), ("multi", f"{VIEWS[0]}x{VIEWS[1]} views")):
            r = inf[key]
            out.append(f"   {what:14s} {r['videos']} video(s) x {r['views']:2d} views per batch: "
                       f"{r['clips_per_s']:7.2f} clips/s, {r['videos_per_s']:7.3f} videos/s, "
                       f"{100 * r['utilisation']:.1f}% of ceiling")
    elif inf:
        out += ["", f"5. inference FAILED: {inf.get('error', '').splitlines()[-1:]}"]
    d = results.get("data", {})
    if "sparse_s" in d:
        out += ["", f"6. data: {d['seconds']} s {d['width']}x{d['height']} {d['fps']} fps {d['codec']} video, "
                    f"{d['frames']} frames, {d['keyframes']} keyframe(s); {len(d['indices'])} test-sampled frames",
                f"   sparse read (data.read_frames)  {1e3 * d['sparse_s']:8.1f} ms"
                + (f"  ({d['sparse_decoded_frames']} pictures decoded)" if d["sparse_decoded_frames"] else ""),
                f"   decode every frame, all to RGB  {1e3 * d['full_decode_s']:8.1f} ms  -> sparse is "
                f"{d['sparse_speedup']:.2f}x faster",
                f"   decode every frame, 8 to RGB    {1e3 * d['full_decode_convert_wanted_s']:8.1f} ms",
                f"   training pipeline per worker core (read 8 random TSN frames + augment to "
                f"{len(d['indices'])}x3x{d['resolution']}x{d['resolution']}, 1 thread, pinned to core "
                f"{d['cores']}; clips per CPU-second):"]
        for key, what in (("a", "original clip, whole augmentation in the worker"),
                          ("b", f"after prepare.py (GOP {d['prepared_gop']}), whole augmentation"),
                          ("c", "(b), photometric half on the training device")):
            r = d["pipelines"][key]
            out.append(f"     ({key}) {what:50s} {r['clips_per_s']:7.2f} clips/s {r['decoded_per_clip']:6.1f} "
                       "pictures decoded per clip")
    lo = results.get("loader", {})
    if "clips_per_s" in lo:
        step = train.get("msta-few-shot", {})
        step_rate = step["batch"] / step["time_s"] if "time_s" in step else None
        out.append(f"   loader as train.py builds it: {lo['workers']} workers, batch {lo['batch']}, photometric on "
                   f"{lo['device']}: {lo['clips_per_s']:.1f} clips/s"
                   + (f"; the MSTA few-shot training step: {step_rate:.1f} clips/s -> loader / step = "
                      f"{lo['clips_per_s'] / step_rate:.2f} (>= 1: the {lo['device'].upper()} never waits)"
                      if step_rate and lo["device"] == "cuda" else ""))
        out.append("   prefetch (batches per worker) 2 / 4 / 8, step as long as a batch's loading: the step waited "
                   + " / ".join(f"{100 * lo['wait_share'][p]:.0f}%" for p in ("2", "4", "8"))
                   + f" of the time (train.py uses {lo['prefetch']})")
    elif lo:
        out += [f"   loader FAILED: {lo.get('error', '').splitlines()[-1:]}"]
    elif d:
        out += ["", f"6. data FAILED: {d.get('error', '').splitlines()[-1:]}"]
    out += ["", "target checks:"]
    out += [f"{'PASS' if c['passed'] else 'MISS' if c['passed'] is False else 'N/A '}  {c['text']}"
            for c in results["targets"]]
    out += ["", "loader target checks (CPU, one worker core):"]
    out += [f"{'PASS' if c['passed'] else 'FAIL'}  {c['text']}" for c in results.get("data_targets", [])]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="benchmark.json", help="where the JSON results go (default: benchmark.json)")
    # CPU default: 2 timed steps, so that a default run stays near 5 minutes on 2 cores (the all-off step alone
    # takes ~20 s there); every step's time is in the JSON, and --steps 3 or more tightens the medians.
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default: CPU 2, GPU 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: CPU 1, GPU 3)")
    p.add_argument("--batch", type=int, default=None, help="videos per step (default: CPU 2, GPU 32)")
    p.add_argument("--frames", type=int, default=8, help="frames per video T (default: 8)")
    p.add_argument("--precision", default=None, choices=("bf16", "fp32"),
                   help="autocast dtype of the steps (default as train.py: bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--quick", action="store_true", help="random-tiny CLIP, 1 warm-up + 1 timed step, a 2-s video, "
                   "all in this process: seconds, for tests (its numbers mean nothing)")
    p.add_argument("--worker", default=None, choices=list(FUNCTIONS), help=argparse.SUPPRESS)  # one configuration
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)  # shared description features
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.steps is None:
        args.steps = 1 if args.quick else 10 if cuda else 2
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3 if cuda else 1
    return args


def run_worker(name, args, cache_dir):
    """Run one configuration in a fresh Python process; its result is the JSON line it prints last. --quick runs
    it in this process instead (a process start costs more than a tiny configuration; memory is then shared)."""
    if args.quick:
        threads = torch.get_num_threads()
        try:
            row = FUNCTIONS[name](name, argparse.Namespace(**{**vars(args), "cache_dir": cache_dir}))
        finally:
            torch.set_num_threads(threads)  # the data part sets 1
        if "memory_measure" in row:
            row["memory_measure"] += " [--quick: all in one process, so not isolated]"
        return row
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--cache-dir", cache_dir,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--frames", str(args.frames)]
    cmd += ["--quick"] * args.quick + ["--batch", str(args.batch)] * bool(args.batch)
    cmd += ["--precision", args.precision] * bool(args.precision)
    proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(config=name, error=proc.stderr.strip()[-2000:] or f"exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:  # a child: one configuration, one JSON line
        print(json.dumps(FUNCTIONS[args.worker](args.worker, args)))
        return None
    threads = torch.get_num_threads()
    try:
        return benchmark(args)
    finally:
        torch.set_num_threads(threads)  # --quick sets 1; a caller's process (the tests) gets its own back


def benchmark(args):
    """Run every configuration, print the table and target checks, write the JSON."""
    t_start, load = time.time(), OtherLoad()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _, precision, _, batch, size = setup(args)
    model_name = "random-tiny" if args.quick else "ViT-B/16"
    results = dict(machine=machine(), settings=dict(
        model=model_name, device=device.type, precision=precision, batch=batch, frames=args.frames, classes=101,
        steps=args.steps, warmup=args.warmup, quick=args.quick, command=" ".join(["python"] + sys.argv)))
    print(f"benchmark: {model_name} on {device.type}, each configuration in its own process ...", flush=True)
    results["ceiling"] = matmul_ceiling(device, args.quick)
    ceiling = results["ceiling"].get(precision, results["ceiling"]["fp32"])["flops_per_s"]
    results["train"] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        prepared = run_worker("descriptions", args, cache_dir)
        if "error" in prepared:
            raise RuntimeError(f"computing the description features failed:\n{prepared['error']}")
        for name, (fn, label) in WORKERS.items():
            t0 = time.time()
            row = run_worker(name, args, cache_dir)
            if fn is train_worker:
                r, b = size["largest"] if name == "msta-largest" else size["few_shot"]
                row["label"] = label.format(r=r, b=f"{b[0]}-{b[1]}", model=model_name,
                                            viclip=size["viclip"].replace("random-", ""))
                if "flops_per_s" in row:
                    row["utilisation"] = row["flops_per_s"] / results["ceiling"].get(
                        row.get("precision"), results["ceiling"]["fp32"])["flops_per_s"]  # the row's own dtype
                results["train"][name] = row
            elif name == "infer":
                for key in ("single", "multi"):
                    if key in row:
                        row[key]["utilisation"] = row[key]["flops_per_s"] / ceiling
                results["inference"] = row
            elif name == "loader":
                results["loader"] = row
            else:
                results["data"] = row
            status = "FAILED" if "error" in row else f"{row['time_s']:.2f} s/step" if "time_s" in row else "done"
            print(f"  {name:14s} {status} ({time.time() - t0:.0f} s)", flush=True)
    results["targets"] = check(results)
    results["data_targets"] = check_data(results)
    results["seconds"] = time.time() - t_start
    results["machine"]["other_processes_cpu_share"] = load.share()
    text = table(results)
    print("\n" + text)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.output} ({results['seconds']:.0f} s in all)")
    failed = [k for k, v in {**results["train"], "infer": results.get("inference", {}),
                             "data": results.get("data", {}), "loader": results.get("loader", {})}.items()
              if "error" in v]
    if failed:
        for k in failed:
            row = results["train"].get(k) or results.get({"infer": "inference"}.get(k, k))
            print(f"\n{k} failed:\n{row['error']}", file=sys.stderr)
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
