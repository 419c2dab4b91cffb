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


def loader(train_set, batch_size, seed, workers, rank, world, pin_memory):
    """(sampler, loader) of this process's share of every global batch of `batch_size` videos; set sampler.epoch
    before each epoch."""
    sampler = GlobalBatches(len(train_set), batch_size, seed, rank, world)
    # Persistent workers: no worker start-up (and dataset copy) at every epoch. PREFETCH: see its comment.
    return sampler, torch.utils.data.DataLoader(
        SeededItems(train_set, seed), batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=workers > 0, prefetch_factor=PREFETCH if workers > 0 else None)


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
