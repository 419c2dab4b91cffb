"""A whole video decoded in order, frame after frame, and re-encoded: what `python data.py verify` checks (an empty
file, no video stream, an undecodable or truncated one is a VideoError with the reason) and what prepare.py
converts (encode_mp4; the keyframe interval and x264 settings are measured in prepare.py's docstring).

Training and test reads are sparse instead (decode.py): they seek to the frames they sample.
"""
import fractions
import os

import av
from av.video.frame import PictureType

from video.decode import VideoError

GOP = 8  # frames between keyframes (prepare.py's docstring: measured with --measure-gop)
CRF = 23  # libx264's default quality
PRESET = "veryfast"  # encoding speed: one pass over a dataset
TUNE = "fastdecode"  # no CABAC, deblocking or weighted prediction: about half the decoding time for ~20% more disk
COMPLETE = 0.95  # a source decoding fewer than this share of the frames its container announces is truncated


def output_size(width, height, short_side):
    """(w, h) with the short side at most short_side, the aspect kept, both even (4:2:0 chroma needs it)."""
    scale = min(1.0, short_side / min(width, height))
    even = lambda x: max(2, int(round(x * scale / 2)) * 2)  # noqa: E731
    return even(width), even(height)


def announced_frames(container, stream):
    """Frames the container says the video has (sample count, or duration x rate), or None when it says not."""
    if stream.frames > 0:
        return stream.frames
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return int(round(float(stream.duration * stream.time_base * rate)))
    if container.duration and rate:
        return int(round(container.duration / 1e6 * float(rate)))
    return None


def decoded_frames(src, short_side):
    """Yield (frame index, av.VideoFrame resized to the output size, rate) of a sequential decode of src;
    raises VideoError for an unreadable or truncated source."""
    if os.path.getsize(src) == 0:
        raise VideoError("empty file")
    try:
        with av.open(src) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            expected, rate = announced_frames(container, stream), stream.average_rate or stream.guessed_rate
            rate = fractions.Fraction(rate) if rate else fractions.Fraction(30)
            n = 0
            for frame in container.decode(stream):
                w, h = output_size(frame.width, frame.height, short_side)
                yield n, frame.reformat(w, h, format="yuv420p", interpolation="AREA"), rate
                n += 1
    except av.FFmpegError as e:
        raise VideoError(f"cannot decode ({type(e).__name__}: {e})") from e
    if n == 0:
        raise VideoError("no frame decodes")
    if expected and n < COMPLETE * expected:
        raise VideoError(f"truncated: {n} of the {expected} frames its container announces decode")


def encode_mp4(src, tmp, short_side, gop, crf, tune=TUNE):
    """Re-encode src into tmp (MP4, H.264, no audio); returns the frame count."""
    with av.open(tmp, "w", format="mp4") as out:
        stream, n = None, 0
        for n, frame, rate in decoded_frames(src, short_side):
            if stream is None:
                stream = out.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
                # keyint = min-keyint = gop, no scene-cut keyframes: a keyframe exactly every gop frames.
                stream.options = {"crf": str(crf), "preset": PRESET, "g": str(gop), "keyint_min": str(gop),
                                  "sc_threshold": "0", **({"tune": tune} if tune else {})}
                stream.codec_context.thread_count = 1  # the parallelism is --workers processes
            frame.pts, frame.time_base = n, 1 / rate
            # The decoder marks the source's own keyframes, and libx264 would keep them as extra keyframes.
            frame.pict_type = PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode())  # the encoder's delayed frames
    return n + 1
