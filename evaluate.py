"""Evaluate trained MSTA adapters the way each protocol publishes its numbers.

`python evaluate.py --checkpoint runs/RUN [more runs] [--dataset ... --protocol ...]` rebuilds CLIP plus the
adapters from a checkpoint and the arguments saved in it. Follows the evaluation of "Efficient Transfer Learning
for Video-language Foundation Models" (CVPR 2025), Sec. 4.1, and the protocols it shares with ViFi-CLIP:
  - multi-view test: the softmax of each view's logits is summed over views; views per dataset in VIEWS;
  - few-shot / full: top-1 and top-5 on the test split (several checkpoints, e.g. seeds, are averaged);
  - base-to-novel: base and novel classes tested separately, each against its own label set; base, novel and
    their harmonic mean, averaged over the checkpoints given (the three seeds);
  - zero-shot: UCF101 and HMDB51 on all classes of each of the three official test splits, Kinetics-600 on each
    of its three 160-class splits; mean and standard deviation over the three.
Always the LAST epoch's weights: no epoch is ever picked by its test accuracy.

Shape legend: B videos, V views (clips x crops), T frames, C classes, E embedding.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

import adapters
import clip
import data
import viclip

# Test views (temporal clips x spatial crops) per dataset, as the paper and ViFi-CLIP test.
VIEWS = {"hmdb51": (10, 3), "ucf101": (5, 3), "k400": (4, 3), "k600": (4, 3), "ssv2": (2, 3), "synthetic": (1, 1)}
ZERO_SHOT_TARGETS = ("ucf101", "hmdb51", "k600")  # where a model trained on Kinetics-400 is tested


class UsageError(Exception):
    """A problem the user can fix from the command line: printed as one line, exit status 2."""


class CheckpointError(Exception):
    """A checkpoint that is missing or unreadable: one line for the user, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (argparse's own prints the whole usage first), exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Logger:
    """Prints to the screen and, given a path, to log.txt; quiet=True (ranks other than 0) prints nothing."""

    def __init__(self, path=None, append=False, quiet=False):
        self.file = open(path, "a" if append else "w") if path and not quiet else None
        self.quiet, self.tty, self.last = quiet, sys.stdout.isatty(), 0.0

    def __call__(self, message):
        if self.quiet:
            return
        print(("\r\033[K" if self.tty else "") + message, flush=True)
        if self.file:
            self.file.write(message + "\n")
            self.file.flush()

    def progress(self, message):
        """One rewritten line on a terminal; a plain line every 30 s in a log (a batch job's stdout)."""
        if self.quiet:
            return
        if self.tty:
            print("\r\033[K" + message, end="", flush=True)
        elif time.time() - self.last > 30:
            print(message, flush=True)
            self.last = time.time()


def hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def autocast_for(device, precision):
    """torch.autocast for --precision; fp32 disables it. Adapters stay fp32 either way (autocast casts per op)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


def read_checkpoint(path):
    """A train.py checkpoint: plain tensors and values, so weights_only=True (no code runs on load)."""
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path} (expected a run folder or its checkpoint.pt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holds objects weights_only refuses
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "adapters" not in ckpt or "args" not in ckpt:
        raise CheckpointError(f"{path} is not a train.py checkpoint (no 'adapters' and 'args' entries)")
    return ckpt


def load_backbone(name):
    """The frozen backbone for --clip: ViCLIP (viclip.py) for its names, random-ViCLIP-* and files holding ViCLIP's
    tensor names; otherwise OpenAI CLIP (clip.py): its names, random-* and its checkpoint files."""
    if viclip.handles(name):
        return viclip.load(name)[0]
    return clip.build_random(name) if name.startswith("random-") else clip.load(name)[0]


def build_model(args, device):
    """The backbone (pretrained, or random for offline demos) plus MSTA adapters, on `device`."""
    model = load_backbone(args.clip)
    torch.manual_seed(args.seed)  # adapter initialisation: the same on every rank and on resume
    try:
        return adapters.MSTA(model.to(device), num_frames=args.frames, rank=args.rank, blocks=tuple(args.blocks),
                             scale=args.scale, temporal=args.temporal)
    except ValueError as e:  # e.g. --blocks 8-12 on a 4-block model
        raise UsageError(f"{e} (--clip {args.clip})") from None


def class_tokens(classnames, context_length=77):
    """The trainable branch's input: the template "a video of {class}." for each class -> (C, L), L the model's
    context length (77 for CLIP, 32 for ViCLIP); a longer class name is cut, keeping the end token."""
    return clip.tokenize([f"a video of {name}." for name in classnames], context_length, truncate=True)


class FrozenCLIP(torch.nn.Module):
    """Zero-shot baseline with MSTA's evaluation interface, no adapters: the backbone's own video feature (CLIP:
    the frame mean of its image features; ViCLIP: its joint class token)."""

    def __init__(self, model):
        super().__init__()
        self.clip = model.eval()

    def encode_video(self, videos):
        return self.clip.encode_video(videos)  # (B, T, 3, H, W) -> (B, E)

    def encode_text(self, tokens):
        return self.clip.encode_text(tokens)

    def logits(self, video_features, text_features):
        v, w = F.normalize(video_features.float(), dim=-1), F.normalize(text_features.float(), dim=-1)
        return self.clip.logit_scale.exp().float() * v @ w.T  # (B, E) @ (E, C) -> (B, C)


class Shard(torch.utils.data.Sampler):
    """Rank r of N takes videos r, r+N, ...: every test video exactly once over all ranks, no padding."""

    def __init__(self, n, rank, world):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def collate_readable(batch):
    """(videos, labels, readable) of a test batch: the default collation of its readable items, and a bool per item
    saying which those are (an unreadable test video comes as (None, label), data.VideoDataset)."""
    readable = torch.tensor([v is not None for v, _ in batch])
    items = [item for item in batch if item[0] is not None]
    return (*(torch.utils.data.default_collate(items) if items else (None, None)), readable)


@torch.no_grad()
def evaluate(model, dataset, device, precision="fp32", batch_size=8, workers=0, log=None):
    """Top-1 / top-5 (%) of `model` on `dataset`, whose items are (V, T, 3, H, W) or (T, 3, H, W) videos.
    Under torchrun every rank scores its shard and the scores are gathered by video index. A video that cannot be
    read is left out of the metric, never replaced: videos = the number scored, skipped = those missing from disk
    plus those that failed to decode, over all ranks."""
    model.eval()
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    with autocast_for(device, precision):
        # At the backbone's context length (77 when it does not say, e.g. a test's stand-in backbone).
        tokens = class_tokens(dataset.classnames, getattr(model.clip, "context_length", 77))
        text = model.encode_text(tokens.to(device))  # (C, E): once per label set
    sampler = Shard(len(dataset), rank, world)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         collate_fn=collate_readable)
    scores, labels, scored, t0 = [], [], [], time.time()  # scored: the dataset indices of the rows of scores
    for i, (videos, y, readable) in enumerate(loader):
        batch = sampler.indices[i * batch_size:i * batch_size + len(readable)]  # in order: no shuffling
        scored += [index for index, ok in zip(batch, readable.tolist()) if ok]
        if videos is None:
            continue  # nothing readable in this batch
        videos = videos.to(device, non_blocking=True)
        if videos.dim() == 5:
            videos = videos.unsqueeze(1)                                  # (B, T, 3, H, W) -> (B, 1, T, 3, H, W)
        B, V = videos.shape[:2]
        with autocast_for(device, precision):
            feats = model.encode_video(videos.flatten(0, 1))              # (B*V, T, 3, H, W) -> (B*V, E)
        probs = model.logits(feats, text).softmax(-1).view(B, V, -1)      # (B*V, C) -> (B, V, C)
        scores.append(probs.sum(1).cpu())                                 # (B, C): summed over views
        labels.append(y)
        if log:
            log.progress(f"test {dataset_name(dataset)}: {min((i + 1) * batch_size, len(sampler))}/{len(sampler)}"
                         f" videos, {(i + 1) * batch_size * V / (time.time() - t0):.1f} views/s")
    scores = torch.cat(scores) if scores else torch.zeros(0, len(dataset.classnames))
    labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    unreadable = len(sampler) - len(scored)
    if distributed:  # gather (indices, scores, labels, unreadable) from every rank; put them back in dataset order
        parts = [None] * world
        dist.all_gather_object(parts, (scored, scores, labels, unreadable))
        order = torch.tensor([i for p in parts for i in p[0]], dtype=torch.long).argsort()
        scores, labels = torch.cat([p[1] for p in parts])[order], torch.cat([p[2] for p in parts])[order]
        unreadable = sum(p[3] for p in parts)
    top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices                # (n, 5)
    hit1 = (top5[:, 0] == labels).float()
    hit5 = (top5 == labels[:, None]).any(1).float()
    return dict(top1=100 * hit1.mean().item(), top5=100 * hit5.mean().item(), videos=len(labels),
                skipped=int(getattr(dataset, "missing", 0)) + unreadable)


def reader(args, name=None):
    """data.py's reader: "list" when published list files were given, else the dataset itself."""
    return "list" if getattr(args, "train_list", None) or getattr(args, "test_list", None) else name or args.dataset


def lists(args):
    """The list-file arguments for the "list" reader (none for the official layouts)."""
    keys = ("train_list", "test_list", "labels_csv", "novel_list", "novel_labels_csv")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None)} if reader(args) == "list" else {}


def dataset_name(dataset):
    return getattr(dataset, "name", type(dataset).__name__)


def harmonic_mean(a, b):
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def test_sets(args, views, final):
    """[(row name, dataset name, protocol, split, subset)] that the protocol tests."""
    if reader(args) == "list" and args.protocol != "base2novel":  # published list files: the one --test-list
        return [("test", args.dataset, "full", args.split, None)]
    if args.protocol == "base2novel":  # from lists: --test-list and --novel-list, each with its label CSV
        return [("base", args.dataset, "base2novel", args.split, "base"),
                ("novel", args.dataset, "base2novel", args.split, "novel")]
    if args.protocol == "zero-shot" and args.dataset in ZERO_SHOT_TARGETS:
        return [(f"split{s}", args.dataset, "zero-shot", s, None) for s in ((1, 2, 3) if final else (1,))]
    # few-shot, full, and zero-shot training on Kinetics-400 itself (a closed-set check of the training classes)
    protocol = "full" if args.protocol == "zero-shot" else args.protocol
    return [(f"split{args.split}", args.dataset, protocol, args.split, None)]


def run_protocol(model, args, device, views=None, log=None, final=True):
    """Test `model` as args.protocol prescribes. views=None: the dataset's published views (VIEWS, overridden
    by --clips/--crops); (1, 1) for the quick checks during training. Returns {"rows": [...], "summary": {...}}."""
    if views is None:
        default = VIEWS[args.dataset]
        views = (getattr(args, "clips", None) or default[0], getattr(args, "crops", None) or default[1])
    rows = []
    for row, name, protocol, split, subset in test_sets(args, views, final):
        dataset = data.build_dataset(reader(args, name), args.data_root, protocol, split, seed=args.seed,
                                     num_frames=args.frames, train=False, subset=subset, views=views,
                                     resolution=model.clip.visual.input_resolution,
                                     mean=getattr(model.clip, "mean", data.CLIP_MEAN),  # CLIP's unless it says
                                     std=getattr(model.clip, "std", data.CLIP_STD), **lists(args))
        result = evaluate(model, dataset, device, args.precision, getattr(args, "eval_batch_size", 8),
                          args.workers, log)
        rows.append(dict(row=row, dataset=name, split=split, subset=subset, classes=len(dataset.classnames),
                         **result))
        if log:
            log(f"test {name} {row}: top1 {result['top1']:.2f} top5 {result['top5']:.2f} "
                f"({result['videos']} videos x {views[0] * views[1]} views, {result['skipped']} unreadable)")
    return dict(rows=rows, summary=summarize(args.protocol, rows), views=f"{views[0]}x{views[1]}")


def summarize(protocol, rows):
    """The protocol's published aggregate of the rows (one row per test set and per checkpoint)."""
    mean = lambda key, rs: statistics.fmean(r[key] for r in rs)
    if protocol == "base2novel":
        base = [r for r in rows if r["row"] == "base"]
        novel = [r for r in rows if r["row"] == "novel"]
        b, n = mean("top1", base), mean("top1", novel)
        # As CoOp and ViFi-CLIP tables: HM of the seed-averaged base and novel accuracies.
        return dict(base=b, novel=n, hm=harmonic_mean(b, n), top1=b, top5=mean("top5", base), runs=len(base))
    top1 = [r["top1"] for r in rows]
    summary = dict(top1=statistics.fmean(top1), top5=mean("top5", rows), runs=len(rows))
    if protocol == "zero-shot" and len(rows) > 1:
        summary["top1_std"] = statistics.pstdev(top1)  # population std over the three splits
    return summary


def write_results(folder, results, log=None):
    """results.json (everything) and results.md (the table a reader wants) in `folder`."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    s = results["summary"]
    lines = [f"# {results['dataset']} -- {results['protocol']}", "",
             f"Views per video: {results['views']}. Weights of the last epoch; no epoch was selected on the "
             "test set. videos: scored; unreadable: missing or undecodable, left out of the metric.", "",
             "| test set | dataset | split | classes | videos | unreadable | top-1 | top-5 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['row']} | {r['dataset']} | {r['split']} | {r['classes']} | {r['videos']} | "
                     f"{r.get('skipped', 0)} | {r['top1']:.2f} | {r['top5']:.2f} |")
    lines.append("")
    if results["protocol"] == "base2novel":
        lines.append(f"**base {s['base']:.2f}, novel {s['novel']:.2f}, harmonic mean {s['hm']:.2f}** "
                     f"(mean over {s['runs']} run(s); HM of the mean base and novel accuracies)")
    elif "top1_std" in s:
        lines.append(f"**top-1 {s['top1']:.2f} +- {s['top1_std']:.2f}** (mean and population std over "
                     f"{s['runs']} splits)")
    else:
        lines.append(f"**top-1 {s['top1']:.2f}, top-5 {s['top5']:.2f}** (mean over {s['runs']} run(s))")
    with open(os.path.join(folder, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if log:
        log("\n".join(lines))


def result_record(args, results, extra=None):
    """The flat fields every results.json carries, plus the rows and summary."""
    record = dict(dataset=args.dataset, protocol=args.protocol, shots=args.shots, split=args.split,
                  seed=args.seed, epochs=args.epochs, views=results["views"], **results["summary"])
    record.update(rows=results["rows"], summary=results["summary"], **(extra or {}))
    return record


def main(argv=None):
    p = Parser(description="Evaluate MSTA checkpoints (or zero-shot CLIP) by protocol.")
    p.add_argument("--checkpoint", nargs="*", default=[], help="run folder(s) or checkpoint.pt file(s); several "
                   "(e.g. three seeds) are averaged as the protocol prescribes")
    p.add_argument("--zero-shot-clip", action="store_true", help="evaluate frozen CLIP, no adapters (baseline)")
    p.add_argument("--clip", default=None, help="with --zero-shot-clip: the backbone, CLIP or ViCLIP (default "
                   "ViT-B/16; e.g. ViCLIP-B/16 or a checkpoint file)")
    for name in ("--dataset", "--data-root", "--protocol", "--precision"):
        p.add_argument(name, default=None, help="default: as in the checkpoint")
    for name in ("--split", "--shots", "--frames", "--clips", "--crops"):
        p.add_argument(name, type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8, help="videos per test batch (each has clips x crops views)")
    p.add_argument("--workers", type=int, default=data.default_workers(),
                   help="data loader processes (default: the CPU cores this process may use)")
    p.add_argument("--output", default=None, help="where results.json/.md go (default: the first checkpoint's "
                   "folder, or runs/zero-shot-clip-<dataset>)")
    a = p.parse_args(argv)
    if not a.checkpoint and not a.zero_shot_clip:
        raise CheckpointError("give --checkpoint RUN (or --zero-shot-clip for the CLIP baseline)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = []  # (args, model) per checkpoint
    if a.zero_shot_clip:
        args = argparse.Namespace(dataset=a.dataset or "ucf101", protocol=a.protocol or "full", split=1, seed=0,
                                  shots=None, epochs=0, frames=8, clip=a.clip or "ViT-B/16", data_root=None)
        runs.append((args, FrozenCLIP(load_backbone(args.clip).to(device))))
    for path in a.checkpoint:
        ckpt = read_checkpoint(path)
        args = argparse.Namespace(**ckpt["args"])
        model = build_model(args, device)
        model.load_trainable_state_dict(ckpt["adapters"])
        runs.append((args, model))
    rows, log = [], Logger()
    for args, model in runs:
        for key in ("dataset", "data_root", "protocol", "split", "shots", "frames", "clips", "crops"):
            if getattr(a, key) is not None:
                setattr(args, key, getattr(a, key))
        if (a.dataset is not None and a.data_root is None) or not args.data_root:
            args.data_root = os.path.join("data", args.dataset)  # another dataset than trained on: its default
        args.precision = a.precision or ("bf16" if device.type == "cuda" else "fp32")
        args.workers, args.eval_batch_size = a.workers, a.batch_size
        result = run_protocol(model, args, device, log=log, final=True)
        for r in result["rows"]:
            r["run"] = getattr(args, "output", "zero-shot CLIP")
        rows += result["rows"]
    args = runs[0][0]
    results = dict(rows=rows, summary=summarize(args.protocol, rows), views=result["views"])
    # Never over the training run's own results.json: one run -> <run>/eval-<dataset>-<protocol>/.
    tag = f"{args.dataset}-{args.protocol}"
    if a.zero_shot_clip:
        output = os.path.join("runs", f"zero-shot-clip-{tag}")
    elif len(a.checkpoint) == 1:
        run_dir = os.path.dirname(a.checkpoint[0]) if a.checkpoint[0].endswith(".pt") else a.checkpoint[0]
        output = os.path.join(run_dir, f"eval-{tag}")
    else:
        output = os.path.join("runs", f"{tag}-mean-of-{len(a.checkpoint)}")
    output = a.output or output
    write_results(output, result_record(args, results, dict(
        checkpoints=a.checkpoint, zero_shot_clip=a.zero_shot_clip,
        trainable_params=0 if a.zero_shot_clip else adapters.parameter_counts(runs[-1][1])[0])), log)


def run(argv=None):
    try:
        main(argv)
    except (UsageError, CheckpointError, data.DatasetError, clip.CLIPError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
