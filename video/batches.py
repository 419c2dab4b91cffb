"""What each training step sees: the protocol's training videos, cut into seeded global batches.

Every random draw of an item (frame offsets, crops, flips, colour jitter) is seeded from (seed, epoch, index), so
an item is the same whichever loader worker or process reads it, and differs from one epoch to the next. That is
what makes train.py's --resume exact and an N-GPU run equal to a one-GPU run step for step. The augmentation
follows the recipe of "Efficient Transfer Learning for Video-language Foundation Models" (CVPR 2025), Sec. 4.1,
through data.py and video/transforms.py. Also the loader's worker count and the seeding of an item's draws.

Shape legend: B videos, T frames.
"""
import os
import random

import torch

PREFETCH = 4  # batches each loader worker keeps ready (torch's default is 2); measured: docs/performance.md
# The final test's loader: the bytes of test batches on the host at once (those the workers hold ready, the one
# being pinned and the one being read) stay within TEST_BUDGET, and what travels through shared memory within
# SHM_SHARE of /dev/shm's free space. Test views are uint8 (transforms.TestTransform(uint8=True)), normalised on the
# device. HMDB51's 10 x 3 views of 8 frames at 224 px are 34.5 MiB a video: a batch of 8 is 276 MiB.
TEST_BUDGET = 4 * 2**30
SHM_SHARE = 0.5  # other processes (the training loader's workers, other jobs) share /dev/shm
TEST_PREFETCH = 2  # torch's default; more buys nothing when the budget already bounds the workers


class SharedMemoryError(Exception):
    """/dev/shm too small for the loader: one line naming --shm-size (Docker's default is 64 MB), exit status 2."""


def shm_free(path="/dev/shm"):
    """Free bytes of the shared memory the loader's workers hand batches over in; None where there is no
    /dev/shm (torch then uses another kind of shared memory, not bounded by a mount)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def shm_room(shm):
    """The bytes of shared memory this process's loader may fill: SHM_SHARE of `shm` free bytes, divided among the
    processes torchrun starts on this machine (LOCAL_WORLD_SIZE), which share one /dev/shm; None: unbounded."""
    return None if shm is None else shm * SHM_SHARE / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def shm_advice(needed, free):
    """The one line for a loader that does not fit shared memory."""
    have = "" if free is None else f", {free / 2**20:.0f} MiB free"
    what = (f"needs {needed / 2**20:.0f} MiB of shared memory (/dev/shm{have})" if needed else
            f"ran out of shared memory (/dev/shm{have})")
    return (f"the data loader {what}: in a container, start it with a larger --shm-size (e.g. docker run "
            "--shm-size=16g; Docker's default is 64 MB), or pass --workers 0 (slower: the main process decodes)")


def is_shm_exhaustion(error):
    """Did a DataLoader fail because shared memory ran out? (torch's messages: a worker killed by a bus error,
    or a write to a /torch_* shared-memory file with no space left.)"""
    text = str(error)
    return "shared memory" in text or "Bus error" in text or ("/torch_" in text and "No space" in text)


def test_loader_plan(item_bytes, batch_size, workers, budget=TEST_BUDGET, shm=None):
    """(videos per batch, workers, prefetch per worker) for a test loader of items of item_bytes each: at most
    (workers x prefetch + 2) batches on the host, within `budget` (per process), and workers x prefetch + 1
    batches in shared memory, within this process's shm_room of `shm` free bytes (default: /dev/shm's). The
    batch is halved when even one worker would not fit (the scores do not depend on it); SharedMemoryError when
    one video does not."""
    if workers == 0:  # the main process loads: nothing in shared memory, one batch at a time
        return batch_size, 0, None
    shm = shm_free() if shm is None else shm
    room = float("inf") if shm is None else shm_room(shm)
    batch = batch_size
    while batch > 1 and (3 * batch * item_bytes > budget or 2 * batch * item_bytes > room):
        batch = (batch + 1) // 2
    if 2 * batch * item_bytes > room:
        raise SharedMemoryError(shm_advice(2 * batch * item_bytes * shm / room, shm))
    size = batch * item_bytes
    slots = max(1, int(min(budget // size - 2, room // size - 1)))  # batches the workers may hold at once
    workers = min(workers, slots)
    return batch, workers, max(1, min(TEST_PREFETCH, slots // workers))


def loader(train_set, batch_size, seed, workers, rank, world, pin_memory, padding=1):
    """(sampler, loader) of this process's share of every global batch of `batch_size` videos, each epoch's order
    padded to a multiple of `padding` (GlobalBatches); set sampler.epoch before each epoch. The workers' batches
    ahead stay within /dev/shm (fit_shared_memory)."""
    sampler = GlobalBatches(len(train_set), batch_size, seed, rank, world, padding)
    prefetch = PREFETCH
    if workers and getattr(train_set, "item_bytes", None):  # within /dev/shm, as the final test's loader
        workers, prefetch = fit_shared_memory(train_set.item_bytes * sampler.local, workers, PREFETCH)
    # Persistent workers: no worker start-up (and dataset copy) at every epoch. PREFETCH: see its comment.
    return sampler, torch.utils.data.DataLoader(
        SeededItems(train_set, seed), batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=workers > 0, prefetch_factor=prefetch if workers > 0 else None)


def fit_shared_memory(batch_bytes, workers, prefetch, shm=None):
    """(workers, prefetch) whose batches in shared memory, workers x prefetch + 1 (the one being read), fit this
    process's shm_room of /dev/shm's free bytes: fewer batches ahead first, then fewer workers (the items are
    seeded, so the result does not change); SharedMemoryError when not even one worker's batch fits."""
    shm = shm_free() if shm is None else shm
    if shm is None:
        return workers, prefetch
    room = shm_room(shm)
    slots = int(room // batch_bytes) - 1  # batches the workers may hold at once
    if slots < 1:
        raise SharedMemoryError(shm_advice(2 * batch_bytes * shm / room, shm))
    workers = min(workers, slots)
    return workers, max(1, min(prefetch, slots // workers))


class GlobalBatches(torch.utils.data.Sampler):
    """Each epoch: one seeded permutation, cut into global batches of --batch-size; rank r takes its own slice
    of every global batch. So N processes see exactly the videos one process would see, step for step, and the
    (gradient-averaged) loss curve is the same whatever N is. The incomplete last batch is dropped.

    padding > 1 (--epoch-padding; 8 under --recipe paper): the permutation is first lengthened to a multiple of
    `padding` by repeating its first videos. With padding 8 and batch 32 this gives the steps per epoch of the
    authors' runs, whatever N is here: they ran 8 processes, each with PyTorch's DistributedSampler (which pads the
    shuffled order that way) and a loader of 4 videos per process with drop_last (ViFi-CLIP datasets/build.py),
    so an epoch had floor(ceil(n / 8) / 4) steps: 11 for 348 videos, where n // 32 would be 10."""

    def __init__(self, n, global_batch, seed, rank=0, world=1, padding=1):
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.local, self.padding = global_batch // world, padding
        self.epoch = 0

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        extra = -self.n % self.padding  # the first videos again, as DistributedSampler pads (all, several times over
        order = torch.cat([order, order.repeat(extra // self.n + 1)[:extra]])  # when n < padding)
        for b in range(len(self)):
            start = b * self.global_batch + self.rank * self.local
            # The epoch travels with each index: persistent workers keep their own copy of the dataset, so an
            # epoch set on it in the main process would never reach them.
            yield [(self.epoch, i) for i in order[start:start + self.local].tolist()]

    def __len__(self):
        return -(-self.n // self.padding) * self.padding // self.global_batch  # ceil(n / padding) * padding // batch


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
        seed_everything(hash((self.seed, epoch, i)) % 2**31)
        return self.dataset[i]


def seed_everything(seed):
    """Seed every random draw an item makes: frame offsets, crop, flip and colour jitter all come from torch's
    generator (the stand-ins for broken videos are chosen from the item index alone)."""
    torch.manual_seed(seed)
    random.seed(seed)


def usable_cores():
    """CPUs this process may run on (its affinity mask: a container's or a scheduler's share, which taskset
    narrows too, rather than the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def default_workers():
    """Loader worker processes: the cores this process may use, shared between the processes torchrun starts per
    node (harness/runs.choose_threads then gives the model what the workers leave)."""
    return max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
