"""The synthetic motion dataset: a light square moving, growing or turning on a dark background, eight classes in
time-reversed pairs, rendered in memory (no download). It is the offline demo's data (README "First run") and the
tests' tiny end-to-end set; data.build_dataset("synthetic", ...) returns it like any real dataset.

Shape legend: T frames, r x r pixels, V views.
"""
import math

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from video.transforms import CLIP_MEAN, CLIP_STD, no_photometric


# Classes 2k and 2k+1 are time-reversed twins: one is the other's random motion played backwards, with start
# points drawn symmetrically, so both have the same distribution of single frames (and of unordered frame sets).
# Only frame order separates them, which is what a temporal adapter must learn.
SYNTHETIC_CLASSES = ("a square moving left", "a square moving right", "a square moving up", "a square moving down",
                     "a square shrinking", "a square growing", "a square rotating anticlockwise",
                     "a square rotating clockwise")
# 128 training clips per class: with 16 (and so 8x fewer steps in the demo's 16 epochs) attn reached 38% and conv 14%
# instead of 80% and 85% (README). Rendering is cheap (~2,000 clips/s); the training steps are what cost.
SYNTHETIC_TRAIN_PER_CLASS, SYNTHETIC_TEST_PER_CLASS = 128, 16
SYNTHETIC_RENDER = 64  # clips are drawn at most 64 x 64, then resized to the model's resolution: cheap on a CPU


def synthetic_clip(label, generator, num_frames, resolution, train):
    """uint8 (T, 3, r, r): a light square on a dark background, moving as class `label` says, with pixel noise."""
    g = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    u = g(num_frames) if train else torch.full((num_frames,), 0.5)
    t = (torch.arange(num_frames) + u) / num_frames - 0.5  # time of each frame in [-0.5, 0.5), one per segment
    kind, forward = divmod(label, 2)
    t = t if forward else -t  # even classes replay the odd class's motion backwards
    x, y, side, angle = 0.3 + 0.4 * g(1), 0.3 + 0.4 * g(1), 0.25 + 0.1 * g(1), math.pi / 2 * g(1)  # at t = 0
    x = x + 0.45 * t * (kind == 0)  # moving right
    y = y + 0.45 * t * (kind == 1)  # moving down (image rows grow downwards)
    side = side * (1 + 1.2 * t * (kind == 2))  # growing
    angle = angle + 1.5 * t * (kind == 3)  # clockwise on screen (+angle with y pointing down); all (T,)
    grid = (torch.arange(resolution) + 0.5) / resolution
    py, px = grid[None, :, None] - y[:, None, None], grid[None, None, :] - x[:, None, None]  # (T, r, 1), (T, 1, r)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    inside = torch.maximum((px * cos + py * sin).abs(), (py * cos - px * sin).abs()) <= side[:, None, None] / 2
    # Random colours, but always a light square on a dark background (every channel: square 195-255, background
    # 0-60). With either polarity, a token turning bright means "moving left" for one clip and "moving right" for
    # another; the demo's random backbone did not untangle that (attn 37%, conv 15% instead of 80% and 87%, README).
    fg, bg = 255 - 60 * g(3), 60 * g(3)
    frames = torch.where(inside[:, None], fg[None, :, None, None], bg[None, :, None, None])  # (T, 3, r, r)
    noise = torch.randn(frames.shape, generator=generator) * 8
    return (frames + noise).clamp(0, 255).to(torch.uint8)


class SyntheticMotion(Dataset):
    """In-memory clips of a moving square (SYNTHETIC_CLASSES), deterministic per (seed, train, index).

    Training holds `shots` clips per class (default SYNTHETIC_TRAIN_PER_CLASS), testing SYNTHETIC_TEST_PER_CLASS;
    base2novel keeps the odd (base) or even (novel) classes. Items are normalised like the real test transform;
    no flips, which would swap left and right. A multi-view test repeats the clip V times."""

    def __init__(self, shots=None, seed=0, num_frames=8, train=True, resolution=224, views=(1, 1), half=None,
                 mean=CLIP_MEAN, std=CLIP_STD, defer_photometric=False):
        self.ids = [c for c in range(len(SYNTHETIC_CLASSES)) if half is None or (c % 2 == 1) == (half == "base")]
        self.classnames = [SYNTHETIC_CLASSES[c] for c in self.ids]
        self.per_class = (shots or SYNTHETIC_TRAIN_PER_CLASS) if train else SYNTHETIC_TEST_PER_CLASS
        self.seed, self.num_frames, self.train, self.resolution = seed, num_frames, train, resolution
        self.views, self.skipped, self.name = 1 if train else views[0] * views[1], 0, "synthetic"
        self.normalise = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
        self.defer = defer_photometric  # then items are (uint8 clip, parameters of no jitter and no grayscale)

    def __len__(self):
        return self.per_class * len(self.ids)

    def __getitem__(self, index):
        label = index % len(self.ids)
        # hash of a tuple of ints is stable across runs; torch keeps only the low 32 bits of a seed.
        generator = torch.Generator().manual_seed(hash((self.seed, self.train, index)) % 2**32)
        size = min(self.resolution, SYNTHETIC_RENDER)
        clip = synthetic_clip(self.ids[label], generator, self.num_frames, size, self.train)  # (T, 3, size, size)
        if size != self.resolution:
            clip = v2.functional.resize(clip, [self.resolution, self.resolution])
        if self.defer:  # transforms.photometric with these parameters is exactly self.normalise
            return (clip, no_photometric()), label
        video = self.normalise(clip)  # (T, 3, r, r)
        return (video if self.views == 1 else video.expand(self.views, *video.shape)), label
