"""Train MSTA's adapters on one protocol: `python train.py --dataset ucf101 --shots 4`.

Follows the training recipe of "Efficient Transfer Learning for Video-language Foundation Models" (CVPR 2025),
Sec. 4.1 "Implementation details" and its released training logs: AdamW (betas 0.9, 0.98), lr 1e-3, weight decay
1e-3, 5 warm-up epochs then cosine decay to 1e-5, global batch 32, 8 frames, loss L_CE + alpha L_CC (losses.py).
The optimiser and schedule defaults below are the paper's; the model defaults are not: OpenAI CLIP ViT-B/16 with
--temporal attn is this project's own design, where the paper's runs use ViCLIP-B/16 with the temporal
convolution, r 128 in blocks 8-12, seed 2048 and fp32. `--recipe paper` sets exactly the authors' logged
configuration (recipe.py, protocols.json "recipes"); PROTOCOLS holds the few numbers that change per protocol;
`--print-config` shows every value a command resolves to.

The loop reads top to bottom: setup, data, model, optimiser, then for each epoch the steps (forward, loss,
backward, step, log), an evaluation every --eval-every epochs and at the end, and a checkpoint every epoch.
Multi-GPU: `torchrun --nproc_per_node=N train.py ...` (DistributedDataParallel; the global batch stays the same).

Shape legend: B videos, T frames, C classes, K descriptions per class, L text length, E embedding.
"""
import argparse
import json
import math
import os
import shlex
import sys
import time

import torch
import torch.distributed as dist

import adapters
import clip
import curves
import data
import evaluate
import losses
import recipe

# Per protocol: adapter rank r, adapted blocks (1-based, inclusive), epochs, warm-up epochs, global batch; any
# other argument a row names (the synthetic demo's) replaces the paper's default unless given on the command line.
# few-shot and base2novel are the paper's released runs. The paper gives no epochs or batch for zero-shot and
# fully supervised training; our choices and why:
#   zero-shot: 10 epochs of Kinetics-400 (240k videos, ~75k steps at batch 32): the length ViFi-CLIP and X-CLIP
#              use for this protocol; more epochs over-fit K400's label space and cost transfer accuracy.
#   full:      30 epochs: the length those works use for fully supervised Kinetics/UCF/HMDB training.
#   synthetic: the offline demo (README "First run"), sized to finish in 65-80 s on a 2-core CPU with the
#              temporal adapters far ahead of the frame mean (measured, README). Why each departure from the paper:
#              4 frames and r = 8 keep a step cheap; lr 1e-2 and lambda 0.03 because the paper's 1e-3 and 0.005
#              leave a random backbone at chance in 16 epochs; batch 8 for more steps in the time; alpha 0 because
#              a random text encoder's description features are noise to pull towards (alpha 1 cost attn 19 points).
PROTOCOLS = {
    "few-shot":   dict(rank=128, blocks="8-12", epochs=50, warmup=5, batch_size=32),
    "base2novel": dict(rank=256, blocks="1-12", epochs=50, warmup=5, batch_size=32),
    "zero-shot":  dict(rank=256, blocks="1-12", epochs=10, warmup=2, batch_size=32),
    "full":       dict(rank=256, blocks="1-12", epochs=30, warmup=5, batch_size=32),
    "synthetic":  dict(rank=8, blocks="1-4", epochs=16, warmup=1, batch_size=8, clip="random-tiny", frames=4,
                       lr=1e-2, scale=0.03, alpha=0.0),
}
DATASETS = evaluate.DATASETS  # the five published datasets, the offline demo, and a folder of your own videos
PROTOCOL_ROWS = ("few-shot", "base2novel", "zero-shot", "full")
# Settings that change results but are not part of the default run-folder name (which always carries dataset,
# protocol, shots, backbone, temporal, rank, blocks, split and seed): added to the name when typed, e.g. "-lr0.01".
NAME_EXTRAS = (("frames", "f"), ("epochs", "ep"), ("warmup_epochs", "warm"), ("batch_size", "bs"), ("lr", "lr"),
               ("min_lr", "minlr"), ("weight_decay", "wd"), ("scale", "scale"), ("alpha", "alpha"),
               ("num_descriptions", "desc"), ("precision", ""))
PREFETCH = 4  # batches each loader worker keeps ready (torch's default is 2); measured: see README "Performance"


UsageError = evaluate.UsageError  # a problem the user can fix from the command line: one line, exit status 2
_INTERRUPTED = "interrupted before anything was written"  # what Ctrl-C says; main() updates it as the run goes


def per_protocol(key):
    """--help text for a PROTOCOLS column, e.g. "default: 128 for few-shot, 256 otherwise; 8 for --dataset
    synthetic": the real defaults instead of argparse's "(default: None)"."""
    groups = {}
    for name in PROTOCOL_ROWS:
        groups.setdefault(PROTOCOLS[name][key], []).append(name)
    parts = sorted(groups.items(), key=lambda kv: len(kv[1]))  # the largest group last, as "otherwise"
    text = ", ".join(f"{v} for {' and '.join(names)}" for v, names in parts[:-1])
    text = f"{text}, {parts[-1][0]} otherwise" if text else f"{parts[-1][0]}"
    return f"default: {text}; {PROTOCOLS['synthetic'][key]} for --dataset synthetic"


def synthetic(key):
    return f"{PROTOCOLS['synthetic'][key]} for --dataset synthetic"


HelpFormatter = evaluate.HelpFormatter  # "(default: X)" only where X is the real default


def parse_args(argv=None):
    p = evaluate.Parser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter, epilog="A run folder "
                        "(--output; default runs/<dataset>-<protocol>-<shots>-<backbone>-<temporal>-r<rank>-"
                        "b<blocks>-split<N>-seed<N>, plus any other setting you typed) receives log.txt, "
                        "checkpoint.pt (every epoch), history.csv, curves.png (with matplotlib), results.md and "
                        "results.json. A folder that already holds a run is never written over: use --resume to "
                        "continue it, or --output / --overwrite.")
    # What to train on.
    p.add_argument("--dataset", default="synthetic", choices=DATASETS,
                   help="synthetic: offline demo; folder: your own videos, see --data-root")
    p.add_argument("--data-root", default=None, help="dataset root (default data/<dataset>); for --dataset folder: "
                   "a folder holding train/<class>/<video> and test/<class>/<video>")
    p.add_argument("--protocol", default=None, choices=PROTOCOL_ROWS,
                   help="default: few-shot when --shots is given, else full")
    p.add_argument("--shots", type=int, default=None, help="K videos per class (implies --protocol few-shot; "
                   "default for base2novel: 16)")
    p.add_argument("--split", type=int, default=1, help="official split (1-3)")
    p.add_argument("--seed", type=int, default=0, help="few-shot / base2novel draw and training seed")
    # The model; None means the per-protocol value from PROTOCOLS.
    p.add_argument("--clip", default="ViT-B/16", help="the frozen backbone: an OpenAI CLIP name, ViCLIP-B/16 (the "
                   "paper's), a CLIP or ViCLIP checkpoint file, or random-tiny "
                   f"(default: ViT-B/16; {synthetic('clip')})")
    p.add_argument("--frames", type=int, default=8, help="frames per clip T, one per equal segment of the video "
                   f"(default: 8, the paper's; {synthetic('frames')}); ViCLIP was pretrained on 8, other counts "
                   "resample its temporal position table (viclip.py)")
    p.add_argument("--temporal", default="attn", choices=("attn", "conv", "none"), help="temporal modelling in "
                   "the vision adapters: attention over frames, the paper's temporal convolution, or none (the "
                   "frame-mean ablation)")
    p.add_argument("--rank", type=int, default=None, help=f"adapter bottleneck r ({per_protocol('rank')})")
    p.add_argument("--blocks", default=None, help=f"adapted blocks, 1-based inclusive, e.g. 8-12 "
                   f"({per_protocol('blocks')})")
    p.add_argument("--scale", type=float, default=0.005, help="adapter scale lambda (default: 0.005, the "
                   f"paper's; {synthetic('scale')})")
    p.add_argument("--alpha", type=float, default=1.0, help="weight of the consistency loss L_CC (default: 1, "
                   f"the paper's; {synthetic('alpha')}; 0 without a descriptions file)")
    p.add_argument("--train-list", default=None, help="read videos from a published list file instead "
                   "('<path relative to --data-root> <label>' lines, ViFi-CLIP's format); needs --labels-csv")
    p.add_argument("--test-list", default=None, help="the test list for --train-list (base2novel: the base one)")
    p.add_argument("--labels-csv", default=None, help="'id,name' class list for --train-list/--test-list "
                   "(base2novel: the base classes')")
    p.add_argument("--novel-list", default=None, help="base2novel from lists: the novel classes' test list")
    p.add_argument("--novel-labels-csv", default=None, help="base2novel from lists: the novel classes' CSV")
    p.add_argument("--num-descriptions", type=int, default=2, help="descriptions of each kind per class")
    p.add_argument("--descriptions", default="descriptions", help="folder of <dataset>.json (ours) or of the "
                   "authors' {N}_{s|t}_description_{ucf_101|hmdb|k400|k600|ssv2}[_base|_novel].json files; for "
                   "--dataset folder: a .json file (default: <data-root>/descriptions.json if present, else L_CC "
                   "is off)")
    # The optimisation.
    p.add_argument("--epochs", type=int, default=None, help=per_protocol("epochs"))
    p.add_argument("--warmup-epochs", type=int, default=None, help=f"linear warm-up ({per_protocol('warmup')})")
    p.add_argument("--batch-size", type=int, default=None, help="global batch, whatever the number of GPUs "
                   f"({per_protocol('batch_size')})")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of AdamW, reached after the "
                   f"warm-up, then cosine decay to --min-lr (default: 1e-3, the paper's; {synthetic('lr')})")
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=data.default_workers(),
                   help="data loader processes (default: the CPU cores this process may use)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may "
                   "use minus the loader workers' share; see evaluate.choose_threads)")
    p.add_argument("--precision", default=None, choices=("bf16", "fp16", "fp32"),
                   help="autocast dtype (default bf16 on a GPU, fp32 on the CPU)")
    # Where results go, and how often to look at them.
    p.add_argument("--output", default=None, help="run folder (default: runs/ and a name made of the settings)")
    p.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in the output folder")
    p.add_argument("--eval-every", type=int, default=5, help="single-view test every N epochs (0: only at end)")
    p.add_argument("--clips", type=int, default=None, help="temporal views at the final test (default: the "
                   "dataset's published views, e.g. 5 for ucf101, 10 for hmdb51; 1 for synthetic and folder)")
    p.add_argument("--crops", type=int, default=None, help="spatial views at the final test, 1 or 3 (default: 3; "
                   "1 for synthetic and folder)")
    p.add_argument("--recipe", default=None, choices=recipe.names(), help="the authors' logged configuration "
                   "for --protocol/--dataset/--shots/--split (docs/reproducing.md); typed flags still win")
    p.add_argument("--print-config", action="store_true", help="print every resolved argument as JSON and exit")
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop early ("a kill")
    args = p.parse_args(argv)
    # Which arguments the user typed, so that the synthetic row's overrides never replace them.
    args.explicit = sorted({a.dest for a in p._actions for flag in a.option_strings
                            if any(x == flag or x.startswith(flag + "=") for x in (argv or sys.argv[1:]))})
    return resolve(args)


def resolve(args):
    """Fill per-protocol defaults and reject bad values with one-line messages."""
    if args.shots is not None and args.protocol not in (None, "few-shot", "base2novel"):
        raise UsageError(f"--shots is for the few-shot or base2novel protocol, not {args.protocol}")
    if args.protocol is None:
        args.protocol = "few-shot" if args.shots is not None else "full"
    if args.protocol == "few-shot" and args.shots is None:
        raise UsageError("--protocol few-shot needs --shots K (the paper uses 2, 4, 8 and 16)")
    if getattr(args, "recipe", None):
        recipe.apply(args)  # before the lists and per-protocol defaults are read: they may come from it
    listed = bool(args.train_list or args.test_list)
    if (getattr(args, "novel_list", None) or getattr(args, "novel_labels_csv", None)) and not (
            listed and args.protocol == "base2novel"):
        raise UsageError("--novel-list/--novel-labels-csv are for --protocol base2novel with --train-list")
    if listed and args.protocol == "base2novel":
        # ViFi-CLIP's files: fs_base_s{1,2,3}_train.txt + base labels, base_val.txt, novel_val.txt + novel labels
        need = [f for f in ("train_list", "test_list", "labels_csv", "novel_list", "novel_labels_csv")
                if not getattr(args, f, None)]
        if need:
            flags = ", ".join("--" + f.replace("_", "-") for f in need)
            raise UsageError(f"--protocol base2novel from lists needs {flags} (ViFi-CLIP's fs_base_s1_train.txt, "
                             "base_val.txt and base labels CSV, novel_val.txt and novel labels CSV)")
    elif args.protocol == "base2novel" and args.shots is None:
        args.shots = 16  # the published base-to-novel setting: 16 shots per base class (a list is that draw)
    if args.shots is not None and args.shots < 1:
        raise UsageError(f"--shots {args.shots}: must be at least 1")
    if args.protocol == "zero-shot" and args.dataset not in ("k400", "synthetic"):
        raise UsageError("--protocol zero-shot trains on Kinetics-400 (--dataset k400); evaluate the result on "
                         "ucf101, hmdb51 or k600 with evaluate.py")
    if args.dataset == "folder":
        if args.data_root is None:
            raise UsageError("--dataset folder needs --data-root DIR, a folder holding DIR/train/<class>/<video> "
                             "and DIR/test/<class>/<video> (or list files given with --train-list, --test-list "
                             "and --labels-csv, relative to DIR)")
        if args.protocol == "base2novel":
            raise UsageError("--protocol base2novel needs published base classes; a folder dataset has none")
    table = PROTOCOLS["synthetic" if args.dataset == "synthetic" else args.protocol]
    for key, arg in (("rank", "rank"), ("blocks", "blocks"), ("epochs", "epochs"),
                     ("warmup", "warmup_epochs"), ("batch_size", "batch_size")):
        if getattr(args, arg) is None:
            setattr(args, arg, table[key])
    for key, value in table.items():  # the demo row's extra settings (lr, scale, clip, ...)
        if key not in ("rank", "blocks", "epochs", "warmup", "batch_size") and key not in args.explicit:
            setattr(args, key, value)
    args.blocks = parse_blocks(args.blocks)
    for name in ("frames", "rank", "epochs", "batch_size", "num_descriptions"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be at least 1")
    if args.clips is not None and args.clips < 1:
        raise UsageError(f"--clips {args.clips}: must be at least 1")
    if args.crops is not None and args.crops not in (1, 3):
        raise UsageError(f"--crops {args.crops}: the test takes 1 (centre) or 3 (left, centre, right) crops")
    if args.workers < 0:
        raise UsageError(f"--workers {args.workers}: must be 0 (load in this process) or more")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in the output folder, --overwrite replaces it: choose one")
    if args.data_root is None:
        args.data_root = os.path.join("data", args.dataset)
    if args.precision is None:
        args.precision = "bf16" if torch.cuda.is_available() else "fp32"
    if args.output is None:
        args.output = os.path.join("runs", run_name(args))
    if getattr(args, "recipe", None) and not args.print_config:
        recipe.check_files(args)
    return args


def run_name(args):
    """The default run folder's name: every setting that changes results, readable, e.g.
    ucf101-few-shot-4shot-ViT-B-16-attn-r128-b8-12-split1-seed0."""
    dataset = args.dataset
    if dataset == "folder":  # your own videos: the folder's name tells runs on different trees apart
        dataset = f"folder-{os.path.basename(os.path.normpath(args.data_root))}"
    if evaluate.reader(args) == "list":
        dataset += "-lists"
    parts = [dataset, args.protocol] + ([f"{args.shots}shot"] if args.shots else [])
    parts += [evaluate.backbone_tag(args.clip), args.temporal, f"r{args.rank}",
              f"b{args.blocks[0]}-{args.blocks[1]}", f"split{args.split}", f"seed{args.seed}"]
    parts += [f"{short}{getattr(args, key):g}" if isinstance(getattr(args, key), float) else
              f"{short}{getattr(args, key)}" for key, short in NAME_EXTRAS if key in args.explicit]
    if getattr(args, "recipe", None):
        parts.append(f"recipe-{args.recipe}")
    return "-".join(parts)


def parse_blocks(text):
    """"8-12" or "8,12" or (8, 12) -> (8, 12); a single "12" -> (12, 12)."""
    if isinstance(text, (list, tuple)):
        return tuple(int(b) for b in text)
    try:
        parts = [int(b) for b in str(text).replace(",", "-").split("-")]
    except ValueError:
        raise UsageError(f"--blocks {text}: expected FIRST-LAST, e.g. 8-12") from None
    return (parts[0], parts[-1])


def lr_at(step, args, steps_per_epoch):
    """The learning rate of optimiser step `step` (0-based, counted over the whole run): timm's CosineLRScheduler
    as ViFi-CLIP/X-CLIP build it (warmup_lr_init=0, lr_min = lr / 100 = --min-lr, t_in_epochs=False), stepped per
    iteration. Linear warm-up from 0 over --warmup-epochs; the cosine runs over the WHOLE run, warm-up included
    (timm's warmup_prefix=False), so the warm-up ends on the cosine's value there, not on --lr: 9.76e-4 at the
    end of epoch 5 of 50 with lr 1e-3, as the authors' logs show. Step s gets timm's value at t = s, timm's own
    training loop's convention (X-CLIP's loop updates after the step, one step later)."""
    warmup, total = args.warmup_epochs * steps_per_epoch, args.epochs * steps_per_epoch
    if step < warmup:
        return args.lr * step / warmup
    if step >= total:
        return args.min_lr
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * step / total))


def training_set(args, resolution, mean=data.CLIP_MEAN, std=data.CLIP_STD):
    """The protocol's training videos, at the model's resolution and pixel normalisation. Flips for every dataset
    but SSv2, whose labels say left and right, also when SSv2 comes as list files (data.py cannot tell from the
    lists). Workers return uint8 clips and their photometric draws; the photometric half (with mean/std) runs
    batched on the training device (train.py's loop)."""
    return data.build_dataset(evaluate.reader(args), args.data_root, args.protocol, args.split, shots=args.shots,
                              seed=args.seed, num_frames=args.frames, train=True, resolution=resolution,
                              flip=args.dataset != "ssv2", mean=mean, std=std, defer_photometric=True,
                              **evaluate.lists(args))


def load_descriptions(args, classnames):
    """The training classes' descriptions. The authors' files are keyed by class index: from an official layout,
    of the dataset's full class list (classnames may be a subset, e.g. the base classes); from ViFi-CLIP's lists,
    of the label CSV itself, whose base2novel base classes the authors' _base files index."""
    if evaluate.reader(args) == "list":
        full, subset = None, "base" if args.protocol == "base2novel" else None
    else:
        full, subset = data.class_names(args.dataset, args.data_root), None
    return losses.load_descriptions(args.dataset, classnames, args.num_descriptions, args.descriptions,
                                    all_classnames=full, subset=subset)


class GlobalBatches(torch.utils.data.Sampler):
    """Each epoch: one seeded permutation, cut into global batches of --batch-size; rank r takes its own slice
    of every global batch. So N processes see exactly the videos one process would see, step for step, and the
    (gradient-averaged) loss curve is the same whatever N is. The incomplete last batch is dropped."""

    def __init__(self, n, global_batch, seed, rank=0, world=1):
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.local = global_batch // world
        self.epoch = 0

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        for b in range(len(self)):
            start = b * self.global_batch + self.rank * self.local
            # The epoch travels with each index: persistent workers keep their own copy of the dataset, so an
            # epoch set on it in the main process would never reach them.
            yield [(self.epoch, i) for i in order[start:start + self.local].tolist()]

    def __len__(self):
        return self.n // self.global_batch


class SeededItems(torch.utils.data.Dataset):
    """Seeds every random draw of item i (frame offsets, crops, flips, colour jitter) from (seed, epoch, i); the
    key is (epoch, i), as GlobalBatches yields it. An item is then the same whichever worker or process loads it,
    which is what makes --resume exact and multi-GPU runs equal to one-GPU runs."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        data.seed_everything(hash((self.seed, epoch, i)) % 2**31)
        return self.dataset[i]


class TrainStep(torch.nn.Module):
    """What DDP wraps: one forward returning the logits and the trainable branch's class features, which the
    consistency loss needs too (encoding the class texts once serves both terms)."""

    def __init__(self, msta):
        super().__init__()
        self.msta = msta

    def forward(self, videos, class_tokens):
        text = self.msta.encode_text(class_tokens)                        # (C, E)
        return self.msta.logits(self.msta.encode_video(videos), text), text  # (B, C), (C, E)


def save_checkpoint(path, state):
    """Write to a temporary file, then rename: a kill at any moment leaves the last complete checkpoint."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def descriptions_or_none(args, classnames, log):
    """(spatial, temporal) description sentences per class, or None when L_CC is off: --alpha 0, or a folder
    dataset without a descriptions file (descriptions are optional there; the log says so once)."""
    if args.alpha == 0:
        return None
    if args.dataset == "folder":
        path = (args.descriptions if args.descriptions.endswith(".json")
                else os.path.join(args.data_root, "descriptions.json"))
        if not os.path.isfile(path):
            log(f"descriptions: none ({path} not found), so the consistency loss L_CC is off (alpha 0); write one "
                "in descriptions/README.md's format to use it")
            args.alpha = 0.0
            return None
        name, folder = os.path.splitext(os.path.basename(path))[0], os.path.dirname(path)
        return losses.load_descriptions(name, classnames, args.num_descriptions, folder)
    return load_descriptions(args, classnames)


def resume_hint(args, argv, epoch):
    """What Ctrl-C prints: the one command that continues this run (or restarts it, before its first epoch)."""
    argv = [a for a in argv if a not in ("--overwrite", "--resume")]
    if "--output" not in argv and not any(a.startswith("--output=") for a in argv):
        argv += ["--output", args.output]
    command = "python train.py " + " ".join(shlex.quote(a) for a in argv)
    if epoch == 0:
        return (f"interrupted in the first epoch, before any checkpoint; {args.output} holds only its log. "
                f"Start again with: {command} --overwrite")
    return f"interrupted; {args.output}/checkpoint.pt holds epoch {epoch}. Continue with: {command} --resume"


def main(argv=None):
    global _INTERRUPTED
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.print_config:
        print(recipe.config(args))
        return None
    # ---- setup: processes, device, checks (nothing is written before the arguments and the data pass) ---------
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.batch_size % world:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by the {world} processes")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    ckpt_path = os.path.join(args.output, "checkpoint.pt")
    evaluate.check_output(args.output, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not os.path.exists(ckpt_path):
        raise UsageError(f"--resume: no checkpoint at {ckpt_path}")
    if distributed:
        dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    threads = evaluate.choose_threads(args.workers, args.threads)
    log = evaluate.Logger(quiet=rank != 0)  # holds its lines until the run folder is made
    log(f"train.py {shlex.join(argv)}", screen=False)
    log(json.dumps({k: v for k, v in vars(args).items() if k != "classnames"}), screen=False)  # every argument
    log(f"run folder: {args.output}  ({device.type}, {threads} torch thread(s), {args.workers} loader worker(s))")

    # ---- data (its layout is checked first: no model download before a missing dataset is reported) ----------
    data.class_names(evaluate.reader(args), args.data_root, **evaluate.lists(args))
    model = evaluate.build_model(args, device)
    resolution = model.clip.visual.input_resolution
    train_set = training_set(args, resolution, model.clip.mean, model.clip.std)
    classnames = args.classnames = list(train_set.classnames)  # saved with the run: evaluate.py --video uses them
    log(f"data: {len(train_set)} training videos, {len(classnames)} classes ({args.dataset}, {args.protocol}"
        f"{f', {args.shots} shots' if args.shots else ''}, split {args.split})")
    if len(train_set) < args.batch_size and "batch_size" not in args.explicit and len(train_set) >= world:
        # A small tree of your own: the default batch would not fit even once, so take every video each step.
        log(f"batch size: {len(train_set) // world * world}, all the training videos (the default, "
            f"{args.batch_size}, is more than there are)")
        args.batch_size = len(train_set) // world * world
    if len(train_set) < args.batch_size:
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {len(train_set)} training videos")
    descriptions = descriptions_or_none(args, classnames, log)
    # Arguments and data are checked: from here on the run folder is written.
    if rank == 0:
        if args.overwrite:
            evaluate.clear_output(args.output)
        os.makedirs(args.output, exist_ok=True)
        log.open(os.path.join(args.output, "log.txt"), append=args.resume)
    _INTERRUPTED = resume_hint(args, argv, 0)
    items = SeededItems(train_set, args.seed)
    sampler = GlobalBatches(len(train_set), args.batch_size, args.seed, rank, world)
    # Persistent workers: no worker start-up (and dataset copy) at every epoch. PREFETCH: see its comment.
    loader = torch.utils.data.DataLoader(items, batch_sampler=sampler, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
                                         prefetch_factor=PREFETCH if args.workers > 0 else None)

    # ---- model and text: class prompts, and the frozen description features, computed once --------------------
    if args.clip.startswith("random-"):
        log(f"CLIP: {args.clip} -- RANDOMLY INITIALISED, NOT PRETRAINED (offline demo; numbers mean nothing "
            "for real data)")
    counts = adapters.parameter_counts(model)
    log(f"MSTA r={args.rank} blocks {args.blocks[0]}-{args.blocks[1]} temporal={args.temporal}: "
        f"{adapters.format_counts(*counts)}")
    context = model.clip.context_length  # 77 for CLIP, 32 for ViCLIP: every text is tokenized at the model's own
    tokens = evaluate.class_tokens(classnames, context).to(device)                             # (C, L)
    spatial_feats = temporal_feats = None
    if descriptions is not None:
        spatial, temporal = descriptions
        # truncate=True: ours fit CLIP's 77 (tested) and all but one ViCLIP's 32 (README "Reproducing the paper");
        # one of the authors' published sentences does not fit 77.
        tok = lambda sentences: [clip.tokenize(s, context, truncate=True) for s in sentences]  # noqa: E731
        spatial_feats = losses.description_features(model, tok(spatial))                      # (C, E), once
        temporal_feats = losses.description_features(model, tok(temporal))
    step_fn = TrainStep(model)
    if distributed:
        step_fn = torch.nn.parallel.DistributedDataParallel(step_fn, device_ids=[device] if device.type == "cuda"
                                                            else None)
    autocast = evaluate.autocast_for(device, args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")

    # ---- optimiser; resume ------------------------------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=args.weight_decay)
    start_epoch, step, history = 0, 0, []  # history: one row of numbers per epoch, kept in the checkpoint
    if args.resume:
        ckpt = evaluate.read_checkpoint(ckpt_path)
        model.load_trainable_state_dict(ckpt["adapters"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step, history = ckpt["epoch"], ckpt["scheduler"]["step"], ckpt["history"]
        log(f"resumed from {ckpt_path} at epoch {start_epoch}")
        _INTERRUPTED = resume_hint(args, argv, start_epoch)

    # ---- the loop ---------------------------------------------------------------------------------------------
    steps_per_epoch = len(sampler)
    total_steps, t_start = args.epochs * steps_per_epoch, time.time()
    # The ETA is timed from the ETA_AFTER-th step of this process on: the first steps include start-up (loader
    # workers, allocator, first-touch of the weights) and made a 2-minute run's first ETA 7:32.
    eta_from = None  # (time, step) where the ETA's clock starts
    for epoch in range(start_epoch, args.epochs):
        model.train()
        sampler.epoch = epoch
        seen, loss_sum, correct, t_epoch = 0, 0.0, 0, time.time()
        for (clips, params), labels in loader:
            # uint8 (B, T, 3, H, W) crosses to the device (4x fewer bytes than float32), then the batched
            # photometric half of the augmentation runs there with each clip's own draws.
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            videos = data.photometric(clips, params, model.clip.mean, model.clip.std)  # float (B, T, 3, H, W)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args, steps_per_epoch)
            with autocast:
                logits, text = step_fn(videos, tokens)                            # (B, C), (C, E)
            if spatial_feats is None:  # L_CC off: the classification loss alone
                loss = losses.classification_loss(logits, labels)
            else:
                loss = losses.total_loss(logits, labels, text, spatial_feats, temporal_feats, args.alpha)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            # Log the global numbers: the mean over processes equals the one-process value.
            stats = torch.tensor([loss.item() * len(labels), (logits.argmax(-1) == labels).sum().item(),
                                  len(labels)], dtype=torch.float64, device=device)
            if distributed:
                dist.all_reduce(stats)
            loss_sum, correct, seen = loss_sum + stats[0].item(), correct + stats[1].item(), seen + stats[2].item()
            if eta_from is None and step - start_epoch * steps_per_epoch >= min(ETA_AFTER, total_steps - 1):
                eta_from = (time.time(), step)
            eta = "--:--" if eta_from is None or step == eta_from[1] else evaluate.hms(
                (time.time() - eta_from[0]) / (step - eta_from[1]) * (total_steps - step))
            log.progress(f"epoch {epoch + 1}/{args.epochs} step {step}/{total_steps} loss {loss_sum / seen:.4f} "
                         f"lr {optimizer.param_groups[0]['lr']:.2e} {seen / (time.time() - t_epoch):.1f} clips/s "
                         f"ETA {eta}")
            if args.max_steps is not None and step >= args.max_steps:
                log("stopping early at --max-steps (no checkpoint for this partial epoch)")
                return None
        row = dict(epoch=epoch + 1, loss=loss_sum / max(1, seen), train_top1=100 * correct / max(1, seen),
                   lr=optimizer.param_groups[0]["lr"], clips_per_s=seen / (time.time() - t_epoch))
        if args.eval_every and (epoch + 1) % args.eval_every == 0 and epoch + 1 < args.epochs:
            quick = evaluate.run_protocol(model, args, device, views=(1, 1), log=log, final=False)
            row.update({f"test_{k}": v for k, v in quick["summary"].items() if k not in ("runs", "top1_std")})
        history.append(row)
        log(epoch_line(row, args.epochs))
        if rank == 0:
            save_checkpoint(ckpt_path, dict(adapters=model.trainable_state_dict(), optimizer=optimizer.state_dict(),
                                            scaler=scaler.state_dict(), scheduler=dict(step=step),
                                            epoch=epoch + 1, history=history, args=vars(args)))
            _INTERRUPTED = resume_hint(args, argv, epoch + 1)
            curves.write_history(args.output, history)

    # ---- the end: the protocol's test with its published views, on the LAST epoch's weights -------------------
    results = evaluate.run_protocol(model, args, device, views=None, log=log, final=True)
    if rank == 0:
        evaluate.write_results(args.output, evaluate.result_record(args, results, dict(
            trainable_params=counts[0], backbone_params=counts[1], history=history,
            train_seconds=time.time() - t_start, args=vars(args))), log)
        files = [("results table", "results.md"), ("all numbers", "results.json"),
                 ("adapters", "checkpoint.pt"), ("per epoch", "history.csv"), ("log", "log.txt")]
        title = f"{os.path.basename(os.path.normpath(args.output))}"
        if curves.plot(args.output, history, (args.epochs, results["summary"]["top1"], results["views"]), title):
            files.insert(4, ("curves", "curves.png"))
        else:
            log("curves.png: not drawn, matplotlib is not installed (pip install matplotlib)")
        evaluate.finished([(name, os.path.join(args.output, f)) for name, f in files], log)
    if distributed:
        dist.destroy_process_group()
    return results


ETA_AFTER = 3  # steps of warm-up the ETA leaves out


def epoch_line(row, epochs):
    """One line per epoch; test numbers are labelled as such (single view, the quick check during training)."""
    line = (f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, train top-1 {row['train_top1']:.1f}%, "
            f"{row['clips_per_s']:.1f} clips/s")
    names = {"test_top1": "top-1", "test_top5": "top-5", "test_hm": "harmonic mean"}
    tests = [f"{names.get(k, k[5:])} {v:.1f}%" for k, v in row.items() if k.startswith("test_")]
    return line + (f"; test {', '.join(tests)} (single view)" if tests else "")


def run(argv=None):
    """Entry point: user errors (bad arguments, missing data, unreadable checkpoint) are one line and exit 2;
    Ctrl-C is one line saying how to resume, exit 130 (the shell's code for SIGINT)."""
    try:
        main(argv)
    except (UsageError, data.DatasetError, losses.DescriptionError, evaluate.CheckpointError,
            clip.CLIPError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\n{_INTERRUPTED}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run()
