"""Reading one video into a clip tensor: exact sparse decoding and TSN frame sampling.

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

Sampling follows X-CLIP / ViFi-CLIP (TSN segments, sample_indices below). The clip transforms (multi-scale crop,
flip, colour jitter, grayscale, CLIP normalisation, test crops) are in video/transforms.py: training augmentation is
split there into a geometric half (loader workers, uint8) and a photometric half (batched on the training device).
"""
import bisect
import os
import re
import warnings

import av
import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file

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


# ----------------------------------------------------------------------------------- frame sampling


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
