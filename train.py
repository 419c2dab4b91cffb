"""Train MSTA's adapters on one protocol: `python train.py --dataset ucf101 --shots 4`.

Follows the training recipe of "Efficient Transfer Learning for Video-language Foundation Models" (CVPR 2025),
Sec. 4.1 "Implementation details" and its released training logs: AdamW (betas 0.9, 0.98), lr 1e-3, weight decay
1e-3, 5 warm-up epochs then cosine decay to 1e-5, global batch 32, 8 frames, loss L_CE + alpha L_CC (losses.py).
Which defaults are the paper's and which are this project's: docs/protocols.md; the authors' logged runs:
`--recipe paper` (docs/reproducing.md); `--print-config` shows every value a command resolves to. The command line
is resolved once, by harness/settings.py (the per-protocol defaults are its PROTOCOLS).

Read top-down: the step (train_step: accumulate_step's forward, the loss L = L_CE + alpha L_CC and backward, then
AdamW's update), the learning rate, the small helpers, then main: setup, data, model, text, optimiser, and for each
epoch the steps, an evaluation every --eval-every epochs and at the end, and a checkpoint every epoch; the command
line last. The batches are video/batches.py's, the model models.py's.
Multi-GPU: `torchrun --nproc_per_node=N train.py ...` (DistributedDataParallel; the global batch stays the same).
One smaller GPU: --micro-batch and --grad-checkpointing keep the result (docs/performance.md).

Shape legend: B videos, T frames, C classes, K descriptions per class, L text length, E embedding.
"""
import argparse
import contextlib
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
import data
import evaluate
import losses
import models
import prompts
from harness import curves, memory, recipe, report, runs, settings
from video import batches, layouts, transforms

UsageError = runs.UsageError  # a problem the user can fix from the command line: one line, exit status 2
_INTERRUPTED = "interrupted before anything was written"  # what Ctrl-C says; main() updates it as the run goes


# ------------------------------------------------------------------------------------------------- the step
class TrainStep(torch.nn.Module):
    """What DDP wraps: the logits of a (micro-)batch of videos against class features the step encoded once."""

    def __init__(self, msta):
        super().__init__()
        self.msta = msta

    def forward(self, videos, text):
        return self.msta.logits(self.msta.encode_video(videos), text)  # (B, E), (C, E) -> (B, C)


def train_step(step_fn, optimizer, scaler, autocast, lr, videos, labels, tokens, targets=None, alpha=0.0,
               micro=None):
    """One optimiser step on one batch: accumulate_step's forward, loss and backward, then AdamW's update. Returns
    the step's loss L and its logits (B, C).

    videos (B, T, 3, H, W), labels (B,), tokens (C, L) the class prompts; targets: the frozen description
    features (D_s, D_t), each (C, E), or None when L_CC is off; micro: videos per pass (default: all at once)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    msta = getattr(step_fn, "module", step_fn).msta  # DDP keeps the TrainStep it wraps as .module
    optimizer.zero_grad(set_to_none=True)
    loss, logits = accumulate_step(step_fn, msta, videos, labels, tokens, targets, alpha, micro or len(videos),
                                   autocast, scaler)
    scaler.step(optimizer)  # fp16: the loss was scaled against underflow; a no-op scaler otherwise
    scaler.update()
    return loss, logits


def accumulate_step(step_fn, msta, videos, labels, tokens, targets, alpha, micro, autocast, scaler):
    """Forward, loss and backward of one optimiser step over this process's videos, `micro` videos at a time;
    the gradients it leaves equal one pass over all of them. Returns the step's loss L and its logits (B, C).
    Under DDP every micro-batch but the last runs in no_sync(): one all-reduce per step, in the last backward,
    which covers the text branch too."""
    with autocast:
        text = msta.encode_text(tokens)                                            # (C, E), with autograd
    l_cc = None if targets is None else losses.consistency_loss(text, *targets)  # L_CC depends on w alone: once
    # The class features w are computed once per step and read by every micro-batch. Those before the last read a
    # detached copy of w, so their backward stops at w and leaves dL/dw in the copy's .grad; the last reads w
    # itself, and its backward carries those gradients (the term w . g, whose gradient is g) with its own and
    # L_CC's through the text branch once.
    held = text.detach().requires_grad_()
    chunks = list(zip(videos.split(micro), labels.split(micro)))
    total, all_logits = 0, []
    for i, (v, y) in enumerate(chunks):
        last = i == len(chunks) - 1
        quiet = step_fn.no_sync() if not last and hasattr(step_fn, "no_sync") else contextlib.nullcontext()
        with quiet:
            with autocast:
                logits = step_fn(v, text if last else held)                        # (b, C)
            # L_CE is a mean over the batch: a micro-batch's part is weighted by its share of the videos (1 in one
            # pass). L_CC is added once per step, with the last micro-batch.
            l_ce = losses.classification_loss(logits, y) * (len(y) / len(labels))
            loss = losses.total_loss(l_ce, l_cc if last else None, alpha)          # L = L_CE + alpha L_CC
            scaled = scaler.scale(loss)
            if last and held.grad is not None:  # already scaled: it came from the scaled micro-batch losses
                scaled = scaled + (text * held.grad).sum()
            scaled.backward()
        total = total + loss.detach()
        all_logits.append(logits.detach())
    return total, torch.cat(all_logits)                                            # (), (B, C)


def lr_at(step, steps_per_epoch, lr, min_lr, epochs, warmup_epochs):
    """The learning rate of optimiser step `step` (0-based, counted over the whole run): timm's CosineLRScheduler
    as ViFi-CLIP/X-CLIP build it (warmup_lr_init=0, lr_min = lr / 100 = --min-lr, t_in_epochs=False), stepped per
    iteration. Linear warm-up from 0 over --warmup-epochs; the cosine runs over the WHOLE run, warm-up included
    (timm's warmup_prefix=False), so the warm-up ends on the cosine's value there, not on --lr: 9.76e-4 at the
    end of epoch 5 of 50 with lr 1e-3, as the authors' logs show. Step s gets timm's value at t = s, timm's own
    training loop's convention (X-CLIP's loop updates after the step, one step later)."""
    warmup, total = warmup_epochs * steps_per_epoch, epochs * steps_per_epoch
    if step < warmup:
        return lr * step / warmup
    if step >= total:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * step / total))


# ------------------------------------------------------------------------------------------- around the loop
def setup_processes(batch_size):
    """(distributed, rank, world, device): torchrun's process group, or one process; its GPU, else the CPU."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if batch_size % world:
        raise UsageError(f"--batch-size {batch_size} is not divisible by the {world} processes")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return distributed, rank, world, device


def fit_batch_size(batch_size, typed, videos, world, log):
    """The global batch for a training set of `videos`: --batch-size, checked; when it was not typed and there are
    fewer videos (a small tree of your own), all of them each step."""
    if videos < batch_size and not typed and videos >= world:
        log(f"batch size: {videos // world * world}, all the training videos (the default, {batch_size}, is more "
            "than there are)")
        batch_size = videos // world * world
    if videos < batch_size:
        raise UsageError(f"--batch-size {batch_size} is larger than the {videos} training videos")
    return batch_size


def training_set(dataset, reader, root, lists, protocol, split, shots, seed, frames, resolution, mean, std):
    """The protocol's training videos at the model's resolution. Workers return uint8 clips and their photometric
    draws; the photometric half (with the model's mean and std) runs batched on the training device, in the loop.
    No flips for SSv2, whose labels say left and right, also when it comes as list files (data.py cannot tell
    from the lists)."""
    return data.build_dataset(reader, root, protocol, split, shots=shots, seed=seed, num_frames=frames, train=True,
                              resolution=resolution, flip=dataset != "ssv2", mean=mean, std=std,
                              defer_photometric=True, **lists)


def read_descriptions(dataset, reader, root, protocol, classnames, num, where):
    """The training classes' (spatial, temporal) description sentences for L_CC (prompts.load_descriptions).
    where: for --dataset folder, the .json file; else the folder of our <dataset>.json or the authors' files. The
    authors' files are keyed by class index: from an official layout, of the dataset's full class list
    (classnames may be a subset, e.g. the base classes); from ViFi-CLIP's lists, of the label CSV itself, whose
    base2novel base classes the authors' _base files index."""
    if dataset == "folder":
        name, folder = os.path.splitext(os.path.basename(where))[0], os.path.dirname(where)
        return prompts.load_descriptions(name, classnames, num, folder)
    listed = reader == "list"
    full = None if listed else data.class_names(dataset, root)
    return prompts.load_descriptions(dataset, classnames, num, where, all_classnames=full,
                                     subset="base" if listed and protocol == "base2novel" else None)


def resume_hint(output, argv, epoch):
    """What Ctrl-C prints: the one command that continues this run (or restarts it, before its first epoch)."""
    argv = [a for a in argv if a not in ("--overwrite", "--resume")]
    if "--output" not in argv and not any(a.startswith("--output=") for a in argv):
        argv += ["--output", output]
    command = "python train.py " + " ".join(shlex.quote(a) for a in argv)
    if epoch == 0:
        return (f"interrupted in the first epoch, before any checkpoint; {output} holds only its log. "
                f"Start again with: {command} --overwrite")
    return f"interrupted; {output}/checkpoint.pt holds epoch {epoch}. Continue with: {command} --resume"


def finish(output, record, results, history, epochs, log):
    """Rank 0 at the end: results.{json,md}, curves.png, and the list of the run's files."""
    runs.write_results(output, record, log)
    files = [("results table", "results.md"), ("all numbers", "results.json"),
             ("adapters", "checkpoint.pt"), ("per epoch", "history.csv"), ("log", "log.txt")]
    title = f"{os.path.basename(os.path.normpath(output))}"
    if curves.plot(output, history, (epochs, results["summary"]["top1"], results["views"]), title):
        files.insert(4, ("curves", "curves.png"))
    else:
        log("curves.png: not drawn, matplotlib is not installed (pip install matplotlib)")
    files = [(name, os.path.join(output, f)) for name, f in files]
    runs.finished(files[:2] + report.write(output, results, log) + files[2:], log)  # + predictions, confusions


# ------------------------------------------------------------------------------------------------- the run
def main(argv=None):
    """One training run: setup, data, model and text, optimiser, the epochs, the final test; returns its results."""
    global _INTERRUPTED
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)  # resolved once (harness/settings.py); below, functions take the values they need
    if args.print_config:
        print(settings.config(args))
        return None
    reader, lists = settings.data_source(args)  # "list" and the list files, or the dataset's own layout
    # ---- setup: processes, device, checks (nothing is written before the arguments and the data pass) ---------
    distributed, rank, world, device = setup_processes(args.batch_size)
    ckpt_path = os.path.join(args.output, "checkpoint.pt")
    runs.check_output(args.output, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not os.path.exists(ckpt_path):
        raise UsageError(f"--resume: no checkpoint at {ckpt_path}")
    if distributed:
        dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    threads = runs.choose_threads(args.workers, args.threads)
    log = runs.Logger(quiet=rank != 0)  # holds its lines until the run folder is made
    log(f"train.py {shlex.join(argv)}", screen=False)
    log(json.dumps({k: v for k, v in vars(args).items() if k != "classnames"}), screen=False)  # every argument
    log(f"run folder: {args.output}  ({device.type}, {threads} torch thread(s), {args.workers} loader worker(s))")

    # ---- data (its layout is checked first: no model download before a missing dataset is reported) ----------
    data.class_names(reader, args.data_root, **lists)
    model = models.build_msta(args.clip, device, args.frames, args.rank, args.blocks, args.scale, args.temporal,
                              args.seed)
    train_set = training_set(args.dataset, reader, args.data_root, lists, args.protocol, args.split, args.shots,
                             args.seed, args.frames, model.clip.visual.input_resolution, model.clip.mean,
                             model.clip.std)
    classnames = args.classnames = list(train_set.classnames)  # saved with the run: evaluate.py --video uses them
    log(f"data: {len(train_set)} training videos, {len(classnames)} classes ({args.dataset}, {args.protocol}"
        f"{f', {args.shots} shots' if args.shots else ''}, split {args.split})")
    args.batch_size = fit_batch_size(args.batch_size, "batch_size" in args.explicit, len(train_set), world, log)
    descriptions = None
    if args.alpha and args.dataset == "folder" and not os.path.isfile(args.descriptions):
        log(f"descriptions: none ({args.descriptions} not found), so the consistency loss L_CC is off (alpha 0); "
            "write one in descriptions/README.md's format to use it")
        args.alpha = 0.0
    elif args.alpha:
        descriptions = read_descriptions(args.dataset, reader, args.data_root, args.protocol, classnames,
                                         args.num_descriptions, args.descriptions)
    # Arguments and data are checked: from here on the run folder is written.
    if rank == 0:
        if args.overwrite:
            runs.clear_output(args.output)
        os.makedirs(args.output, exist_ok=True)
        log.open(os.path.join(args.output, "log.txt"), append=args.resume)
    _INTERRUPTED = resume_hint(args.output, argv, 0)
    sampler, loader = batches.loader(train_set, args.batch_size, args.seed, args.workers, rank, world,
                                     pin_memory=device.type == "cuda")

    # ---- model and text: class prompts, and the frozen description features, computed once --------------------
    if args.clip.startswith("random-"):
        log(f"CLIP: {args.clip} -- RANDOMLY INITIALISED, NOT PRETRAINED (offline demo; numbers mean nothing "
            "for real data)")
    counts = adapters.parameter_counts(model)
    log(f"MSTA r={args.rank} blocks {args.blocks[0]}-{args.blocks[1]} temporal={args.temporal}: "
        f"{adapters.format_counts(*counts)}")
    context = model.clip.context_length  # 77 for CLIP, 32 for ViCLIP: every text is tokenized at the model's own
    tokens = prompts.class_tokens(classnames, context).to(device)                              # (C, L)
    targets = None if descriptions is None else prompts.encode_descriptions(model, descriptions, context)
    model.checkpoint_blocks = args.grad_checkpointing
    step_fn = TrainStep(model)
    if distributed:
        step_fn = torch.nn.parallel.DistributedDataParallel(step_fn, device_ids=[device] if device.type == "cuda"
                                                            else None)
    autocast = runs.autocast_for(device, args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")

    # ---- optimiser; resume ------------------------------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=args.weight_decay)
    start_epoch, step, history = 0, 0, []  # history: one row of numbers per epoch, kept in the checkpoint
    if args.resume:
        ckpt = runs.read_checkpoint(ckpt_path)
        model.load_trainable_state_dict(ckpt["adapters"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step, history = ckpt["epoch"], ckpt["scheduler"]["step"], ckpt["history"]
        log(f"resumed from {ckpt_path} at epoch {start_epoch}")
        _INTERRUPTED = resume_hint(args.output, argv, start_epoch)
    board = report.Board(args.output, step) if args.tensorboard and rank == 0 else None
    local = args.batch_size // world
    micro = memory.micro_batch(args.micro_batch, local, args.frames, TrainStep(model), model, optimizer, tokens,
                               autocast, device, distributed, log)
    # The protocol's test sets, read by the quick checks during training (one view) and the final test.
    test = dict(protocol=args.protocol, dataset=args.dataset, reader=reader, root=args.data_root, lists=lists,
                split=args.split, seed=args.seed, frames=args.frames, precision=args.precision,
                batch_size=getattr(args, "eval_batch_size", 8), workers=args.workers, log=log)

    # ---- the loop ---------------------------------------------------------------------------------------------
    meter = runs.Meter(args.epochs, len(sampler), start_epoch, device, distributed, log)
    for epoch in range(start_epoch, args.epochs):
        model.train()
        sampler.epoch = epoch
        meter.start(epoch)
        for (clips, draws), labels in loader:
            # uint8 (B, T, 3, H, W) crosses to the device (4x fewer bytes than float32), then the batched
            # photometric half of the augmentation runs there with each clip's own draws.
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            videos = transforms.photometric(clips, draws, model.clip.mean, model.clip.std)  # float (B, T, 3, H, W)
            lr = lr_at(step, len(sampler), args.lr, args.min_lr, args.epochs, args.warmup_epochs)
            try:
                loss, logits = train_step(step_fn, optimizer, scaler, autocast, lr, videos, labels, tokens,
                                          targets, args.alpha, micro)
            except torch.cuda.OutOfMemoryError:  # one line, and the run folder as the last epoch left it
                message = memory.out_of_memory_advice(micro, len(labels), args.precision, args.grad_checkpointing)
                log(f"stopped: {message}. {_INTERRUPTED}", screen=False)
                raise memory.OutOfMemory(f"{message}. {_INTERRUPTED}") from None
            step += 1
            step_loss = meter.update(step, loss, logits, labels, lr)
            if board:
                board.step(step, step_loss, lr)
            if args.max_steps is not None and step >= args.max_steps:
                log("stopping early at --max-steps (no checkpoint for this partial epoch)")
                return None
        row = meter.row(optimizer.param_groups[0]["lr"])
        if args.eval_every and (epoch + 1) % args.eval_every == 0 and epoch + 1 < args.epochs:
            quick = evaluate.run_protocol(model, device, views=(1, 1), final=False, **test)
            row.update({f"test_{k}": v for k, v in quick["summary"].items() if k not in ("runs", "top1_std")})
        history.append(row)
        log(runs.epoch_line(row, args.epochs))
        if board:
            board.epoch(step, row)
        if rank == 0:
            runs.save_checkpoint(ckpt_path, dict(
                adapters=model.trainable_state_dict(), optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                scheduler=dict(step=step), epoch=epoch + 1, history=history, args=vars(args)))
            _INTERRUPTED = resume_hint(args.output, argv, epoch + 1)
            curves.write_history(args.output, history)

    # ---- the end: the protocol's test with its published views, on the LAST epoch's weights -------------------
    results = evaluate.run_protocol(model, device, views=evaluate.test_views(args.dataset, args.clips, args.crops),
                                    final=True, **test)
    if rank == 0:
        record = runs.result_record(results, args.dataset, args.protocol, args.shots, args.split, args.seed,
                                    args.epochs, args.recipe, dict(
                                        trainable_params=counts[0], backbone_params=counts[1], history=history,
                                        train_seconds=time.time() - meter.t_start, args=vars(args)))
        finish(args.output, record, results, history, args.epochs, log)
    if board:
        board.final(step, results)
        board.close()
    if distributed:
        dist.destroy_process_group()
    return results


# ------------------------------------------------------------------------------------- the command line
# The defaults are the paper's settings (Sec. 4.1); settings.PROTOCOLS fills the per-protocol ones.
def parse_args(argv=None):
    per_protocol, synthetic = settings.help_per_protocol, settings.help_synthetic  # --help: the real defaults
    p = runs.Parser(description=__doc__.split("\n")[0], formatter_class=runs.HelpFormatter, epilog="A run folder "
                        "(--output; default runs/<dataset>-<protocol>-<shots>-<backbone>-<temporal>-r<rank>-"
                        "b<blocks>-split<N>-seed<N>, plus any other setting you typed) receives log.txt, "
                        "checkpoint.pt (every epoch), history.csv, curves.png (with matplotlib), results.md, "
                        "results.json, predictions.csv and confusion.png (with matplotlib; harness/report.py). A "
                        "folder that already holds a run is never written over: use --resume to continue it, or "
                        "--output / --overwrite.")
    # What to train on.
    p.add_argument("--dataset", default="synthetic", choices=data.DATASETS,
                   help="synthetic: offline demo; folder: your own videos, see --data-root")
    p.add_argument("--data-root", default=None, help="dataset root (default data/<dataset>); for --dataset folder: "
                   "a folder holding train/<class>/<video> and test/<class>/<video>")
    p.add_argument("--protocol", default=None, choices=tuple(settings.PROTOCOLS),
                   help="default: few-shot when --shots is given, else full")
    p.add_argument("--shots", type=int, default=None, help="K videos per class (implies --protocol few-shot; "
                   "default for base2novel: 16)")
    p.add_argument("--split", type=int, default=1, help="official split (1-3)")
    p.add_argument("--seed", type=int, default=0, help="few-shot / base2novel draw and training seed")
    # The model; None means the per-protocol value from settings.PROTOCOLS.
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
    p.add_argument("--workers", type=int, default=batches.default_workers(),
                   help="data loader processes (default: the CPU cores this process may use)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may "
                   "use minus the loader workers' share; see runs.choose_threads)")
    p.add_argument("--precision", default=None, choices=("bf16", "fp16", "fp32"),
                   help="autocast dtype (default bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--micro-batch", default=None, help="videos per forward/backward pass on each process: "
                   "each optimiser step runs --batch-size as micro-batches and accumulates their gradients, "
                   "with the same result; a number, or auto: the largest that fits the GPU, found at start-up "
                   "(default: the whole batch per process)")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute the activations of the blocks "
                   "from the first adapted one up in the backward pass: less memory, about a third more compute, "
                   "the same result")
    # Where results go, and how often to look at them.
    p.add_argument("--output", default=None, help="run folder (default: runs/ and a name made of the settings)")
    p.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in the output folder")
    p.add_argument("--eval-every", type=int, default=5, help="single-view test every N epochs (0: only at end)")
    p.add_argument("--clips", type=int, default=None, help="temporal views at the final test (default: the "
                   "dataset's published views, e.g. 5 for ucf101, 10 for hmdb51; 1 for synthetic and folder)")
    p.add_argument("--crops", type=int, default=None, help="spatial views at the final test, 1 or 3 (default: 3; "
                   "1 for synthetic and folder)")
    p.add_argument("--tensorboard", action="store_true", help="also log loss, lr and accuracies for TensorBoard "
                   "into the run folder (needs pip install tensorboard; then tensorboard --logdir runs)")
    p.add_argument("--recipe", default=None, choices=recipe.names(), help="the authors' logged configuration "
                   "for --protocol/--dataset/--shots/--split (docs/reproducing.md); typed flags still win")
    p.add_argument("--print-config", action="store_true", help="print every resolved argument as JSON and exit")
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop early ("a kill")
    args = p.parse_args(argv)
    if args.tensorboard and not report.has_tensorboard():  # asked for, so never silently left out
        raise UsageError(report.TENSORBOARD_MISSING)
    # Which arguments the user typed, so that the demo's settings (settings.DEMO) never replace them.
    args.explicit = sorted({a.dest for a in p._actions for flag in a.option_strings
                            if any(x == flag or x.startswith(flag + "=") for x in (argv or sys.argv[1:]))})
    return settings.resolve(args)


def run(argv=None):
    """Entry point: user errors (bad arguments, missing data, unreadable checkpoint) are one line and exit 2;
    Ctrl-C is one line saying how to resume, exit 130 (the shell's code for SIGINT)."""
    try:
        main(argv)
    except (UsageError, data.DatasetError, prompts.DescriptionError, runs.CheckpointError,
            clip.CLIPError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\n{_INTERRUPTED}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run()
