"""The clip transforms: training augmentation and the test views, on uint8 video tensors (T, 3, H, W).

They follow X-CLIP / ViFi-CLIP, as the MSTA paper's training does ("Efficient Transfer Learning for
Video-language Foundation Models", CVPR 2025, Sec. 4.1): TSN's multi-scale crop, horizontal flip, colour jitter,
grayscale and CLIP normalisation for training; a short-side resize and 1 or 3 crops at test. Written with
torchvision.transforms.v2; the colour jitter is written out here so that it runs batched, each clip with its own
draws (photometric), or each frame with its own (per_frame=True, ViFi-CLIP's datasets/pipeline.py ColorJitter,
which runs torchvision's ColorJitter image by image: `--jitter frame`, the authors' pipeline). Which frames a clip
holds is video/decode.py's (sample_indices); data.py applies these.

Shape legend: B clips, T frames, H x W pixels, r the model's resolution.
"""
import math

import numpy as np
import torch
from torchvision.transforms import v2

from clip import MEAN as CLIP_MEAN, STD as CLIP_STD  # the pixel statistics CLIP's weights expect


class MultiScaleCrop(torch.nn.Module):
    """TSN's multi-scale crop (mmaction MultiScaleCrop with random_crop=False, as in X-CLIP/ViFi-CLIP): height and
    width are each short_side * s for s in `scales`, at most one scale step apart, placed at one of five fixed
    positions (four corners, centre). One draw per clip, so all frames are cropped alike."""

    def __init__(self, scales=(1, 0.875, 0.75, 0.66)):
        super().__init__()
        self.scales = scales

    def forward(self, video):  # (T, 3, H, W) -> (T, 3, h, w)
        H, W = video.shape[-2:]
        sizes = [int(min(H, W) * s) for s in self.scales]
        pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= 1]
        h, w = pairs[int(torch.randint(len(pairs), ()))]
        dy, dx = (H - h) // 4, (W - w) // 4
        top, left = [(0, 0), (0, 4 * dx), (4 * dy, 0), (4 * dy, 4 * dx), (2 * dy, 2 * dx)][int(torch.randint(5, ()))]
        return v2.functional.crop(video, top, left, h, w)


# Training augmentation comes in two parts, so that the loader's workers do only the first:
#   geometry     resize, multi-scale crop, resize to r, flip: uint8 in, uint8 out, in the worker (cheap on uint8,
#                and 4x fewer bytes than float32 cross to the training device);
#   photometric  to float, colour jitter, grayscale, normalisation: batched on the training device. Its random
#                draws are still made in the worker (Photometric.draw), right after the geometry's, from the same
#                seeded generator and in the same order as a single pipeline would make them, and travel with the
#                clip as PHOTOMETRIC_PARAMS numbers. So an item's augmentation depends only on its seed, whichever
#                process applies it: --resume stays exact and N processes equal one.
# train_transform(r) chains the two for one clip; tests check it equals the split path exactly.
PHOTOMETRIC_PARAMS = 10  # per clip: jitter on, brightness, contrast, saturation, hue angle, op order (4), gray on
# Per-frame jitter draws one such row per frame, (T, PHOTOMETRIC_PARAMS); photometric() takes either shape.
_IDENTITY = (0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0)  # no jitter, no grayscale


def no_photometric():
    """The parameters of a clip that gets no jitter and no grayscale: photometric() then only normalises."""
    return torch.tensor(_IDENTITY, dtype=torch.float64)


def _luma(x):
    """(..., 3, H, W) -> (..., 1, H, W): ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses."""
    return (x[..., 0:1, :, :] * 0.2989 + x[..., 1:2, :, :] * 0.587 + x[..., 2:3, :, :] * 0.114)


def _per_clip(values, x):
    """(b,) numbers, already on x's device and dtype -> (b, 1, 1, 1, 1), to scale each clip of x (b, T, 3, H, W)."""
    return values.view(-1, 1, 1, 1, 1)


def _hue_matrices(angles):
    """(b,) angles (host numbers) -> (b, 3, 3) RGB -> RGB: to YIQ, turn the I/Q chroma plane by the angle, back."""
    yiq = ColorJitter.YIQ
    out = []
    for a in angles:
        cos, sin = math.cos(a), math.sin(a)  # sign chosen so a > 0 turns the way torchvision's hue does
        out.append(torch.linalg.inv(yiq) @ torch.tensor([[1, 0, 0], [0, cos, sin], [0, -sin, cos]]) @ yiq)
    return torch.stack(out) if out else torch.zeros(0, 3, 3)


# Each operation takes the clips x (b, T, 3, H, W) and their rows of the draws on the device: F (b, 3) the
# brightness, contrast and saturation factors, M (b, 3, 3) the hue matrices.
def _brightness(x, F, M):
    return (x * _per_clip(F[:, 0], x)).clamp_(0, 1)


def _contrast(x, F, M):  # blend with each frame's mean luma
    f = _per_clip(F[:, 1], x)
    return (x * f + _luma(x).mean((-3, -2, -1), keepdim=True) * (1 - f)).clamp_(0, 1)


def _saturation(x, F, M):  # blend with the luma picture
    f = _per_clip(F[:, 2], x)
    return (x * f + _luma(x) * (1 - f)).clamp_(0, 1)


def _hue(x, F, M):
    # Written as per-channel products rather than a batched matmul, so a clip's result never depends on which
    # other clips share its batch (exactness between batch sizes, hence between one process and N).
    c = [x[:, :, j:j + 1] for j in range(3)]  # 3 x (b, T, 1, H, W)
    rows = [sum(c[j] * M[:, i, j].view(-1, 1, 1, 1, 1) for j in range(3)) for i in range(3)]
    return torch.cat(rows, 2).clamp_(0, 1)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)  # the order of a draw's op indices


class DrawPlan:
    """A batch's photometric draws (b, PHOTOMETRIC_PARAMS), prepared on the host and sent to the device in ONE
    non-blocking copy: at each of the 4 jitter positions, which clips apply which operation (index lists, known
    to the host, so the loop below never reads the device), the factors, the hue matrices, and mean/std.

    Every number the host needs comes from the draws as the loader made them (host memory); the device gets one
    packed float32 buffer, pinned on CUDA, whose copy overlaps the step: no host-device synchronisation."""

    def __init__(self, params, mean=CLIP_MEAN, std=CLIP_STD):
        p = params.detach().to("cpu", torch.float64).numpy()  # host draws: a view, no copy
        on, b = p[:, 0] > 0, len(p)
        self.size = b
        self.groups = [[np.flatnonzero(on & (p[:, 5 + k] == op)) for op in range(4)] for k in range(4)]
        self.gray = np.flatnonzero(p[:, 9] > 0)
        parts = [p[:, 1:4].astype(np.float32).ravel(), _hue_matrices(p[:, 4].tolist()).numpy().ravel(),
                 np.asarray(mean, np.float32), np.asarray(std, np.float32)]
        self.offsets = {}  # (k, op) or "gray" -> (start, stop) of its clip indices in the packed buffer
        at = sum(len(q) for q in parts)
        for key, idx in [((k, op), self.groups[k][op]) for k in range(4) for op in range(4)] + [("gray", self.gray)]:
            if 0 < len(idx) < b:  # a group of every clip needs no index
                self.offsets[key] = (at, at + len(idx))
                parts.append(idx.astype(np.float32))  # exact: clip indices are far below 2**24
                at += len(idx)
        self.packed = torch.from_numpy(np.concatenate(parts))

    def to(self, device):
        """The packed buffer on `device`: one non-blocking copy (from pinned memory on CUDA)."""
        packed = self.packed.pin_memory() if device.type == "cuda" else self.packed
        self.on_device = packed.to(device, non_blocking=True)
        b = self.size
        self.F = self.on_device[:3 * b].view(b, 3)                                    # (b, 3)
        self.M = self.on_device[3 * b:12 * b].view(b, 3, 3)                           # (b, 3, 3)
        self.mean, self.std = self.on_device[12 * b:12 * b + 3], self.on_device[12 * b + 3:12 * b + 6]
        return self

    def index(self, key):
        """The device index of a group's clips (a slice of the packed buffer, converted on the device)."""
        start, stop = self.offsets[key]
        return self.on_device[start:stop].long()


def apply_jitter(x, params, plan=None):
    """Colour jitter on float clips x (b, T, 3, H, W) in [0, 1], each with its own drawn params (b, P) (host):
    the four operations in each clip's drawn order. At each of the 4 positions the clips are grouped by the
    operation they apply there, so every clip gets exactly its four operations."""
    plan = plan or DrawPlan(params).to(x.device)
    for k in range(4):
        for op, fn in enumerate(_JITTER_OPS):
            n = len(plan.groups[k][op])
            if n == plan.size:
                x = fn(x, plan.F, plan.M)
            elif n:
                sel = plan.index((k, op))
                x[sel] = fn(x[sel], plan.F[sel], plan.M[sel])
    return x


def photometric(videos, params, mean=CLIP_MEAN, std=CLIP_STD):
    """The photometric half of training augmentation, batched, on whatever device `videos` is on:
    uint8 (B, T, 3, H, W) and params (B, PHOTOMETRIC_PARAMS) from Photometric.draw, in host memory -> float
    (B, T, 3, H, W): to [0, 1], colour jitter, grayscale, normalisation with the model's mean/std. The draws
    reach the device in one non-blocking copy (DrawPlan); nothing here waits for the device. Per-frame draws,
    params (B, T, PHOTOMETRIC_PARAMS): every frame is then a clip of its own (contrast already uses each frame's
    mean)."""
    if params.dim() == 3:
        flat = videos.flatten(0, 1)[:, None]  # (B, T, 3, H, W) -> (B*T, 1, 3, H, W)
        return photometric(flat, params.flatten(0, 1), mean, std).view(videos.shape)
    if videos.device.type == "cpu" and len(videos) > 1:  # clip by clip stays in the CPU caches (3.6x faster, 32 clips)
        return torch.cat([photometric(v, p, mean, std) for v, p in zip(videos.split(1), params.split(1))])
    plan = DrawPlan(params, mean, std).to(videos.device)
    x = videos.to(torch.float32).mul_(1 / 255)  # torchvision's ToDtype(float32, scale=True), the same numbers
    x = apply_jitter(x, params, plan)
    if len(plan.gray) == plan.size:
        x = _luma(x).expand(-1, -1, 3, -1, -1).contiguous()  # R = G = B: the picture really turns gray
    elif len(plan.gray):
        sel = plan.index("gray")
        x[sel] = _luma(x[sel]).expand(-1, -1, 3, -1, -1)
    return x.sub_(plan.mean.view(3, 1, 1)).div_(plan.std.view(3, 1, 1))


class ColorJitter(torch.nn.Module):
    """Brightness, contrast, saturation and hue jitter in random order, one draw per clip, on float video in
    [0, 1]. Hue turns the chroma plane of YIQ by hue x 360 degrees: a linear stand-in for torchvision's HSV hue
    shift, which costs about 0.4 s per 8-frame clip on a CPU core against a few ms for this 3x3 product."""

    YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1):  # X-CLIP/ViFi-CLIP's strengths
        super().__init__()
        self.strengths, self.hue = (brightness, contrast, saturation), hue

    def draw(self, params):
        """Fill params[1:9] (brightness, contrast, saturation, hue angle, op order) from torch's generator."""
        b, c, s = (float(torch.empty(()).uniform_(1 - v, 1 + v)) for v in self.strengths)
        angle = 2 * math.pi * float(torch.empty(()).uniform_(-self.hue, self.hue))
        params[1:5] = torch.tensor([b, c, s, angle], dtype=params.dtype)
        params[5:9] = torch.randperm(4).to(params.dtype)
        params[0] = 1

    def forward(self, video):  # (T, 3, H, W) float
        params = no_photometric()
        self.draw(params)
        return apply_jitter(video[None].clone(), params[None])[0]


class Photometric(torch.nn.Module):
    """Colour jitter (p 0.8), grayscale (p 0.2) and normalisation for one clip; its draw() alone is what a loader
    worker runs, photometric() the batched application on the training device. per_frame=True: as ViFi-CLIP's
    pipeline (datasets/pipeline.py, ColorJitter and GrayScale), one coin per clip for each, but a new jitter draw
    (strengths and order) for every frame; grayscale is the same for all frames either way."""

    def __init__(self, mean=CLIP_MEAN, std=CLIP_STD, jitter=0.8, gray=0.2, per_frame=False):
        super().__init__()
        self.mean, self.std, self.p_jitter, self.p_gray, self.jitter = mean, std, jitter, gray, ColorJitter()
        self.per_frame = per_frame

    def draw(self, frames=1):
        """float64 (PHOTOMETRIC_PARAMS,): this clip's draws, in the order the one-clip pipeline always made them
        (jitter coin, its four numbers and order, grayscale coin), so seeded items keep their augmentation.
        per_frame: (frames, PHOTOMETRIC_PARAMS), the jitter coin, then each frame's numbers, then the gray coin."""
        params = no_photometric().repeat(frames if self.per_frame else 1, 1)  # (1 or T, P)
        if float(torch.rand(1)) < self.p_jitter:
            for row in params:
                self.jitter.draw(row)
        params[:, 9] = float(float(torch.rand(1)) < self.p_gray)
        return params if self.per_frame else params[0]

    def forward(self, video):  # uint8 (T, 3, h, w) -> float (T, 3, h, w)
        return photometric(torch.as_tensor(video)[None], self.draw(len(video))[None], self.mean, self.std)[0]


def train_geometry(resolution, flip=True):
    """The geometric half on a uint8 (T, 3, H, W) clip -> uint8 (T, 3, r, r), one random draw per clip."""
    return v2.Compose([
        v2.Resize(int(256 / 224 * resolution)),  # short side 256 for a 224 model, scaled for other resolutions
        MultiScaleCrop(),
        v2.Resize((resolution, resolution)),
        *([v2.RandomHorizontalFlip()] if flip else []),
        v2.ToPureTensor(),
    ])


class WorkerTransform:
    """What a loader worker runs on a training clip when the photometric half is deferred to the training device:
    uint8 (T, 3, H, W) -> (uint8 (T, 3, r, r), float64 (PHOTOMETRIC_PARAMS,)). photometric() on a batch of these
    gives exactly what train_transform gives clip by clip. A class so that spawned workers can pickle it."""

    def __init__(self, resolution, flip=True, per_frame=False):
        self.geometry, self.photometric = train_geometry(resolution, flip), Photometric(per_frame=per_frame)
        self.transforms = [*self.geometry.transforms, self.photometric]  # the steps, as train_transform lists them

    def __call__(self, video):
        clip = self.geometry(video)  # the geometry's draws first, then the photometric ones: the one-clip order
        return clip, self.photometric.draw(len(clip))


def train_transform(resolution, flip=True, mean=CLIP_MEAN, std=CLIP_STD, per_frame=False):
    """Training augmentation on a uint8 tv_tensors.Video (T, 3, H, W) -> float (T, 3, r, r), one random draw per
    clip (per_frame: the colour jitter's per frame): X-CLIP/ViFi-CLIP's pipeline, the geometric half then the
    photometric half. flip=False for SSv2 by default, where left/right is part of the label. mean/std: the model's
    pixel normalisation (CLIP's, or ViCLIP's ImageNet statistics)."""
    return v2.Compose([*train_geometry(resolution, flip).transforms, Photometric(mean, std, per_frame=per_frame)])


def normalize(videos, mean=CLIP_MEAN, std=CLIP_STD):
    """uint8 (..., 3, H, W) -> float32 (x / 255 - mean) / std on videos' own device: what ToDtype(float32,
    scale=True) and Normalize give, the same numbers. The test views cross to the device as uint8 and are
    normalised there (evaluate.py), as the training clips are (photometric)."""
    x = videos.to(torch.float32).mul_(1 / 255)
    m = torch.as_tensor(mean, dtype=x.dtype).view(3, 1, 1).to(x.device, non_blocking=True)
    s = torch.as_tensor(std, dtype=x.dtype).view(3, 1, 1).to(x.device, non_blocking=True)
    return x.sub_(m).div_(s)


class TestTransform:
    """Single view: short side to int(256/224 x r), then the centre r x r crop (T, 3, r, r), ViFi-CLIP's single-crop
    test (Resize 256, CenterCrop 224 for a 224 model). Three crops: short side to r, then three r x r crops along
    the long side (3, T, 3, r, r), its multi-view test. A class rather than a closure so that spawned workers can
    pickle it. uint8=True leaves the views uint8 (4x fewer bytes in the loader's queues and shared memory; a
    30-view test batch of 8 videos at 224 px is 276 MiB instead of 1.08 GiB) for normalize() on the device."""

    def __init__(self, resolution, crops=1, mean=CLIP_MEAN, std=CLIP_STD, uint8=False):
        self.size, self.crops = resolution, crops
        short = int(256 / 224 * resolution) if crops == 1 else resolution
        scale = [] if uint8 else [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        self.prepare = v2.Compose([v2.Resize(short), *scale, v2.ToPureTensor()])

    def __call__(self, video):  # uint8 (T, 3, H, W)
        video, r = self.prepare(video), self.size
        H, W = video.shape[-2:]
        if self.crops == 1:
            return video[..., (H - r) // 2:(H - r) // 2 + r, (W - r) // 2:(W - r) // 2 + r]
        if H > W:
            return torch.stack([video[..., s:s + r, :] for s in (0, (H - r) // 2, H - r)])
        return torch.stack([video[..., s:s + r] for s in (0, (W - r) // 2, W - r)])
