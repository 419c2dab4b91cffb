"""Evaluate trained MSTA adapters the way each protocol publishes its numbers.

`python evaluate.py --checkpoint runs/RUN [more runs] [--dataset ... --protocol ...]` rebuilds CLIP plus the
adapters from a checkpoint and the arguments saved in it (or from the run's adapter pair, adapters.json +
adapters.safetensors, checked against the backbone it names); `--checkpoint RUN --video PATH ...` prints the top-5
classes of your own videos instead; `--compare runs/*` prints one table of finished runs (harness/compare.py).
Follows the evaluation of "Efficient Transfer Learning for Video-language Foundation Models" (CVPR 2025), Sec. 4.1,
and the protocols it shares with ViFi-CLIP:
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
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

import adapters
import clip
import data
import models
import prompts
from harness import compare, report, runs, settings
from harness import precision as arithmetic  # the module; `precision` is the --precision value below
from video import batches, decode, layouts, transforms

# Test views (temporal clips x spatial crops) per dataset, as the paper and ViFi-CLIP test. A folder of the
# user's own videos has no published protocol: one centre view, the cheapest (--clips/--crops add more).
VIEWS = {"hmdb51": (10, 3), "ucf101": (5, 3), "k400": (4, 3), "k600": (4, 3), "ssv2": (2, 3), "synthetic": (1, 1),
         "folder": (1, 1)}
ZERO_SHOT_TARGETS = ("ucf101", "hmdb51", "k600")  # where a model trained on Kinetics-400 is tested


class FrozenCLIP(torch.nn.Module):
    """Zero-shot baseline with MSTA's evaluation interface, no adapters: the backbone's own video feature (CLIP:
    the frame mean of its image features; ViCLIP: its joint class token)."""

    def __init__(self, model):
        super().__init__()
        self.clip = model.eval()

    def encode_video(self, videos):
        return adapters.backbone_video_features(self.clip, videos)  # (B, T, 3, H, W) -> (B, E)

    def encode_text(self, tokens):
        return adapters.backbone_text_features(self.clip, tokens)  # (C, L) -> (C, E)

    def logits(self, video_features, text_features):
        return adapters.cosine_logits(video_features, text_features, self.clip.logit_scale)  # (B, C), as MSTA's


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
def evaluate(model, dataset, device, precision="fp32", batch_size=8, workers=0, log=None, keep=False,
             template=prompts.DEFAULT_TEMPLATE):
    """Top-1 / top-5 (%) of `model` on `dataset`, whose items are (V, T, 3, H, W) or (T, 3, H, W) videos.
    Under torchrun every rank scores its shard and the scores are gathered by video index. A video that cannot be
    read is left out of the metric, never replaced: videos = the number scored, skipped = those missing from disk
    plus those that failed to decode, over all ranks. keep=True adds "predictions", each video's scores as
    harness/report.py writes them. template: the class prompt the run trained with (--prompt)."""
    model.eval()
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    with runs.autocast_for(device, precision):
        # At the backbone's context length (77 when it does not say, e.g. a test's stand-in backbone).
        tokens = prompts.class_tokens(dataset.classnames, getattr(model.clip, "context_length", 77), template)
        text = model.encode_text(tokens.to(device))  # (C, E): once per label set
    sampler = Shard(len(dataset), rank, world)
    prefetch = None
    if getattr(dataset, "item_bytes", None):  # host memory: the batches in flight within batches.TEST_BUDGET
        batch_size, workers, prefetch = batches.test_loader_plan(dataset.item_bytes, batch_size, workers)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         prefetch_factor=prefetch, pin_memory=device.type == "cuda",
                                         collate_fn=collate_readable)
    scores, labels, scored, t0 = [], [], [], time.time()  # scored: the dataset indices of the rows of scores
    V = 1  # views per video, known once a batch is read
    for i, (videos, y, readable) in enumerate(shm_checked(loader)):
        batch = sampler.indices[i * batch_size:i * batch_size + len(readable)]  # in order: no shuffling
        scored += [index for index, ok in zip(batch, readable.tolist()) if ok]
        if videos is None:
            continue  # nothing readable in this batch
        videos = videos.to(device, non_blocking=True)
        if videos.dtype == torch.uint8:  # the loader's uint8 views, normalised here as training's clips are
            videos = transforms.normalize(videos, dataset.mean, dataset.std)
        if videos.dim() == 5:
            videos = videos.unsqueeze(1)                                  # (B, T, 3, H, W) -> (B, 1, T, 3, H, W)
        B, V = videos.shape[:2]
        with runs.autocast_for(device, precision):
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
        scored = sorted(i for p in parts for i in p[0])  # the order of the rows above
    top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices                # (n, 5)
    hit1 = (top5[:, 0] == labels).float()
    hit5 = (top5 == labels[:, None]).any(1).float()
    result = dict(top1=100 * hit1.mean().item(), top5=100 * hit5.mean().item(), videos=len(labels),
                  skipped=int(getattr(dataset, "missing", 0)) + unreadable)
    if keep:  # the summed softmaxes / V: the mean over views of each view's probabilities, ranked as scored
        result["predictions"] = report.predictions(dataset, scored, scores / V, top5, labels)
    return result


def shm_checked(loader):
    """Iterate a loader; shared memory running out (a worker's bus error, a full /dev/shm) becomes one line."""
    try:
        yield from loader
    except RuntimeError as e:
        if not batches.is_shm_exhaustion(e):
            raise
        raise batches.SharedMemoryError(batches.shm_advice(None, batches.shm_free())) from None


def dataset_name(dataset):
    return getattr(dataset, "name", type(dataset).__name__)


def harmonic_mean(a, b):
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def test_views(dataset, clips=None, crops=None):
    """(temporal clips, spatial crops) of the final test: the dataset's published views (VIEWS), or as given."""
    default = VIEWS[dataset]
    return clips or default[0], crops or default[1]


def test_sets(protocol, dataset, split, listed, final):
    """[(row name, dataset name, protocol, split, subset)] that the protocol tests; listed: from list files."""
    if listed and protocol != "base2novel":  # published list files: the one --test-list
        return [("test", dataset, "full", split, None)]
    if protocol == "base2novel":  # from lists: --test-list and --novel-list, each with its label CSV
        return [("base", dataset, "base2novel", split, "base"), ("novel", dataset, "base2novel", split, "novel")]
    if protocol == "zero-shot" and dataset in ZERO_SHOT_TARGETS:
        return [(f"split{s}", dataset, "zero-shot", s, None) for s in ((1, 2, 3) if final else (1,))]
    # few-shot, full, and zero-shot training on Kinetics-400 itself (a closed-set check of the training classes)
    return [(f"split{split}", dataset, "full" if protocol == "zero-shot" else protocol, split, None)]


def run_protocol(model, device, protocol, dataset, reader, root, lists, split, seed, frames, views, precision="fp32",
                 batch_size=8, workers=0, log=None, final=True, class_text="words", template=prompts.DEFAULT_TEMPLATE):
    """Test `model` as `protocol` prescribes on `dataset` (read by `reader` from `root`, with `lists` for the
    "list" reader), with views = (clips, crops) per video: test_views() for the final test, (1, 1) for the quick
    checks during training; class_text and template: the run's --class-text and --prompt. Returns {"rows": [...],
    "summary": {...}, "views": "CxK", "predictions": [...]}."""
    rows, predictions = [], []  # predictions: the final test's per-video scores, one per row (harness/report.py)
    for row, name, row_protocol, row_split, subset in test_sets(protocol, dataset, split, reader == "list", final):
        test_set = data.build_dataset(name if reader != "list" else "list", root, row_protocol, row_split, seed=seed,
                                      num_frames=frames, train=False, subset=subset, views=views,
                                      resolution=model.clip.visual.input_resolution,
                                      mean=getattr(model.clip, "mean", transforms.CLIP_MEAN),  # CLIP's unless it says
                                      std=getattr(model.clip, "std", transforms.CLIP_STD), class_text=class_text,
                                      defer_photometric=True, **lists)  # uint8 views, normalised on the device
        result = evaluate(model, test_set, device, precision, batch_size, workers, log, keep=final, template=template)
        if final:
            predictions.append(result.pop("predictions"))
            result["per_class"] = report.per_class(predictions[-1])
        rows.append(dict(row=row, dataset=name, split=row_split, subset=subset, classes=len(test_set.classnames),
                         **result))
        if log and final:  # the quick checks during training are reported in the epoch's line
            log(f"test {name} {row}: top1 {result['top1']:.2f} top5 {result['top5']:.2f} "
                f"({result['videos']} videos x {views[0] * views[1]} views, {result['skipped']} unreadable)")
    return dict(rows=rows, summary=summarize(protocol, rows), views=f"{views[0]}x{views[1]}",
                predictions=predictions)


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


def parse_args(argv=None):
    p = runs.Parser(description="Evaluate MSTA checkpoints (or zero-shot CLIP) by protocol, or classify your own "
                    "videos with a trained run.", epilog="Results go to <run>/eval-<dataset>-<protocol>/results."
                    "{md,json} for one run, runs/<dataset>-<protocol>-mean-of-N/ for several, runs/zero-shot-clip-"
                    "<clip>-<dataset>-<protocol>/ for --zero-shot-clip; --output changes that, and each test set's "
                    "predictions.csv and confusion.png go beside them. A folder holding results is never written "
                    "over unless --overwrite is given. --video only prints.")
    p.add_argument("--checkpoint", nargs="*", default=[], metavar="RUN", help="run folder(s), checkpoint.pt "
                   "file(s) or adapter pairs (adapters.json / adapters.safetensors, or a folder holding only them); "
                   "several (e.g. three seeds) are averaged as the protocol prescribes")
    p.add_argument("--video", nargs="+", default=None, metavar="PATH", help="classify these video files (or "
                   "frame folders) with the one --checkpoint run: its backbone, adapters and class names; prints "
                   "the top-5 classes of each with probabilities, using the test views of the run's dataset "
                   "(--clips/--crops change them)")
    p.add_argument("--zero-shot-clip", action="store_true", help="evaluate frozen CLIP, no adapters (baseline)")
    p.add_argument("--clip", default=None, help="with --zero-shot-clip: the backbone, CLIP or ViCLIP (default "
                   "ViT-B/16; e.g. ViCLIP-B/16 or a checkpoint file)")
    p.add_argument("--dataset", default=None, choices=data.DATASETS, help="test on this dataset (default: the "
                   "checkpoint's; ucf101 for --zero-shot-clip)")
    p.add_argument("--data-root", default=None, help="its root (default: the checkpoint's for the same dataset, "
                   "else data/<dataset>)")
    p.add_argument("--test-list", default=None, help="test on a published list file instead ('<path> <label>' "
                   "lines, ViFi-CLIP's format, e.g. ZS_split1_K600_eval.txt; paths found anywhere under --data-root)")
    p.add_argument("--labels-csv", default=None, help="the 'id,name' class list --test-list's labels index")
    p.add_argument("--protocol", default=None, choices=tuple(settings.PROTOCOLS), help="default: the checkpoint's "
                   "(full "
                   "for --zero-shot-clip); zero-shot tests ucf101 / hmdb51 / k600 on their 3 splits")
    p.add_argument("--precision", default=None, choices=arithmetic.PRECISIONS,
                   help="default: bf16 on a GPU that computes it natively (sm80+), fp16 on older GPUs, fp32 on the CPU")
    p.add_argument("--tf32", default="on", choices=("on", "off"), help="TF32 tensor cores for fp32 matmuls and "
                   "convolutions on GPUs that have them (sm80+)")
    p.add_argument("--split", type=int, default=None, choices=(1, 2, 3), help="official split (default: the "
                   "checkpoint's)")
    p.add_argument("--shots", type=runs.at_least(1), default=None, help="default: the checkpoint's")
    p.add_argument("--frames", type=runs.at_least(1), default=None, help="frames per clip (default: the checkpoint's)")
    p.add_argument("--clips", type=runs.at_least(1), default=None, help="temporal views per video (default: the "
                   "dataset's published test views, e.g. 5 for ucf101, 10 for hmdb51)")
    p.add_argument("--crops", type=runs.at_least(1), default=None, help="spatial views per video, 1 or 3 (default: 3, "
                   "the published test; 1 for synthetic and folder)")
    p.add_argument("--batch-size", type=runs.at_least(1), default=8, help="videos per test batch (each has clips x "
                   "crops views)")
    p.add_argument("--workers", type=runs.at_least(0), default=batches.default_workers(),
                   help="data loader processes (default: the CPU cores this process may use)")
    p.add_argument("--threads", type=runs.at_least(1), default=None, help="torch threads (default: the cores this "
                   "process may use minus the loader's share, see choose_threads)")
    p.add_argument("--output", default=None, help="where results.json/.md go (default: see below)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in the output folder")
    p.add_argument("--compare", nargs="+", default=None, metavar="RUN", help="print one table of these finished "
                   "run folders (e.g. runs/*): the settings that differ, and each test set's metrics; runs that "
                   "differ only in seed or split as mean ± std (harness/compare.py)")
    p.add_argument("--compare-output", default=None, metavar="FILE", help="where --compare writes its table "
                   f"(default: {compare.DEFAULT_OUTPUT}; a file it did not write is replaced only with --overwrite)")
    a = p.parse_args(argv)
    if a.compare is not None:
        if a.checkpoint or a.zero_shot_clip or a.video is not None:
            raise runs.UsageError("--compare reads finished run folders: give it without --checkpoint, --video or "
                                  "--zero-shot-clip")
        return a
    if not a.checkpoint and not a.zero_shot_clip:
        raise runs.UsageError("give --checkpoint RUN (or --zero-shot-clip for the CLIP baseline)")
    if a.clip is not None and not a.zero_shot_clip:
        raise runs.UsageError("--clip is for --zero-shot-clip; a checkpoint names its own CLIP")
    if a.video is not None and (len(a.checkpoint) != 1 or a.zero_shot_clip):
        raise runs.UsageError("--video classifies with one trained run: give exactly one --checkpoint RUN")
    if a.crops is not None and a.crops not in (1, 3):
        raise runs.UsageError(f"--crops {a.crops}: the test takes 1 (centre) or 3 (left, centre, right) crops")
    return a


def run_args(a, ckpt_args, device):
    """The settings one evaluation runs with: the checkpoint's, overridden by what evaluate.py was given."""
    # The class text and prompt the run trained with (checkpoints older than those settings: the defaults).
    args = argparse.Namespace(**{"prompt": prompts.DEFAULT_TEMPLATE, "class_text": "words", **ckpt_args})
    trained_on = args.dataset
    for key in ("dataset", "data_root", "protocol", "split", "shots", "frames", "clips", "crops"):
        if getattr(a, key) is not None:
            setattr(args, key, getattr(a, key))
    if (args.dataset != trained_on and a.data_root is None) or not getattr(args, "data_root", None):
        args.data_root = os.path.join("data", args.dataset)  # another dataset than trained on: its default
    if args.dataset != trained_on:  # another dataset's list files are not this one's
        args.train_list = args.test_list = args.labels_csv = args.novel_list = args.novel_labels_csv = None
    if a.test_list:  # one published list file, e.g. ViFi-CLIP's original ZS_split{1,2,3}_K600_eval.txt
        if not a.labels_csv:
            raise runs.UsageError("--test-list needs --labels-csv, the 'id,name' classes its labels index")
        args.train_list = args.novel_list = args.novel_labels_csv = None
        args.test_list, args.labels_csv = a.test_list, a.labels_csv
    if args.protocol == "zero-shot" and args.dataset not in ZERO_SHOT_TARGETS + ("k400", "synthetic"):
        raise runs.UsageError(f"--protocol zero-shot tests on {', '.join(ZERO_SHOT_TARGETS)} (or k400 itself), not "
                         f"{args.dataset}")
    if args.protocol == "base2novel" and args.dataset == "folder":
        raise runs.UsageError("--protocol base2novel needs published base classes; a folder dataset has none")
    try:  # by what the card computes natively (precision.py): bf16 from sm80, fp16 below, fp32 on the CPU
        args.precision = arithmetic.choose(a.precision, device.type == "cuda")
    except arithmetic.PrecisionError as e:
        raise runs.UsageError(str(e)) from None
    args.workers, args.eval_batch_size = a.workers, a.batch_size
    return args


@torch.no_grad()
def classify(model, classnames, paths, device, frames, views, precision="fp32", top=5,
             template=prompts.DEFAULT_TEMPLATE):
    """Print the top-`top` classes of each video, asked with the run's prompt `template`; returns the paths that
    could not be read (one line each)."""
    model.eval()
    with runs.autocast_for(device, precision):
        tokens = prompts.class_tokens(classnames, getattr(model.clip, "context_length", 77), template)
        text = model.encode_text(tokens.to(device))                                           # (C, E)
    reader_ = data.VideoDataset("video", [], classnames, frames, train=False,
                                resolution=model.clip.visual.input_resolution, views=views,
                                mean=getattr(model.clip, "mean", transforms.CLIP_MEAN),
                                std=getattr(model.clip, "std", transforms.CLIP_STD), defer_photometric=True)
    failed = []
    for path in paths:
        try:
            video = reader_.load(path)
        except decode.VideoError as e:
            print(f"error: {path}: cannot be read ({str(e).splitlines()[0]})", file=sys.stderr, flush=True)
            failed.append(path)
            continue
        video = video.reshape(-1, *video.shape[-4:]).to(device)   # (T, 3, r, r) or (V, T, 3, r, r) -> (V, T, 3, r, r)
        video = transforms.normalize(video, reader_.mean, reader_.std)  # uint8 -> float, on the device
        with runs.autocast_for(device, precision):
            feats = model.encode_video(video)                                            # (V, E)
        probs = model.logits(feats, text).float().softmax(-1).mean(0)                    # (V, C) -> (C,)
        p, idx = probs.topk(min(top, len(classnames)))
        print(f"{path}  ({views[0]}x{views[1]} views, {len(classnames)} classes)")
        for prob, c in zip(p.tolist(), idx.tolist()):
            print(f"  {100 * prob:5.1f}%  {classnames[c]}")
    return failed


def trained_msta(ckpt, device):
    """MSTA with a run's trained adapters: checkpoint.pt's on the backbone its arguments name, or an adapter
    pair's, checked against that backbone first (models.msta_from_pair)."""
    run = ckpt["args"]
    if "pair" in ckpt:
        return models.msta_from_pair(run["clip"], device, ckpt["pair"], ckpt["adapters"], ckpt["path"])
    model = models.build_msta(run["clip"], device, run["frames"], run["rank"], run["blocks"], run["scale"],
                              run["temporal"], run["seed"])
    model.load_trainable_state_dict(ckpt["adapters"])
    return model


def main(argv=None):
    a = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and (a.compare is not None or a.video is not None):
        raise runs.UsageError(f"{'--compare' if a.compare is not None else '--video'} runs in one process: "
                              "start it with python, not torchrun")
    if a.compare is not None:
        return compare.main(a.compare, a.compare_output, a.overwrite)
    # Under torchrun: every rank on its own GPU scores its shard of each test set (evaluate(), Shard), the scores
    # are gathered, and rank 0 alone writes the results.
    distributed, rank, world, device = runs.processes()
    arithmetic.set_tf32(a.tf32 == "on")
    if a.video is not None:
        missing = [v for v in a.video if not os.path.exists(v)]
        if missing:
            raise runs.UsageError(f"no such video: {', '.join(missing)}")
    # Every checkpoint is read (and every argument checked) before a model is built or a file written.
    plans = []  # (args, checkpoint or None) per run
    if a.zero_shot_clip:
        base = dict(dataset="ucf101", protocol="full", split=1, seed=0, shots=None, epochs=0, frames=8,
                    clip=a.clip or "ViT-B/16", data_root=None, output="zero-shot CLIP")
        plans.append((run_args(a, base, device), None))
    for path in a.checkpoint:
        ckpt = runs.read_checkpoint(path)
        plans.append((run_args(a, ckpt["args"], device), ckpt))
    if a.video is None:
        for args, _ in plans:  # each test set's layout, before any model is loaded (or downloaded)
            reader, lists = settings.data_source(args)
            data.class_names(reader, args.data_root, **lists)
    args = plans[0][0]
    threads = runs.choose_threads(a.workers, a.threads)
    log = runs.Logger(quiet=rank != 0)
    if a.video is not None:
        # The class names the run trained on (saved in its arguments); with --dataset, or from an older
        # checkpoint, the dataset's, read from its root.
        if getattr(args, "classnames", None) and a.dataset is None:
            classnames = list(args.classnames)
        else:
            reader, lists = settings.data_source(args)
            classnames = data.class_names(reader, args.data_root, args.class_text, **lists)
        default = VIEWS.get(args.dataset, (1, 1))
        views = (a.clips or default[0], a.crops or default[1])
        model = trained_msta(plans[0][1], device)
        if classify(model, classnames, a.video, device, args.frames, views, args.precision, template=args.prompt):
            sys.exit(2)
        return None
    # Never over the training run's own results.json: one run -> <run>/eval-<dataset>-<protocol>/.
    tag = f"{args.dataset}-{args.protocol}"
    if a.zero_shot_clip:
        output = os.path.join("runs", f"zero-shot-clip-{runs.backbone_tag(args.clip)}-{tag}")
    elif len(a.checkpoint) == 1:
        run_dir = a.checkpoint[0] if os.path.isdir(a.checkpoint[0]) else os.path.dirname(a.checkpoint[0])
        output = os.path.join(run_dir, f"eval-{tag}")
    else:
        output = os.path.join("runs", f"{tag}-mean-of-{len(a.checkpoint)}")
    output = a.output or output
    runs.check_output(output, overwrite=a.overwrite, files=("results.json", "results.md"))
    log(f"evaluate.py: {len(plans)} run(s) on {tag}, {device.type}"
        f"{f' x {world} processes' if distributed else ''}, {threads} thread(s)")
    log(arithmetic.describe(args.precision, a.tf32, device.type == "cuda"))
    rows, predictions = [], []
    for args, ckpt in plans:
        if ckpt is None:
            model = FrozenCLIP(models.load_backbone(args.clip).to(device))
        else:
            model = trained_msta(ckpt, device)
        reader, lists = settings.data_source(args)
        result = run_protocol(model, device, args.protocol, args.dataset, reader, args.data_root, lists, args.split,
                              args.seed, args.frames, test_views(args.dataset, args.clips, args.crops),
                              args.precision, args.eval_batch_size, args.workers, log, final=True,
                              class_text=args.class_text, template=args.prompt)
        for r in result["rows"]:
            r["run"] = getattr(args, "output", "zero-shot CLIP")
        rows += result["rows"]
        predictions += result["predictions"]
    args = plans[0][0]
    results = dict(rows=rows, summary=summarize(args.protocol, rows), views=result["views"],
                   predictions=predictions)
    if distributed:
        dist.destroy_process_group()
        if rank != 0:  # every rank holds the gathered results; rank 0 alone writes them
            return results
    runs.write_results(output, runs.result_record(
        results, args.dataset, args.protocol, args.shots, args.split, args.seed, args.epochs,
        getattr(args, "recipe", None), dict(checkpoints=a.checkpoint, zero_shot_clip=a.zero_shot_clip,
                                            evaluate_args=vars(a), run_args=vars(args),
                                            trainable_params=0 if a.zero_shot_clip
                                            else adapters.parameter_counts(model)[0])), log)
    runs.finished([("results table", os.path.join(output, "results.md")),
                   ("all numbers", os.path.join(output, "results.json"))] + report.write(output, results, log), log)
    return results


def run(argv=None):
    try:
        main(argv)
    except (runs.UsageError, runs.CheckpointError, data.DatasetError, clip.CLIPError, compare.CompareError,
            batches.SharedMemoryError) as e:
        runs.exit(str(e), 2)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written (results are written at the end of an evaluation)",
              file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # anything else on a rank: one line, and the other ranks stop (runs.exit)
        if batches.is_shm_exhaustion(e):
            runs.exit(batches.shm_advice(None, batches.shm_free()), 2)
        runs.exit(f"{runs.failure_line(e)}; nothing was written", 1)


if __name__ == "__main__":
    run()
