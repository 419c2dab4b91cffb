"""The scripts' shared toolbox: what train.py, evaluate.py and prepare.py all need and none of them is about.

One-line user errors (UsageError, CheckpointError) and the argument parser that prints them; the run folder (what
it holds, never written over by accident); the log, and a training run's progress (Meter: the numbers over all
processes, the ETA); the thread rule; autocast; reading and atomically writing checkpoints (and reading a run's
adapter pair in their place); results.json / results.md; a backbone's name as a part of a run folder's name.
Functions here take plain values.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
import traceback

import torch
import torch.distributed as dist

import clip
import weights
from harness import report
from video import batches

# What a run folder holds; a folder holding any of these is a run, and is never written over by accident.
RUN_FILES = ("checkpoint.pt", *weights.PAIR_FILES, "results.json", "results.md", "log.txt", "history.csv",
             "curves.png")


# ---------------------------------------------------------------------------------------- errors, arguments
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


# ------------------------------------------------------------------------------------------ log, threads
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


def hms(seconds):
    """Seconds as h:mm:ss."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def finished(paths, log):
    """The last lines of a command: where its files are."""
    width = max(len(name) for name, _ in paths)
    log("\n".join(["", "files:"] + [f"  {name + ':':<{width + 1}} {path}" for name, path in paths]))


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
    cores = max(1, batches.usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    reserved = workers if torch.cuda.is_available() else min(workers, cores // 2)
    threads = max(1, cores - reserved)
    torch.set_num_threads(threads)
    return threads


def processes():
    """(distributed, rank, world, device): torchrun's process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on
    CPUs), each process on its own GPU (LOCAL_RANK); else one process, on the GPU or the CPU."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        watch_peers(dist.get_rank())
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return distributed, rank, world, device


# ---- failures under torchrun: one line on the rank that failed, and the others stop at once
FAILED = "msta/failed"  # the key a failing rank sets in torchrun's store (the process group's TCPStore)


def watch_peers(rank, every=0.5):
    """A daemon thread that ends this process with one line as soon as another rank has failed (exit()): without
    it, the others would wait in their next collective until the launcher or NCCL's timeout stops them."""
    store = dist.distributed_c10d._get_default_store()

    def watch():
        while True:
            time.sleep(every)
            try:
                if not store.check([FAILED]):
                    continue
                message = store.get(FAILED).decode()
            except Exception:  # the store is gone: the run is over
                return
            print(f"error: rank {rank} stopped: {message}", file=sys.stderr, flush=True)
            os._exit(1)
    threading.Thread(target=watch, daemon=True, name="msta-watch-peers").start()


def failure_line(error):
    """One line for a failure nobody anticipated (a cuBLAS error, a bug): its type and first line, and where
    its traceback was saved (the system's temporary folder)."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    fd, path = tempfile.mkstemp(prefix=f"msta-rank{rank}-", suffix=".traceback.txt")
    with os.fdopen(fd, "w") as f:
        traceback.print_exception(error, file=f)
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first} (traceback: {path})"


def exit(message, status):
    """End a command with `error: message` on stderr and `status`. Under torchrun this rank first tells the
    others (watch_peers) and then leaves at once (os._exit: no destructor waits on a collective the others will
    never join). When another rank failed first, its failure is the line: this one is its consequence (a peer's
    closed connection)."""
    if not (dist.is_available() and dist.is_initialized()):
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(status)
    rank = dist.get_rank()
    try:
        store = dist.distributed_c10d._get_default_store()
        if store.check([FAILED]):
            message, status = f"stopped: {store.get(FAILED).decode()}", 1
        else:
            store.set(FAILED, f"rank {rank} failed: {message}")
    except Exception:  # no store to tell: the launcher stops the others when this process ends
        pass
    print(f"error: rank {rank}: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


def broadcast_checkpoint(path, distributed, rank):
    """read_checkpoint(path) on rank 0, sent to every other rank: --resume across machines needs the checkpoint
    on the first machine only, where rank 0 wrote it. An unreadable one is the same one-line error on every rank."""
    if not distributed:
        return read_checkpoint(path)
    box = [None]
    if rank == 0:
        try:
            box = [read_checkpoint(path)]
        except CheckpointError as e:
            box = [e]
    dist.broadcast_object_list(box, src=0)  # pickled tensors: on NCCL they travel via this rank's GPU
    if isinstance(box[0], CheckpointError):
        raise box[0]
    return box[0]


def autocast_for(device, precision):
    """torch.autocast for --precision; fp32 disables it. Adapters stay fp32 either way (autocast casts per op)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


# ------------------------------------------------------------------------------- run folder, checkpoints
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
    for f in (*files, *report.written(folder)):
        if os.path.isfile(os.path.join(folder, f)):
            os.remove(os.path.join(folder, f))
    for d in os.listdir(folder):
        if d.startswith("eval-") and os.path.isdir(os.path.join(folder, d)):
            clear_output(os.path.join(folder, d), ("results.json", "results.md"))
            if not os.listdir(os.path.join(folder, d)):
                os.rmdir(os.path.join(folder, d))


def read_checkpoint(path):
    """A train.py checkpoint: plain tensors and values, so weights_only=True (no code runs on load). A run folder
    without checkpoint.pt, or a file of an adapter pair, is read as the pair (read_pair_run)."""
    if weights.has_pair(path) and not os.path.isfile(os.path.join(path, "checkpoint.pt")):
        return read_pair_run(path)
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path} (expected a run folder, its checkpoint.pt, or its "
                              f"adapter pair {' + '.join(weights.PAIR_FILES)})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holds objects weights_only refuses
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "adapters" not in ckpt or "args" not in ckpt:
        raise CheckpointError(f"{path} is not a train.py checkpoint (no 'adapters' and 'args' entries)")
    return ckpt


def read_pair_run(path):
    """An adapter pair (weights.read_pair) as read_checkpoint gives a checkpoint: {"adapters": tensors, "args": the
    run's arguments}, plus "pair", its config, for models.msta_from_pair to check the backbone against, and "path".
    The arguments are the config's "run" section (every train.py argument), under the adapters' own settings."""
    config, tensors = weights.read_pair(path)
    try:
        m = config["msta"]
        args = dict(dataset="folder", data_root=None, protocol="full", split=1, shots=None, seed=0, output=path)
        args.update(config.get("run") or {})
        args.update(clip=config["backbone"]["name"], frames=m["num_frames"], rank=m["rank"], blocks=list(m["blocks"]),
                    scale=m["scale"], temporal=m["temporal"], classnames=list(config["text"]["classnames"]))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{weights.pair_paths(path)[0]} is not an MSTA adapter config (no {e} entry)") from None
    return dict(adapters=tensors, args=args, pair=config, path=path)


def save_checkpoint(path, state):
    """Write to a temporary file, then rename: a kill at any moment leaves the last complete checkpoint."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


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
        f.write("\n".join(lines + report.worst_classes(results["rows"])) + "\n")  # per class: the file only
    if log:
        log("\n".join(lines))


def result_record(results, dataset, protocol, shots, split, seed, epochs, recipe=None, extra=None):
    """The flat fields every results.json carries, plus the rows and summary."""
    record = dict(dataset=dataset, protocol=protocol, shots=shots, split=split, seed=seed, epochs=epochs,
                  recipe=recipe, views=results["views"], **results["summary"])
    record.update(rows=results["rows"], summary=results["summary"], **(extra or {}))
    return record


# ---------------------------------------------------------------------------------------- run names
def backbone_tag(name):
    """A CLIP name or checkpoint path as a folder-name part: "ViT-B/16" -> "ViT-B-16", "/x/clip_small.pt" ->
    "clip_small"."""
    if name not in clip.available_models() and not name.startswith(("random-", "ViCLIP-")):
        name = os.path.splitext(os.path.basename(name))[0]  # a checkpoint file: its name
    return name.replace("/", "-").replace("@", "-")


# ---- a training run's progress: the numbers over all processes, the progress line and its ETA
ETA_AFTER = 3  # steps of warm-up the ETA leaves out
METER_EVERY = 20  # steps between reads of the meter's sums (one host-device sync and, under torchrun, one all-reduce)


class Meter:
    """The epoch's loss, accuracy and speed over all processes, and the progress line with its ETA.

    The step's numbers are added on the device and read every `every` steps of an epoch and at its end (row()):
    reading a number from the GPU waits for it, and an all-reduce per step adds a collective, so a step of the
    loop makes neither. Reads fall on the same steps of each epoch, so a resumed run sums exactly as a whole one."""

    def __init__(self, epochs, steps_per_epoch, start_epoch, device, distributed, log, world=1, every=None):
        self.epochs, self.device, self.distributed, self.log = epochs, device, distributed, log
        self.world, self.every = world, every or METER_EVERY
        self.total_steps, self.t_start = epochs * steps_per_epoch, time.time()
        # The ETA is timed from the ETA_AFTER-th step of this process on: the first steps include start-up (loader
        # workers, allocator, first-touch of the weights) and made a 2-minute run's first ETA 7:32.
        self.eta_after = start_epoch * steps_per_epoch + min(ETA_AFTER, self.total_steps - 1)
        self.eta_from = None  # (time, step) where the ETA's clock starts

    def start(self, epoch):
        """A new epoch: its sums start from zero."""
        self.epoch, self.seen, self.loss_sum, self.correct, self.t_epoch = epoch, 0, 0.0, 0, time.time()
        self.steps, self.unread, self.unread_seen = 0, torch.zeros(2, dtype=torch.float64, device=self.device), 0

    def update(self, step, loss, logits, labels, lr):
        """Add one step's batch (this process's share) to the device sums; at the epoch's 2nd step and every `every`
        steps read them (summed over processes) and rewrite the progress line. Returns the mean loss over the global batches
        since the last read when this step read them (for --tensorboard), else None."""
        n = len(labels)
        # (loss x videos, correct) of this process's batch, added on the device: no read, no collective.
        self.unread += torch.stack([loss.detach().double() * n, (logits.argmax(-1) == labels).sum().double()])
        self.unread_seen += n * self.world  # every process takes the same share of each global batch
        self.steps += 1
        # The epoch's first progress line after its 2nd step (the 1st step of a run reads the class tokens already;
        # a line early in the epoch shows it has started, with no guess at the ETA yet), then every `every` steps.
        if self.steps != 2 and self.steps % self.every:
            return None
        return self.read(step, lr)

    def read(self, step=None, lr=None):
        """Fold the device sums into the epoch's: one all-reduce (under torchrun) and one read of two numbers."""
        if not self.unread_seen:
            return None
        sums = self.unread
        if self.distributed:
            dist.all_reduce(sums)
        loss_sum, correct = sums.tolist()
        seen = self.unread_seen
        self.loss_sum, self.correct, self.seen = self.loss_sum + loss_sum, self.correct + correct, self.seen + seen
        self.unread, self.unread_seen = torch.zeros_like(sums), 0
        if step is not None:
            if self.eta_from is None and step >= self.eta_after:
                self.eta_from = (time.time(), step)
            eta = "--:--" if self.eta_from is None or step == self.eta_from[1] else hms(
                (time.time() - self.eta_from[0]) / (step - self.eta_from[1]) * (self.total_steps - step))
            self.log.progress(f"epoch {self.epoch + 1}/{self.epochs} step {step}/{self.total_steps} loss "
                              f"{self.loss_sum / self.seen:.4f} lr {lr:.2e} "
                              f"{self.seen / (time.time() - self.t_epoch):.1f} clips/s ETA {eta}")
        return loss_sum / seen

    def row(self, lr):
        """The epoch's row of history.csv (test numbers are added to it by the caller), after the last read."""
        self.read()
        seen = max(1, self.seen)
        return dict(epoch=self.epoch + 1, loss=self.loss_sum / seen, train_top1=100 * self.correct / seen, lr=lr,
                    clips_per_s=self.seen / (time.time() - self.t_epoch))


def epoch_line(row, epochs):
    """One line per epoch; test numbers are labelled as such (single view, the quick check during training)."""
    line = (f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, train top-1 {row['train_top1']:.1f}%, "
            f"{row['clips_per_s']:.1f} clips/s")
    names = {"test_top1": "top-1", "test_top5": "top-5", "test_hm": "harmonic mean"}
    tests = [f"{names.get(k, k[5:])} {v:.1f}%" for k, v in row.items() if k.startswith("test_")]
    return line + (f"; test {', '.join(tests)} (single view)" if tests else "")
