"""The clip transforms: training augmentation and the test views, on uint8 video tensors (T, 3, H, W).

They follow X-CLIP / ViFi-CLIP, as the MSTA paper's training does ("Efficient Transfer Learning for
Video-language Foundation Models", CVPR 2025, Sec. 4.1): TSN's multi-scale crop, horizontal flip, colour jitter,
grayscale and CLIP normalisation for training; a short-side resize and 1 or 3 crops at test. Written with
torchvision.transforms.v2; the colour jitter is written out here so that it runs batched, each clip with its own
draws (photometric). Which frames a clip holds is video/decode.py's (sample_indices); data.py applies these.

Shape legend: B clips, T frames, H x W pixels, r the model's resolution.
"""
import math

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
_IDENTITY = (0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0)  # no jitter, no grayscale


def no_photometric():
    """The parameters of a clip that gets no jitter and no grayscale: photometric() then only normalises."""
    return torch.tensor(_IDENTITY, dtype=torch.float64)


def _luma(x):
    """(..., 3, H, W) -> (..., 1, H, W): ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses."""
    return (x[..., 0:1, :, :] * 0.2989 + x[..., 1:2, :, :] * 0.587 + x[..., 2:3, :, :] * 0.114)


def _per_clip(values, x):
    """(b,) numbers -> (b, 1, 1, 1, 1) on x's device and dtype, to scale each clip of x (b, T, 3, H, W)."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1, 1)


def _hue_matrices(angles):
    """(b,) angles -> (b, 3, 3) RGB -> RGB: to YIQ, turn the I/Q chroma plane by the angle, back to RGB."""
    yiq = ColorJitter.YIQ
    out = []
    for a in angles.tolist():
        cos, sin = math.cos(a), math.sin(a)  # sign chosen so a > 0 turns the way torchvision's hue does
        out.append(torch.linalg.inv(yiq) @ torch.tensor([[1, 0, 0], [0, cos, sin], [0, -sin, cos]]) @ yiq)
    return torch.stack(out)


def _brightness(x, p):
    return (x * _per_clip(p[:, 1], x)).clamp_(0, 1)


def _contrast(x, p):  # blend with each frame's mean luma
    f = _per_clip(p[:, 2], x)
    return (x * f + _luma(x).mean((-3, -2, -1), keepdim=True) * (1 - f)).clamp_(0, 1)


def _saturation(x, p):  # blend with the luma picture
    f = _per_clip(p[:, 3], x)
    return (x * f + _luma(x) * (1 - f)).clamp_(0, 1)


def _hue(x, p):
    m = _hue_matrices(p[:, 4]).to(device=x.device, dtype=x.dtype)  # (b, 3, 3)
    # Written as per-channel products rather than a batched matmul, so a clip's result never depends on which
    # other clips share its batch (exactness between batch sizes, hence between one process and N).
    c = [x[:, :, j:j + 1] for j in range(3)]  # 3 x (b, T, 1, H, W)
    rows = [sum(c[j] * m[:, i, j].view(-1, 1, 1, 1, 1) for j in range(3)) for i in range(3)]
    return torch.cat(rows, 2).clamp_(0, 1)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)  # the order of a draw's op indices


def apply_jitter(x, params):
    """Colour jitter on float clips x (b, T, 3, H, W) in [0, 1], each with its own drawn params (b, P) (CPU):
    the four operations in each clip's drawn order. At each of the 4 positions the clips are grouped by the
    operation they apply there, so every clip gets exactly its four operations."""
    params = params.detach().to("cpu", torch.float64)
    on = params[:, 0] > 0
    for k in range(4):
        for op, fn in enumerate(_JITTER_OPS):
            idx = torch.nonzero(on & (params[:, 5 + k] == op)).flatten()
            if len(idx) == len(params):
                x = fn(x, params)
            elif len(idx):
                sel = idx.to(x.device)
                x[sel] = fn(x[sel], params[idx])
    return x


def photometric(videos, params, mean=CLIP_MEAN, std=CLIP_STD):
    """The photometric half of training augmentation, batched, on whatever device `videos` is on:
    uint8 (B, T, 3, H, W) and params (B, PHOTOMETRIC_PARAMS) from Photometric.draw -> float (B, T, 3, H, W):
    to [0, 1], colour jitter, grayscale, normalisation with the model's mean/std."""
    if videos.device.type == "cpu" and len(videos) > 1:  # clip by clip stays in the CPU caches (3.6x faster, 32 clips)
        return torch.cat([photometric(v, p, mean, std) for v, p in zip(videos.split(1), params.split(1))])
    x = videos.to(torch.float32).mul_(1 / 255)  # torchvision's ToDtype(float32, scale=True), the same numbers
    x = apply_jitter(x, params)
    gray = torch.nonzero(params.detach().cpu()[:, 9] > 0).flatten()
    if len(gray):
        sel = gray.to(x.device)
        x[sel] = _luma(x[sel]).expand(-1, -1, 3, -1, -1)  # R = G = B: the picture really turns gray
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x.sub_(m).div_(s)


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
    worker runs, photometric() the batched application on the training device."""

    def __init__(self, mean=CLIP_MEAN, std=CLIP_STD, jitter=0.8, gray=0.2):
        super().__init__()
        self.mean, self.std, self.p_jitter, self.p_gray, self.jitter = mean, std, jitter, gray, ColorJitter()

    def draw(self):
        """float64 (PHOTOMETRIC_PARAMS,): this clip's draws, in the order the one-clip pipeline always made them
        (jitter coin, its four numbers and order, grayscale coin), so seeded items keep their augmentation."""
        params = no_photometric()
        if float(torch.rand(1)) < self.p_jitter:
            self.jitter.draw(params)
        params[9] = float(float(torch.rand(1)) < self.p_gray)
        return params

    def forward(self, video):  # uint8 (T, 3, h, w) -> float (T, 3, h, w)
        return photometric(torch.as_tensor(video)[None], self.draw()[None], self.mean, self.std)[0]


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

    def __init__(self, resolution, flip=True):
        self.geometry, self.photometric = train_geometry(resolution, flip), Photometric()
        self.transforms = [*self.geometry.transforms, self.photometric]  # the steps, as train_transform lists them

    def __call__(self, video):
        clip = self.geometry(video)  # the geometry's draws first, then the photometric ones: the one-clip order
        return clip, self.photometric.draw()


def train_transform(resolution, flip=True, mean=CLIP_MEAN, std=CLIP_STD):
    """Training augmentation on a uint8 tv_tensors.Video (T, 3, H, W) -> float (T, 3, r, r), one random draw per
    clip: X-CLIP/ViFi-CLIP's pipeline, the geometric half then the photometric half. No flip for SSv2, where
    left/right is part of the label. mean/std: the model's pixel normalisation (CLIP's, or ViCLIP's ImageNet
    statistics)."""
    return v2.Compose([*train_geometry(resolution, flip).transforms, Photometric(mean, std)])


class TestTransform:
    """Single view: short side to int(256/224 x r), then the centre r x r crop (T, 3, r, r), ViFi-CLIP's single-crop
    test (Resize 256, CenterCrop 224 for a 224 model). Three crops: short side to r, then three r x r crops along
    the long side (3, T, 3, r, r), its multi-view test. A class rather than a closure so that spawned workers can
    pickle it."""

    def __init__(self, resolution, crops=1, mean=CLIP_MEAN, std=CLIP_STD):
        self.size, self.crops = resolution, crops
        short = int(256 / 224 * resolution) if crops == 1 else resolution
        self.prepare = v2.Compose([v2.Resize(short), v2.ToDtype(torch.float32, scale=True),
                                   v2.Normalize(mean, std), v2.ToPureTensor()])

    def __call__(self, video):  # uint8 (T, 3, H, W)
        video, r = self.prepare(video), self.size
        H, W = video.shape[-2:]
        if self.crops == 1:
            return video[..., (H - r) // 2:(H - r) // 2 + r, (W - r) // 2:(W - r) // 2 + r]
        if H > W:
            return torch.stack([video[..., s:s + r, :] for s in (0, (H - r) // 2, H - r)])
        return torch.stack([video[..., s:s + r] for s in (0, (W - r) // 2, W - r)])
