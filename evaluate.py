"""Evaluate trained MSTA adapters the way each protocol publishes its numbers.

`python evaluate.py --checkpoint runs/RUN [more runs] [--dataset ... --protocol ...]` rebuilds CLIP plus the
adapters from a checkpoint and the arguments saved in it; `--checkpoint RUN --video PATH ...` prints the top-5
classes of your own videos instead. Follows the evaluation of "Efficient Transfer Learning
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

# Test views (temporal clips x spatial crops) per dataset, as the paper and ViFi-CLIP test. A folder of the
# user's own videos has no published protocol: one centre view, the cheapest (--clips/--crops add more).
VIEWS = {"hmdb51": (10, 3), "ucf101": (5, 3), "k400": (4, 3), "k600": (4, 3), "ssv2": (2, 3), "synthetic": (1, 1),
         "folder": (1, 1)}
DATASETS = ("ucf101", "hmdb51", "k400", "k600", "ssv2", "synthetic", "folder")  # --dataset's choices
PROTOCOL_NAMES = ("few-shot", "base2novel", "zero-shot", "full")
ZERO_SHOT_TARGETS = ("ucf101", "hmdb51", "k600")  # where a model trained on Kinetics-400 is tested
# What a run folder holds; a folder holding any of these is a run, and is never written over by accident.
RUN_FILES = ("checkpoint.pt", "results.json", "results.md", "log.txt", "history.csv", "curves.png")


class UsageError(Exception):
    """A problem the user can fix from the command line: printed as one line, exit status 2."""


class CheckpointError(Exception):
    """A checkpoint that is missing or unreadable: one line for the user, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where X is the real default: not for None (per-protocol values say theirs)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (argparse's own prints the whole usage first), exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Logger:
    """Prints to the screen and to log.txt; quiet=True (ranks other than 0) prints nothing.

    Lines logged before open() are kept and written when the file opens: nothing is written into a run folder
    until the arguments and the data have been checked, yet log.txt still starts at the first line."""

    def __init__(self, path=None, append=False, quiet=False):
        self.file, self.pending = None, []
        self.quiet, self.tty, self.last = quiet, sys.stdout.isatty(), 0.0
        if path:
            self.open(path, append)

    def open(self, path, append=False):
        if not self.quiet:
            self.file = open(path, "a" if append else "w")
            self.file.writelines(line + "\n" for line in self.pending)
            self.file.flush()
        self.pending = []

    def __call__(self, message, screen=True):
        """screen=False: log.txt only (the full argument dump: too long for the screen, needed in the log)."""
        if self.quiet:
            return
        if screen:
            print(("\r\033[K" if self.tty else "") + message, flush=True)
        if self.file:
            self.file.write(message + "\n")
            self.file.flush()
        else:
            self.pending.append(message)

    def progress(self, message):
        """One rewritten line on a terminal; a plain line every 30 s in a log (a batch job's stdout)."""
        if self.quiet:
            return
        if self.tty:
            print("\r\033[K" + message, end="", flush=True)
        elif time.time() - self.last > 30:
            print(message, flush=True)
            self.last = time.time()


def choose_threads(workers, requested=None):
    """Set and return torch's intra-op thread count (--threads overrides).

    The rule: the cores this process may use, shared equally by the processes of this machine (torchrun's
    LOCAL_WORLD_SIZE), minus one core per loader worker, at least 1: main process threads + workers <= cores.
    Each worker decodes with one thread (torch gives DataLoader workers one), and OpenMP threads that wait for
    a descheduled sibling stall a whole matmul, so oversubscribed cores cost far more than idle ones (measured:
    60 training steps under load took 156 s with the default threads, 34 s with one thread per process). On the
    CPU the model step is much slower than loading its batch, so the workers mostly sleep there: the workers'
    share is capped at half the cores, and the model keeps the other half at least."""
    if requested is not None:
        torch.set_num_threads(requested)
        return requested
    if os.environ.get("OMP_NUM_THREADS"):  # the user (or a job scheduler) already chose: keep torch's reading
        return torch.get_num_threads()
    cores = max(1, data.usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    reserved = workers if torch.cuda.is_available() else min(workers, cores // 2)
    threads = max(1, cores - reserved)
    torch.set_num_threads(threads)
    return threads


def check_output(folder, resume=False, overwrite=False, files=RUN_FILES):
    """Refuse (one line) to write into a folder that already holds a run's files, unless --resume continues
    it or --overwrite replaces it. Reads only: call it before anything is written."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{folder} is a file, not a folder: choose another --output")
    if resume or overwrite or not os.path.isdir(folder):
        return
    found = [f for f in files if os.path.exists(os.path.join(folder, f))]
    if found:
        kind = "a finished run" if "results.json" in found else "a partial run"
        raise UsageError(f"{folder} already holds {kind} ({', '.join(found)}); nothing was changed. Use --resume "
                         "to continue it, --output DIR for a new folder, or --overwrite to replace it")


def clear_output(folder, files=RUN_FILES):
    """--overwrite: remove the old run's files (only those, and its eval-*/results.{json,md}), so that nothing
    stale is mixed with the new run. Anything else in the folder stays."""
    if not os.path.isdir(folder):
        return
    for f in files:
        if os.path.isfile(os.path.join(folder, f)):
            os.remove(os.path.join(folder, f))
    for d in os.listdir(folder):
        if d.startswith("eval-") and os.path.isdir(os.path.join(folder, d)):
            clear_output(os.path.join(folder, d), ("results.json", "results.md"))
            if not os.listdir(os.path.join(folder, d)):
                os.rmdir(os.path.join(folder, d))


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
        if log and final:  # the quick checks during training are reported in the epoch's line
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


def at_least(low):
    """argparse type: an integer >= low, else argparse's one-line error."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: must be at least {low}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def parse_args(argv=None):
    p = Parser(description="Evaluate MSTA checkpoints (or zero-shot CLIP) by protocol, or classify your own videos "
               "with a trained run.", epilog="Results go to <run>/eval-<dataset>-<protocol>/results.{md,json} for "
               "one run, runs/<dataset>-<protocol>-mean-of-N/ for several, runs/zero-shot-clip-<clip>-<dataset>-"
               "<protocol>/ for --zero-shot-clip; --output changes that. A folder holding results is never "
               "written over unless --overwrite is given. --video only prints.")
    p.add_argument("--checkpoint", nargs="*", default=[], metavar="RUN", help="run folder(s) or checkpoint.pt "
                   "file(s); several (e.g. three seeds) are averaged as the protocol prescribes")
    p.add_argument("--video", nargs="+", default=None, metavar="PATH", help="classify these video files (or "
                   "frame folders) with the one --checkpoint run: its backbone, adapters and class names; prints "
                   "the top-5 classes of each with probabilities, using the test views of the run's dataset "
                   "(--clips/--crops change them)")
    p.add_argument("--zero-shot-clip", action="store_true", help="evaluate frozen CLIP, no adapters (baseline)")
    p.add_argument("--clip", default=None, help="with --zero-shot-clip: the backbone, CLIP or ViCLIP (default "
                   "ViT-B/16; e.g. ViCLIP-B/16 or a checkpoint file)")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="test on this dataset (default: the "
                   "checkpoint's; ucf101 for --zero-shot-clip)")
    p.add_argument("--data-root", default=None, help="its root (default: the checkpoint's for the same dataset, "
                   "else data/<dataset>)")
    p.add_argument("--protocol", default=None, choices=PROTOCOL_NAMES, help="default: the checkpoint's (full for "
                   "--zero-shot-clip); zero-shot tests ucf101 / hmdb51 / k600 on their 3 splits")
    p.add_argument("--precision", default=None, choices=("bf16", "fp16", "fp32"),
                   help="default: bf16 on a GPU, fp32 on the CPU")
    p.add_argument("--split", type=int, default=None, choices=(1, 2, 3), help="official split (default: the "
                   "checkpoint's)")
    p.add_argument("--shots", type=at_least(1), default=None, help="default: the checkpoint's")
    p.add_argument("--frames", type=at_least(1), default=None, help="frames per clip (default: the checkpoint's)")
    p.add_argument("--clips", type=at_least(1), default=None, help="temporal views per video (default: the "
                   "dataset's published test views, e.g. 5 for ucf101, 10 for hmdb51)")
    p.add_argument("--crops", type=at_least(1), default=None, help="spatial views per video, 1 or 3 (default: 3, "
                   "the published test; 1 for synthetic and folder)")
    p.add_argument("--batch-size", type=at_least(1), default=8, help="videos per test batch (each has clips x "
                   "crops views)")
    p.add_argument("--workers", type=at_least(0), default=data.default_workers(),
                   help="data loader processes (default: the CPU cores this process may use)")
    p.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: the cores this "
                   "process may use minus the loader's share, see choose_threads)")
    p.add_argument("--output", default=None, help="where results.json/.md go (default: see below)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in the output folder")
    a = p.parse_args(argv)
    if not a.checkpoint and not a.zero_shot_clip:
        raise UsageError("give --checkpoint RUN (or --zero-shot-clip for the CLIP baseline)")
    if a.clip is not None and not a.zero_shot_clip:
        raise UsageError("--clip is for --zero-shot-clip; a checkpoint names its own CLIP")
    if a.video is not None and (len(a.checkpoint) != 1 or a.zero_shot_clip):
        raise UsageError("--video classifies with one trained run: give exactly one --checkpoint RUN")
    if a.crops is not None and a.crops not in (1, 3):
        raise UsageError(f"--crops {a.crops}: the test takes 1 (centre) or 3 (left, centre, right) crops")
    return a


def run_args(a, ckpt_args, device):
    """The settings one evaluation runs with: the checkpoint's, overridden by what evaluate.py was given."""
    args = argparse.Namespace(**ckpt_args)
    trained_on = args.dataset
    for key in ("dataset", "data_root", "protocol", "split", "shots", "frames", "clips", "crops"):
        if getattr(a, key) is not None:
            setattr(args, key, getattr(a, key))
    if (args.dataset != trained_on and a.data_root is None) or not getattr(args, "data_root", None):
        args.data_root = os.path.join("data", args.dataset)  # another dataset than trained on: its default
    if args.dataset != trained_on:  # another dataset's list files are not this one's
        args.train_list = args.test_list = args.labels_csv = args.novel_list = args.novel_labels_csv = None
    if args.protocol == "zero-shot" and args.dataset not in ZERO_SHOT_TARGETS + ("k400", "synthetic"):
        raise UsageError(f"--protocol zero-shot tests on {', '.join(ZERO_SHOT_TARGETS)} (or k400 itself), not "
                         f"{args.dataset}")
    if args.protocol == "base2novel" and args.dataset == "folder":
        raise UsageError("--protocol base2novel needs published base classes; a folder dataset has none")
    args.precision = a.precision or ("bf16" if device.type == "cuda" else "fp32")
    args.workers, args.eval_batch_size = a.workers, a.batch_size
    return args


def video_label_set(args, explicit_dataset):
    """The class names a run answers with: the ones it trained on (saved in its arguments since this version),
    or, for --dataset or an older checkpoint, the dataset's (read from its root)."""
    if getattr(args, "classnames", None) and not explicit_dataset:
        return list(args.classnames)
    return data.class_names(reader(args), args.data_root, **lists(args))


@torch.no_grad()
def classify(model, args, classnames, paths, device, views, top=5):
    """Print the top-`top` classes of each video; returns the paths that could not be read (one line each)."""
    model.eval()
    with autocast_for(device, args.precision):
        tokens = class_tokens(classnames, getattr(model.clip, "context_length", 77))
        text = model.encode_text(tokens.to(device))                                           # (C, E)
    reader_ = data.VideoDataset("video", [], classnames, args.frames, train=False,
                                resolution=model.clip.visual.input_resolution, views=views,
                                mean=getattr(model.clip, "mean", data.CLIP_MEAN),
                                std=getattr(model.clip, "std", data.CLIP_STD))
    failed = []
    for path in paths:
        try:
            video = reader_.load(path)
        except data.VideoError as e:
            print(f"error: {path}: cannot be read ({str(e).splitlines()[0]})", file=sys.stderr, flush=True)
            failed.append(path)
            continue
        video = video.reshape(-1, *video.shape[-4:]).to(device)   # (T, 3, r, r) or (V, T, 3, r, r) -> (V, T, 3, r, r)
        with autocast_for(device, args.precision):
            feats = model.encode_video(video)                                            # (V, E)
        probs = model.logits(feats, text).float().softmax(-1).mean(0)                    # (V, C) -> (C,)
        p, idx = probs.topk(min(top, len(classnames)))
        print(f"{path}  ({views[0]}x{views[1]} views, {len(classnames)} classes)")
        for prob, c in zip(p.tolist(), idx.tolist()):
            print(f"  {100 * prob:5.1f}%  {classnames[c]}")
    return failed


def finished(paths, log):
    """The last lines of a command: where its files are."""
    width = max(len(name) for name, _ in paths)
    log("\n".join(["", "files:"] + [f"  {name + ':':<{width + 1}} {path}" for name, path in paths]))


def main(argv=None):
    a = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.video is not None:
        missing = [v for v in a.video if not os.path.exists(v)]
        if missing:
            raise UsageError(f"no such video: {', '.join(missing)}")
    # Every checkpoint is read (and every argument checked) before a model is built or a file written.
    plans = []  # (args, checkpoint or None) per run
    if a.zero_shot_clip:
        base = dict(dataset="ucf101", protocol="full", split=1, seed=0, shots=None, epochs=0, frames=8,
                    clip=a.clip or "ViT-B/16", data_root=None, output="zero-shot CLIP")
        plans.append((run_args(a, base, device), None))
    for path in a.checkpoint:
        ckpt = read_checkpoint(path)
        plans.append((run_args(a, ckpt["args"], device), ckpt))
    if a.video is None:
        for args, _ in plans:  # each test set's layout, before any model is loaded (or downloaded)
            data.class_names(reader(args), args.data_root, **lists(args))
    args = plans[0][0]
    threads = choose_threads(a.workers, a.threads)
    log = Logger()
    if a.video is not None:
        classnames = video_label_set(args, a.dataset is not None)
        default = VIEWS.get(args.dataset, (1, 1))
        views = (a.clips or default[0], a.crops or default[1])
        model = build_model(args, device)
        model.load_trainable_state_dict(plans[0][1]["adapters"])
        if classify(model, args, classnames, a.video, device, views):
            sys.exit(2)
        return None
    # Never over the training run's own results.json: one run -> <run>/eval-<dataset>-<protocol>/.
    tag = f"{args.dataset}-{args.protocol}"
    if a.zero_shot_clip:
        output = os.path.join("runs", f"zero-shot-clip-{backbone_tag(args.clip)}-{tag}")
    elif len(a.checkpoint) == 1:
        run_dir = os.path.dirname(a.checkpoint[0]) if a.checkpoint[0].endswith(".pt") else a.checkpoint[0]
        output = os.path.join(run_dir, f"eval-{tag}")
    else:
        output = os.path.join("runs", f"{tag}-mean-of-{len(a.checkpoint)}")
    output = a.output or output
    check_output(output, overwrite=a.overwrite, files=("results.json", "results.md"))
    log(f"evaluate.py: {len(plans)} run(s) on {tag}, {device.type}, {threads} thread(s)")
    rows = []
    for args, ckpt in plans:
        if ckpt is None:
            model = FrozenCLIP(load_backbone(args.clip).to(device))
        else:
            model = build_model(args, device)
            model.load_trainable_state_dict(ckpt["adapters"])
        result = run_protocol(model, args, device, log=log, final=True)
        for r in result["rows"]:
            r["run"] = getattr(args, "output", "zero-shot CLIP")
        rows += result["rows"]
    args = plans[0][0]
    results = dict(rows=rows, summary=summarize(args.protocol, rows), views=result["views"])
    write_results(output, result_record(args, results, dict(
        checkpoints=a.checkpoint, zero_shot_clip=a.zero_shot_clip, evaluate_args=vars(a), run_args=vars(args),
        trainable_params=0 if a.zero_shot_clip else adapters.parameter_counts(model)[0])), log)
    finished([("results table", os.path.join(output, "results.md")),
              ("all numbers", os.path.join(output, "results.json"))], log)
    return results


def backbone_tag(name):
    """A CLIP name or checkpoint path as a folder-name part: "ViT-B/16" -> "ViT-B-16", "/x/clip_small.pt" ->
    "clip_small"."""
    if name not in clip.available_models() and not name.startswith(("random-", "ViCLIP-")):
        name = os.path.splitext(os.path.basename(name))[0]  # a checkpoint file: its name
    return name.replace("/", "-").replace("@", "-")


def run(argv=None):
    try:
        main(argv)
    except (UsageError, CheckpointError, data.DatasetError, clip.CLIPError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written (results are written at the end of an evaluation)",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run()
