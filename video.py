"""Reading one video into a clip tensor: exact sparse decoding, TSN frame sampling, and the clip transforms.

(data.py decides which videos and labels; this file turns one video into (T, 3, H, W). Shape legend: T frames,
H x W pixels.)

Decoding. torchvision >= 0.22 no longer decodes video, so this goes through PyAV (FFmpeg). Frames are numbered as
a plain sequential decode numbers them: frame i is the i-th picture `container.decode(video=0)` yields from the
start. read_frames returns exactly those pictures, but gets there cheaply:
1. Demux the packets once (no decoding; a small fraction of the cost): their presentation timestamps (pts),
   sorted, are the frame timeline, so frame i is the picture whose pts is timeline[i]. Keyframe packets say where
   decoding may start. Sorting the packet pts (rather than pts * time_base * rate) stays exact on
   variable-frame-rate files, as in torchcodec's "exact" seek mode.
2. For each wanted frame, seek to the last keyframe at or before it (unless the decoder is already past that
   keyframe, then decoding simply goes on), decode forward, and stop at the last wanted frame. Packets of
   pictures nobody asked for are decoded with skip_frame=NONREF: FFmpeg then skips the pictures no other picture
   refers to (B-frames, mostly), which by definition cannot change any other picture.
3. Every decoded picture is checked against the timeline (known pts, strictly increasing, the seek landed at or
   before the keyframe). If pts are missing or made up (H.264 in AVI), it falls back to counting frames from the
   start of the file, which is the definition itself, still stopping at the last wanted frame.
Pre-extracted frame folders (<video>/img_00001.jpg, ...) are read with torchvision.io instead.

Sampling and transforms follow X-CLIP / ViFi-CLIP (TSN segments, multi-scale crop, flip, colour jitter,
grayscale, CLIP normalisation), written with torchvision.transforms.v2 on uint8 video tensors; training
augmentation is split into a geometric half (loader workers, uint8) and a photometric half (batched on the
training device), see train_geometry / photometric below.
"""
import bisect
import math
import os
import re
import warnings

import av
import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's preprocessing statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ogv")
FRAME_FILE = re.compile(r"img_(\d+)\.jpe?g$", re.IGNORECASE)  # the TSN / mmaction frame-folder naming

decoded_frames = 0  # pictures the decoder has returned in this process; tests compare sparse and full reads with it


class VideoError(RuntimeError):
    """A video that cannot be read: missing, empty, truncated, unsupported codec, or shorter than asked.

    `available` is the number of frames a sequential decode actually produced, when that is known (0 otherwise).
    """

    def __init__(self, message, available=0):
        super().__init__(message)
        self.available = available


class _Unreliable(Exception):
    """Timestamps do not identify frames in this file; count from the start instead."""


def frame_files(folder):
    """Sorted img_<number>.jpg paths of a frame folder (sorted by number, so img_10 follows img_9)."""
    found = [(int(m.group(1)), name) for name in os.listdir(folder) if (m := FRAME_FILE.match(name))]
    return [os.path.join(folder, name) for _, name in sorted(found)]


class FrameFolder:
    """A pre-extracted video: a folder of JPEG frames, read with torchvision.io."""

    def __init__(self, path):
        self.path, self.files = path, frame_files(path)
        self.length = len(self.files)

    def read(self, indices):
        """uint8 (T, H, W, 3) frames at the given 0-based indices."""
        if max(indices) >= self.length:
            raise VideoError(f"{self.path}: frame {max(indices)} asked, folder has {self.length}", self.length)
        try:
            with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs deprecated (for TorchCodec)
                warnings.simplefilter("ignore", DeprecationWarning)
                frames = {i: decode_jpeg(read_file(self.files[i]), mode=ImageReadMode.RGB) for i in set(indices)}
        except RuntimeError as e:
            raise VideoError(f"{self.path}: {e}") from e
        return torch.stack([frames[i].permute(1, 2, 0) for i in indices])  # (3, H, W) -> (H, W, 3) each

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Video:
    """An opened video file: its frame timeline (from one demux pass) and exact sparse reads."""

    def __init__(self, path):
        self.path = path
        self.container = None
        try:
            if os.path.getsize(path) == 0:
                raise VideoError(f"{path}: empty file")
            self.container = av.open(path)
            if not self.container.streams.video:
                raise VideoError(f"{path}: no video stream")
            self.stream = self.container.streams.video[0]
            if self.stream.codec_context is None:
                raise VideoError(f"{path}: no decoder for its video codec")
            self._scan()
        except (av.FFmpegError, OSError, EOFError) as e:
            self.close()
            raise VideoError(f"{path}: cannot open ({type(e).__name__}: {e})") from e
        except VideoError:
            self.close()
            raise

    def _scan(self):
        """Demux every packet once: frame timeline (sorted pts), keyframes, and the frame count."""
        pts, keys, count = [], [], 0
        for packet in self.container.demux(self.stream):
            # size 0: the end-of-stream flush packet; is_discard: edit-list frames the decoder drops.
            if packet.size == 0 or packet.is_discard:
                continue
            count += 1
            pts.append(packet.pts)
            if packet.is_keyframe and packet.pts is not None:
                keys.append((packet.pts, packet.dts))
        self.length = count
        self.timeline = None  # None: pts cannot identify frames, read by counting from the start
        # A codec that reorders pictures (B-frames) must show reordered pts; pts already in decode order then are
        # decode counters the container made up (H.264 in AVI), not presentation times.
        made_up = self.stream.codec_context.has_b_frames and pts == sorted(pts, key=lambda p: p or 0)
        if count and None not in pts and len(set(pts)) == count and not made_up:
            self.timeline = sorted(pts)
            order = {p: i for i, p in enumerate(self.timeline)}
            # FFmpeg seeks AVI and FLV by decode time (their index holds dts), MP4/MOV and Matroska by pts.
            by_dts = self.container.format.name in ("avi", "flv")
            self.keys = sorted((order[p], d if by_dts and d is not None else p) for p, d in keys)  # (frame, seek ts)

    def read(self, indices):
        """uint8 (T, H, W, 3) frames at the given 0-based indices (any order, repeats allowed)."""
        indices = [int(i) for i in indices]
        if not indices or min(indices) < 0:
            raise ValueError(f"frame indices must be non-negative and non-empty, got {indices}")
        need = sorted(set(indices))
        if need[-1] >= self.length:
            raise VideoError(f"{self.path}: frame {need[-1]} asked, video has {self.length}", self.length)
        try:
            got = None
            if self.timeline is not None:
                try:
                    got = self._read_seeking(need)
                except _Unreliable:
                    pass
            if got is None:
                got = self._read_counting(need)
        except (av.FFmpegError, OSError, EOFError, ValueError) as e:  # ValueError: e.g. a pixel format without RGB
            raise VideoError(f"{self.path}: cannot decode ({type(e).__name__}: {e})") from e
        return torch.from_numpy(np.stack([got[i] for i in indices]))

    def _read_seeking(self, need):
        """Seek to the keyframe before each wanted frame (when the decoder is not already past it)."""
        order = {p: i for i, p in enumerate(self.timeline)}
        want_pts = {self.timeline[i] for i in need}
        key_frames = [k for k, _ in self.keys]
        got, frames, cur, need_set = {}, None, -1, set(need)
        for w in need:
            if w in got:
                continue
            j = bisect.bisect_right(key_frames, w) - 1  # last keyframe at or before w
            if j < 0:
                raise _Unreliable  # the file starts without a keyframe
            if frames is None or key_frames[j] > cur + 1:
                frames = self._decode_after_seek(j, w, order, want_pts)
            for i, frame in frames:
                cur = i
                if i in need_set and i not in got:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= w:
                    break
            if w not in got:
                raise _Unreliable  # stream ended (or skipped) before a frame the timeline promised
        return got

    def _decode_after_seek(self, j, w, order, want_pts):
        """Yield (frame index, picture) from keyframe j on; step back a keyframe if the seek landed past it."""
        global decoded_frames
        ctx, key = self.stream.codec_context, self.keys[j][0]
        while j >= 0:
            last, started = None, False
            self.container.seek(self.keys[j][1], stream=self.stream, backward=True)
            for packet in self.container.demux(self.stream):
                # Wanted pictures and keyframes are decoded; others only if another picture refers to them.
                keep = packet.pts in want_pts or packet.is_keyframe or packet.pts is None
                ctx.skip_frame = "DEFAULT" if keep else "NONREF"
                for frame in packet.decode():
                    decoded_frames += 1
                    i = order.get(frame.pts)
                    if i is None or (last is not None and i <= last):
                        raise _Unreliable  # pts do not identify pictures in this file
                    last = i
                    if not started:
                        if i < key:
                            continue  # an earlier GOP, or open-GOP leading pictures that miss their references
                        if i > key:
                            break  # the demuxer's seek landed past our keyframe
                        started = True
                    yield i, frame
                else:
                    continue
                break  # landed past `key`: seek from the keyframe before
            else:
                return  # end of stream
            j -= 1
        raise _Unreliable

    def _read_counting(self, need):
        """Reference behaviour: reopen and count decoded pictures from the start, up to the last wanted one."""
        global decoded_frames
        self.container.close()
        self.container = av.open(self.path)
        self.stream = self.container.streams.video[0]
        got, wanted, n = {}, set(need), 0
        for n, frame in enumerate(self.container.decode(self.stream), 1):
            decoded_frames += 1
            if n - 1 in wanted:
                got[n - 1] = frame.to_ndarray(format="rgb24")
            if n - 1 == need[-1]:
                return got
        raise VideoError(f"{self.path}: frame {need[-1]} asked, only {n} frames decode", n)

    def close(self):
        if self.container is not None:
            self.container.close()
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_video(path):
    """A Video for a file, a FrameFolder for a directory of img_<number>.jpg; both have .length and .read()."""
    if os.path.isdir(path):
        folder = FrameFolder(path)
        if folder.length == 0:
            raise VideoError(f"{path}: folder without img_<number>.jpg frames")
        return folder
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    return Video(path)


def read_frames(path, indices):
    """uint8 tensor (T, H, W, 3): the frames at `indices` (0-based, any order, repeats allowed) of a video file
    or frame folder, equal to a full sequential PyAV decode at the same indices. Raises VideoError."""
    with open_video(path) as video:
        return video.read(indices)


def video_length(path):
    """Number of frames a full sequential decode yields.

    MP4/MOV: the container's sample count (stream.frames; the sample table lists every coded picture). Other
    containers (AVI headers may count dropped frames, Matroska has no count): the demuxed packets are counted.
    """
    if os.path.isdir(path):
        return FrameFolder(path).length
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.frames > 0 and container.format.name.startswith("mov"):
                return stream.frames
    except (av.FFmpegError, OSError, IndexError) as e:
        raise VideoError(f"{path}: cannot open ({type(e).__name__}: {e})") from e
    with Video(path) as video:
        return video.length


# ---------------------------------------------------------------- frame sampling and transforms


def sample_indices(length, num_frames, train, offset=None):
    """TSN segment sampling (Wang et al. 2016, as X-CLIP/ViFi-CLIP's SampleFrames): cut [0, length) into
    num_frames equal segments and take one frame from each, at a random position per segment in training and at
    the segment centre at test. offset in [0, 1) fixes the position inside every segment instead (0.5 = centre);
    a multi-view test takes clips n = 0..N-1 at offset (n + 0.5) / N. Short videos repeat frames."""
    if length < 1:
        raise ValueError(f"video length must be >= 1, got {length}")
    if offset is None:
        u = torch.rand(num_frames).tolist() if train else [0.5] * num_frames
    elif 0 <= offset < 1:
        u = [float(offset)] * num_frames
    else:
        raise ValueError(f"offset must be in [0, 1), got {offset}")
    seg = length / num_frames
    return [min(int((k + u[k]) * seg), length - 1) for k in range(num_frames)]


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
