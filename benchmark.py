"""What MSTA costs, measured: time, memory and FLOP rate of its training step, against full fine-tuning and
against the machine's own best rate on the step's own operations; and how much memory a GPU needs.

`python benchmark.py` builds ViT-B/16- and ViCLIP-B/16-shaped models with random weights in memory (no download;
speed and memory do not depend on the values) and runs the rows of ROWS, each in a fresh process
(`benchmark.py --worker NAME`, one JSON line on stdout), printing each as it finishes with its time:
  training steps  train.py's step (train.accumulate_step: forward, L_CE + L_CC, backward; then AdamW) for MSTA
                  few-shot (r 128, blocks 8-12) and largest (r 256, blocks 1-12), full fine-tuning, a plain ViT
                  forward+backward (the reference), the few-shot step in micro-batches of 1 video and with
                  activation checkpointing, on ViCLIP-B/16 (one joint sequence of 1 + 196 x 8 tokens), and in bf16
                  with the residual stream in fp32 and in bf16; the ablation: the four efficiency measures off
  memory          per backbone x setting x precision x checkpointing: the activation memory of one clip and the
                  memory a step needs whatever the batch, from which the table of what fits a 12/24/48/80 GB GPU
  inference       clips/s with the class text features cached, single view and UCF101's 5 x 3 views
  data, loader    bench/loading.py: sparse decoding, the loader's pipelines per worker core, train.py's loader
Each timed row's first warm-up step runs under bench_measure.StepProbe: its peak tensor memory (the "peak MiB"
column, device independent; on a GPU also torch.cuda.max_memory_allocated) and its matmul, convolution and
attention ops, which bench_measure.ceiling runs again alone. The ceiling of a precision is the best rate of any
of those ops, so no row's utilisation can exceed 100%; it is measured only for precisions the run uses.
FLOPs are counted analytically (bench/flops.py).

What runs by default: on a GPU every row but the compile one (batch 32, 10 timed steps after 3 warm-up). On a
CPU: batch 2, 1 timed step after 1 warm-up; bf16 rows only where the CPU computes bf16 natively
(bench_measure.native_bf16; emulated bf16 is some 50x slower than fp32), and the ablation and the 15-view
inference only with --all (the ablation's all-off step alone re-encodes 404 descriptions at all 77 positions:
about 5 TFLOP; 15 views are 120 frames). The table says what was skipped and why. --quick runs everything on the
4-layer random-tiny models in one process, in seconds (the tests' mode; its numbers mean nothing). Output: the
table, the target checks, benchmark.json; --markdown adds the memory table as Markdown (docs/performance.md),
--report FILE prints the tables of a saved benchmark.json again.

Shape legend: B videos, V views, T frames, N tokens per frame (1 + grid^2), D width, C classes, K descriptions
per class, E embedding, L text length, L' trimmed text length, r adapter rank.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import adapters
from bench import loading
import clip
import losses
import train
import viclip
from bench.measure import OtherLoad, StepProbe, ceiling, machine, native_bf16, timed
from bench.tables import DESCRIPTIONS, VIEWS, ceilings, check, markdown, progress, table
from bench.flops import step_flops  # analytic counts, bench/flops.py
from prompts import description_features

HERE = os.path.dirname(os.path.abspath(__file__))
# The efficiency measures of MSTA's step (the ablation), by the name --worker off-NAME switches off.
MEASURES = {
    "prefix": "no-grad frozen prefix",    # off: autograd records the frozen blocks below the first adapter
    "cache": "text prefix cached",        # off: the text prefix is recomputed every step
    "trim": "text trimmed to L'",         # off: all 77 token positions, as OpenAI's encode_text runs them
    "desc": "description features cached",  # off: re-encoded by the frozen text branch every step
}
# Model sizes, by --quick: the published shapes, and random-tiny (its 4 blocks stand in for 12).
SIZES = {False: dict(clip="random-ViT-B/16", viclip="random-ViCLIP-B/16", few_shot=(128, (8, 12)),
                     largest=(256, (1, 12))),
         True: dict(clip="random-tiny", viclip="random-ViCLIP-tiny", few_shot=(16, (3, 4)), largest=(32, (1, 4)))}


def R(name, worker, label, group="main", **settings):
    """One row of ROWS: a CLIP few-shot MSTA training step unless `settings` say otherwise."""
    return dict(dict(name=name, worker=worker, label=label, group=group, backbone="clip", setting="few_shot",
                     kind="msta"), **settings)


# The rows, in the order they run and print. group: "main" always; "bf16" only with native bf16; "ablation" on a
# CPU only with --all; "memory" the memory table; "compile" only with --compile.
ROWS = [
    R("msta-few-shot", "train", "MSTA few-shot (r {r}, blocks {b})"),
    R("msta-largest", "train", "MSTA largest (r {r}, blocks {b})", setting="largest"),
    R("full-ft", "train", "full fine-tuning", kind="full"),
    R("vit", "train", "plain {model} fwd+bwd (reference)", kind="vit"),
    R("msta-micro", "train", "MSTA few-shot, micro-batches of 1", micro=1),
    R("msta-ckpt", "train", "MSTA few-shot, --grad-checkpointing", checkpointing=True),
    R("msta-viclip", "train", "MSTA few-shot on {viclip} (joint)", backbone="viclip"),
    R("stream-fp32", "train", "MSTA few-shot bf16, fp32 stream (ours)", "bf16", precision="bf16"),
    R("stream-bf16", "train", "MSTA few-shot bf16, bf16 stream", "bf16", precision="bf16", stream="bf16"),
    R("off-all", "train", "MSTA few-shot, all 4 measures off", "ablation", off=tuple(MEASURES)),
    *[R(f"off-{m}", "train", f"  off: {text}", "ablation", off=(m,)) for m, text in MEASURES.items()],
    R("compile", "train", "MSTA few-shot, torch.compile", "compile", compiled=True),
    *[R(f"memory-{b}-{s.replace('_', '-')}", "memory", f"{b} {s}", "memory", backbone=b, setting=s)
      for b in ("clip", "viclip") for s in ("few_shot", "largest")],
    R("infer", "infer", "inference"),
    R("data", "data", "data"),
    R("loader", "loader", "loader"),
]
ROW = {row["name"]: row for row in ROWS}


# ---------------------------------------------------------------------------------------------- the models
class AblationMSTA(adapters.MSTA):
    """adapters.MSTA whose efficiency measures can be switched off, for the ablation. With none off, every call goes to
    adapters.MSTA's own code, so the measured step is the real one. ("cache" off is done by the step itself:
    it empties _text_cache before each forward.)"""

    def __init__(self, clip_model, off=(), **kwargs):
        super().__init__(clip_model, **kwargs)
        self.off = frozenset(off)
        if "trim" in self.off:
            # On this model only: MSTA.text_prefix and the frozen description branch both run all the context's
            # positions (77 for CLIP), as OpenAI's reference encode_text does.
            text_tower = getattr(clip_model, "text_encoder", clip_model)  # ViCLIP keeps its text tower apart
            text_tower.text_embed = lambda tokens, t=text_tower: clip.embed_text(
                tokens, t.token_embedding, t.positional_embedding, t.attn_mask, t.dtype, trim=False)

    def encode_video(self, videos):
        """As MSTA.encode_video; with "prefix" off the frozen blocks below the first adapter run under autograd
        and the backward pass goes through them (input gradients only: their weights stay frozen). That is what
        an implementation pays when anything below the first adapter wants a gradient; a plain one whose
        prefix sees no trainable tensor records nothing there either (autograd skips it)."""
        if "prefix" not in self.off:
            return super().encode_video(videos)
        B, T = videos.shape[:2]
        blocks = self.clip.vision_blocks
        with torch.no_grad():
            z = self.clip.vision_embed(videos.flatten(0, 1))  # (B, T, 3, H, W) -> (B*T, 3, H, W) -> (B*T, N, D)
        z.requires_grad_(True)  # a leaf wanting a gradient: autograd records every block above it
        for block in blocks[:self.start]:
            z = block(z, attn_mask=None)
        z = self.adapted_blocks(z, blocks, lambda j, u: self.adapters[str(j)].vision(u, T))  # (B*T, N, D)
        return self.clip.vision_head(z).view(B, T, -1).mean(1)  # (B*T, E) -> (B, T, E) -> (B, E)

    def text_prefix(self, tokens):
        """As MSTA.text_prefix; with "prefix" and "cache" both off, the prefix runs each step under autograd."""
        if not {"prefix", "cache"} <= self.off:
            return super().text_prefix(tokens)
        x, mask = self.clip.text_embed(tokens)  # (C, L', D), (L', L')
        x.requires_grad_(True)
        for block in self.clip.text_blocks[:self.start]:
            x = block(x, attn_mask=mask)
        return x, mask


@torch.no_grad()
def adapter_error(net, videos, autocast):
    """|d - d_fp32| / |d_fp32| for the adapters' contribution d = MSTA's video feature minus the frozen CLIP's
    frame mean (equal when A = 0), at initialisation, d under `autocast` and d_fp32 without it."""
    def contribution():
        frozen = adapters.backbone_video_features(net.clip, videos)  # (B, E): the frame mean
        return net.encode_video(videos).float() - frozen.float()
    exact = contribution()
    with autocast:
        approx = contribution()
    return ((approx - exact).norm() / exact.norm()).item()


def bf16_stream(model):
    """The vision stream in bf16 under autocast, the alternative to clip.py's fp32 stream (the text stream is fp32
    either way): embed's output cast to bf16, which every block then keeps. Only to measure what fp32 costs."""
    embed = model.vision_embed

    def bf16_embed(images):  # an instance attribute shadows the method; without autocast, fp32 as clip.py
        x = embed(images)
        return x.to(torch.bfloat16) if torch.is_autocast_enabled(images.device.type) else x
    model.vision_embed = bf16_embed


class FullFineTune(torch.nn.Module):
    """Full fine-tuning, ViFi-CLIP style: every CLIP weight trainable, the video feature the frame mean, no
    adapters. It has MSTA's interface (encode_video, encode_text, logits, .clip), so one step serves both."""

    def __init__(self, clip_model):
        super().__init__()
        self.clip = clip_model.requires_grad_(True)

    def encode_video(self, videos):
        return adapters.backbone_video_features(self.clip, videos)  # (B, T, 3, H, W) -> (B, E): the frame mean

    def encode_text(self, tokens, adapted=True):
        if adapted:
            return adapters.backbone_text_features(self.clip, tokens)
        with torch.no_grad():  # the frozen description branch, as prompts.description_features calls it
            return adapters.backbone_text_features(self.clip, tokens)

    logits = adapters.MSTA.logits  # exp(logit_scale) * cos in fp32: the same head as MSTA's


# ---------------------------------------------------------------------------------------------- the workers
def setup(args, row=None):
    """Device, precision, autocast context and batch size for a worker; a row may fix its own precision."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        # Tiny ops gain nothing from a second thread, and a CPU shared with other jobs makes OpenMP threads wait
        # for each other at every op (tests then take minutes instead of seconds).
        torch.set_num_threads(1)
    precision = (row or {}).get("precision") or args.precision or ("bf16" if device.type == "cuda" else "fp32")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    batch = args.batch or (32 if device.type == "cuda" else 2)
    return device, precision, autocast, batch


def ucf101_text(context_length=77):
    """UCF101's class prompts (C, L) and its first 2 spatial and 2 temporal descriptions per class, (C*K, L)
    each, all tokenised to the model's context length (CLIP 77, ViCLIP 32), as train.py does. Class names are
    the keys of descriptions/ucf101.json, in its order."""
    with open(os.path.join(HERE, "descriptions", "ucf101.json")) as f:
        entries = json.load(f)
    names = list(entries)
    prompts = clip.tokenize([f"a video of {name}." for name in names], context_length)  # train.class_tokens'
    spatial, temporal = ([s for name in names for s in entries[name][kind][:DESCRIPTIONS]]
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
    device, size = setup(args)[0], SIZES[args.quick]
    torch.manual_seed(0)
    net = FullFineTune(clip.build_random(size["clip"]).to(device))  # any wrapper: only the frozen branch runs
    prompts, spatial, temporal = ucf101_text()
    cached_description_features(net, spatial, temporal, len(prompts), args.cache_dir, size["clip"])
    return dict(config=name)


def build_model(row, args, device):
    """The row's backbone (random, seed 0) and the network trained on it: MSTA (with the row's measures off and
    its checkpointing) or full fine-tuning; (backbone, net, C class prompts, spatial, temporal tokens)."""
    size, off = SIZES[args.quick], set(row.get("off", ()))
    torch.manual_seed(0)
    name = size[row["backbone"]]
    model = (viclip if row["backbone"] == "viclip" else clip).build_random(name).to(device)
    if row.get("stream") == "bf16":
        bf16_stream(model)
    if row["kind"] == "msta":
        rank, blocks = size[row["setting"]]
        net = AblationMSTA(model, off=off, num_frames=args.frames, rank=rank, blocks=blocks)
        net.checkpoint_blocks = row.get("checkpointing", False)
    else:
        net = FullFineTune(model)
    prompts, spatial, temporal = (x.to(device) for x in ucf101_text(model.context_length))
    return model, net, prompts, spatial, temporal


def build_train_step(name, args):
    """The model, data and optimiser of one training row: (step function, facts about it including its
    analytic FLOPs, device). The step is train.py's: train.accumulate_step, then AdamW."""
    row = ROW[name]
    device, precision, autocast, B = setup(args, row)
    T, kind, off = args.frames, row["kind"], set(row.get("off", ()))
    model, net, prompts, spatial, temporal = build_model(row, args, device)
    C = len(prompts)
    if kind == "msta":
        trainable, total = adapters.parameter_counts(net)
    else:
        trainable = total = sum(p.numel() for p in model.parameters())
    R = model.visual.input_resolution
    videos = torch.randn(B, T, 3, R, R, device=device)
    labels = torch.randint(0, C, (B,), device=device)
    if kind != "vit":
        feats = cached_description_features(net, spatial, temporal, C, args.cache_dir, SIZES[args.quick][
            row["backbone"]])
    params = [p for p in net.parameters() if p.requires_grad]
    # train.py's optimiser; its state is created by the first (warm-up) step.
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    step_fn = train.TrainStep(net)
    if row.get("compiled"):
        step_fn = torch.compile(step_fn)

    def train_step():  # train.py's loop body, alpha = 1
        if "cache" in off:
            net._text_cache.clear()
        optimizer.zero_grad(set_to_none=True)
        targets = feats
        if "desc" in off:  # the descriptions re-encoded in every step, in the forward's precision
            with autocast:
                targets = tuple(description_features(net, per_class(x, C)) for x in (spatial, temporal))
        loss, _ = train.accumulate_step(step_fn, net, videos, labels, prompts, targets, 1.0, row.get("micro") or B,
                                        autocast, scaler)
        optimizer.step()
        return loss

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
    rank, blocks = SIZES[args.quick][row["setting"]]
    facts = dict(config=name, kind=kind, off=sorted(off), rank=rank if kind == "msta" else None,
                 blocks=list(blocks) if kind == "msta" else None, batch=B, frames=T, classes=C,
                 micro=row.get("micro") or B, checkpointing=bool(row.get("checkpointing")),
                 precision=precision, trainable_params=trainable, backbone_params=total,
                 flops_forward=fwd, flops_backward=bwd, flops=fwd + bwd, **extra)
    return (vit_step if kind == "vit" else train_step), facts, device


def train_worker(name, args):
    """One training row: time, memory, FLOPs and the best rate of its own ops."""
    t0 = time.perf_counter()
    step, facts, device = build_train_step(name, args)
    facts["setup_s"] = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # The first warm-up step under StepProbe: its memory and its ops. A compiled step runs its own kernels, which
    # the probe does not see: it is neither probed nor part of the ceiling.
    probe = contextlib.nullcontext(None) if ROW[name].get("compiled") else StepProbe()
    with probe:
        step()
    times = timed(step, max(0, args.warmup - 1), args.steps, device)
    out = dict(facts, time_s=statistics.median(times), times_s=times,
               flops_per_s=facts["flops"] / statistics.median(times), peak_bytes=getattr(probe, "peak", None),
               memory_measure="peak bytes of the tensors the first step allocated and held at once")
    if device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    t1 = time.perf_counter()
    out["ceiling"] = ceiling(probe.ops.values(), device, min_s=0.005 if args.quick else 0.02,
                             cache=args.cache_dir) if isinstance(probe, StepProbe) else {}
    out["ceiling_s"] = time.perf_counter() - t1
    return out


def memory_worker(name, args):
    """The memory table's rows of one backbone and setting: per precision (fp32, and bf16 where native) and with
    and without checkpointing, the peak tensor bytes of the two parts of train.py's step. `fixed`: the class text
    branch and L_CC, forward and backward, which a step runs once whatever its batch; `per_clip`: one video's
    forward and backward against those class features held fixed, as every micro-batch runs it; it scales with
    the videos (a batch is B such activations at once). The gradients are allocated before either, so neither
    counts them (the rule adds them, with AdamW's state)."""
    row = ROW[name]
    device = setup(args, row)[0]
    model, net, prompts, spatial, temporal = build_model(dict(row, kind="msta"), args, device)
    C, R, T = len(prompts), model.visual.input_resolution, args.frames
    s, t = cached_description_features(net, spatial, temporal, C, args.cache_dir, SIZES[args.quick][row["backbone"]])
    video, label = torch.randn(1, T, 3, R, R, device=device), torch.zeros(1, dtype=torch.long, device=device)
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    rows = []
    for precision in precisions_run(args, device):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with autocast:
            net.text_prefix(prompts)  # the cached prefix, as every step after train.py's first finds it
        for checkpointing in (False, True):
            net.checkpoint_blocks = checkpointing
            with StepProbe() as fixed:
                with autocast:
                    w = net.encode_text(prompts)                                       # (C, E)
                losses.consistency_loss(w, s, t).backward()
            with StepProbe() as clip_1:
                with autocast:
                    logits = train.TrainStep(net)(video, w.detach())                   # (1, C)
                losses.classification_loss(logits, label).backward()
            rows.append(dict(precision=precision, checkpointing=checkpointing, fixed_bytes=fixed.peak,
                             per_clip_bytes=clip_1.peak))
    trainable = sum(p.numel() for p in params)
    return dict(config=name, backbone=SIZES[args.quick][row["backbone"]], setting=row["setting"],
                rank=net.rank, blocks=[net.start + 1, net.stop], frames=T, rows=rows, trainable_params=trainable,
                weight_bytes=sum(p.numel() * p.element_size() for p in net.parameters()),
                state_bytes=3 * 4 * trainable)  # fp32 gradient and AdamW's two moments per trainable parameter


def precisions_run(args, device):
    """The precisions the memory rows measure: the run's, and bf16 where the device computes it natively."""
    main = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    return [main] + (["bf16"] if main != "bf16" and native_bf16(device)[0] else [])


def infer_worker(name, args):
    """Inference with MSTA few-shot: class text features computed once, then video features and logits."""
    device, precision, autocast, B = setup(args)
    T, (rank, blocks), size = args.frames, SIZES[args.quick]["few_shot"], SIZES[args.quick]
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
    with StepProbe() as probe:
        run(single, 1)
    t1 = timed(lambda: run(single, 1), max(0, args.warmup - 1), args.steps, device)
    f1, s1 = step_flops("infer", model, B, T, msta=net)[0], statistics.median(t1)
    out = dict(config=name, precision=precision, frames=T, rank=rank, blocks=list(blocks), peak_bytes=probe.peak,
               single=dict(videos=B, views=1, time_s=s1, times_s=t1, clips_per_s=B / s1, videos_per_s=B / s1,
                           flops=f1, flops_per_s=f1 / s1))
    if extended(args, device):  # the CPU runs the 15-view batch (1 video, 120 frames) once, warmed up above
        multi = torch.randn(Bm * V, T, 3, R, R, device=device)                 # (B*V, T, 3, H, W)
        with StepProbe() as probe_multi:
            tm = timed(lambda: run(multi, V), 0 if device.type == "cpu" else args.warmup,
                       1 if device.type == "cpu" else args.steps, device)
        fm, sm = step_flops("infer", model, Bm * V, T, msta=net)[0], statistics.median(tm)
        out["multi"] = dict(videos=Bm, views=V, time_s=sm, times_s=tm, clips_per_s=Bm * V / sm,
                            videos_per_s=Bm / sm, flops=fm, flops_per_s=fm / sm)
        probe.ops.update(probe_multi.ops)
    out["ceiling"] = ceiling(probe.ops.values(), device, min_s=0.005 if args.quick else 0.02,
                             cache=args.cache_dir)
    return out


WORKERS = dict(train=train_worker, memory=memory_worker, infer=infer_worker, data=loading.data_worker,
               loader=loading.loader_worker)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="benchmark.json", help="where the JSON results go (default: benchmark.json)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default: CPU 1, GPU 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first, at least 1 (default: CPU 1, GPU 3)")
    p.add_argument("--batch", type=int, default=None, help="videos per step (default: CPU 2, GPU 32)")
    p.add_argument("--frames", type=int, default=8, help="frames per video T (default: 8)")
    p.add_argument("--precision", default=None, choices=("bf16", "fp32"),
                   help="autocast dtype of the steps (default as train.py: bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--all", action="store_true", help="on a CPU, also the ablation rows and the 15-view inference "
                   "(a GPU and --quick run them)")
    p.add_argument("--compile", action="store_true", help="also the torch.compile row")
    p.add_argument("--only", nargs="+", default=None, metavar="ROW",
                   help=f"run only these rows or groups ({', '.join(sorted({r['group'] for r in ROWS}))})")
    p.add_argument("--markdown", action="store_true", help="also print the memory table as Markdown (docs/performance.md)")
    p.add_argument("--report", default=None, metavar="JSON", help="print the tables of a saved benchmark.json")
    p.add_argument("--quick", action="store_true", help="random-tiny models, 1 warm-up + 1 timed step, a 2-s video, "
                   "all in this process: seconds, for tests (its numbers mean nothing)")
    p.add_argument("--worker", default=None, choices=["descriptions", *ROW], help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)  # shared description features
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.steps = args.steps or (10 if cuda and not args.quick else 1)
    args.warmup = max(1, args.warmup or (3 if cuda and not args.quick else 1))  # the first runs under StepProbe
    return args


def selected(args, device):
    """The rows this run measures, and a line for each group it leaves out and why."""
    native, how = native_bf16(device)
    skipped, rows = [], []
    for row in ROWS:
        if args.only and row["name"] not in args.only and row["group"] not in args.only:
            continue
        if row["group"] == "bf16" and not native:
            why = f"bf16 rows: this {device.type.upper()} has no native bf16 ({how}); emulated, a step takes minutes"
        elif row["group"] == "ablation" and not extended(args, device) and not args.only:
            why = "ablation rows and 15-view inference: on a CPU only with --all (the all-off step alone is ~5 TFLOP)"
        elif row["group"] == "compile" and not args.compile and not args.only:
            why = None
        else:
            rows.append(row)
            continue
        if why and why not in skipped:
            skipped.append(why)
    return rows, skipped


def extended(args, device):
    """Whether the rows a CPU leaves out by default run: the ablation and the 15-view inference."""
    return device.type == "cuda" or args.all or args.quick


def run_worker(name, args, cache_dir):
    """Run one row in a fresh Python process; its result is the JSON line it prints last. --quick runs it in
    this process instead (a process start costs more than a tiny row)."""
    fn = FUNCTIONS[name]
    if args.quick:
        threads = torch.get_num_threads()
        try:
            return fn(name, argparse.Namespace(**{**vars(args), "cache_dir": cache_dir}))
        finally:
            torch.set_num_threads(threads)  # the data part sets 1
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--cache-dir", cache_dir,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--frames", str(args.frames)]
    cmd += ["--batch", str(args.batch)] * bool(args.batch) + ["--precision", args.precision] * bool(args.precision)
    cmd += ["--all"] * args.all
    proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(config=name, error=proc.stderr.strip()[-2000:] or f"exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:  # a child: one row, one JSON line
        print(json.dumps(FUNCTIONS[args.worker](args.worker, args)))
        return None
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
        print(table(results) + ("\n\n" + markdown(results) if args.markdown else ""))
        return results
    threads = torch.get_num_threads()
    try:
        return benchmark(args)
    finally:
        torch.set_num_threads(threads)  # --quick sets 1; a caller's process (the tests) gets its own back


def benchmark(args):
    """Run the selected rows, printing each as it finishes; then the table and target checks; write the JSON."""
    t_start, load = time.time(), OtherLoad()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _, precision, _, batch = setup(args)
    model_name = "random-tiny" if args.quick else "ViT-B/16"
    rows, skipped = selected(args, device)
    results = dict(machine=machine(), skipped=skipped, train={}, memory={}, settings=dict(
        model=model_name, device=device.type, precision=precision, batch=batch, frames=args.frames, classes=101,
        steps=args.steps, warmup=args.warmup, quick=args.quick, command=" ".join(["python"] + sys.argv)))
    print(f"benchmark: {len(rows)} rows on {device.type}, each in its own process"
          + "".join(f"\n  not run: {why}" for why in skipped), flush=True)
    size = SIZES[args.quick]
    with tempfile.TemporaryDirectory() as cache_dir:
        prepared = run_worker("descriptions", args, cache_dir)
        if "error" in prepared:
            raise RuntimeError(f"computing the description features failed:\n{prepared['error']}")
        for spec in rows:
            t0, name = time.time(), spec["name"]
            row = run_worker(name, args, cache_dir)
            if spec["worker"] == "train":
                r, b = size[spec["setting"]]
                row["label"] = spec["label"].format(r=r, b=f"{b[0]}-{b[1]}", model=model_name,
                                                    viclip=size["viclip"].replace("random-", ""))
                results["train"][name] = row
            elif spec["worker"] == "memory":
                results["memory"][name] = row
            else:
                results[{"infer": "inference"}.get(name, name)] = row
            print(progress(name, row, time.time() - t0), flush=True)
    results["ceiling"] = ceilings(results)
    for row in [*results["train"].values(), *(results.get("inference", {}).get(k, {}) for k in ("single", "multi"))]:
        c = results["ceiling"].get(row.get("precision") or results.get("inference", {}).get("precision"))
        if "flops_per_s" in row and c:
            row["utilisation"] = row["flops_per_s"] / c["flops_per_s"]
    results["targets"] = check(results)
    results["data_targets"] = loading.check_data(results) if "data" in results else []
    results["seconds"] = time.time() - t_start
    results["machine"]["other_processes_cpu_share"] = load.share()
    print("\n" + table(results) + ("\n\n" + markdown(results) if args.markdown else ""))
    with open(args.output, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.output} ({results['seconds']:.0f} s in all)")
    failed = [(k, v) for k, v in [*results["train"].items(), *results["memory"].items(),
                                  *((k, results[k]) for k in ("inference", "data", "loader") if k in results)]
              if "error" in v]
    for k, v in failed:
        print(f"\n{k} failed:\n{v['error']}", file=sys.stderr)
    if failed:
        sys.exit(1)
    return results


FUNCTIONS = {"descriptions": descriptions_worker, **{row["name"]: WORKERS[row["worker"]] for row in ROWS}}

if __name__ == "__main__":
    main()
