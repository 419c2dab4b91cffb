"""Prepare a copy of a dataset that the loader reads fast: `python prepare.py --dataset ucf101 --data-root
data/ucf101 --output data/ucf101-256` (the practice of the video-CLIP codebases, e.g. ViFi-CLIP's and
X-CLIP's resized Kinetics copies, made one command).

The copy keeps the official layout: every file that is not a video (class lists, split lists, label CSV/JSON) is
copied as it is, and every video is re-encoded with PyAV to
  - short side --short-side (256; smaller videos keep their size: the training transform upsamples anyway),
  - H.264 (libx264, CRF --crf) in MP4, a keyframe every --gop frames (GOP below), no audio,
  - exactly the source's frames, in order (frame i of the copy is frame i of a sequential decode of the source),
    at the source's average frame rate,
so every reader, split and list file works unchanged: data.py finds videos by path without extension, so
`UCF-101/ApplyEyeMakeup/v_..._c01.avi` in a split list finds the copy's `v_..._c01.mp4`. MP4 rather than the
source's own container on purpose: H.264 inside AVI carries no presentation timestamps, and video/decode.py must then
decode from the start of the file to count frames, which is exactly the cost this copy is made to remove.
--frames writes frame folders instead (<video>/img_00001.jpg ...), which data.py reads wherever a video works.

Keyframe interval (--gop, default GOP) and x264 tune: a sparse read of 8 TSN frames decodes, per wanted frame,
the pictures from the keyframe before it (video/decode.py), so a shorter GOP decodes fewer pictures but costs disk.
`python prepare.py --measure-gop VIDEO` re-encodes a video with several settings and prints the file size and
the pictures decoded and CPU time of 8-frame training reads; on benchmark.py's 10-s 340x256 test clip (README
"Preparing a dataset" has the table) GOP 8 decodes 27 pictures where the x264 default (GOP 250) decodes 154,
and tune=fastdecode (no CABAC, deblocking or weighted prediction) halves the read's CPU time for 17% more disk.
GOP 8 rather than 16: 16 reads only ~8% slower on 37% less disk, but decodes 45 pictures, more than the quarter
of the original's that the benchmark's loader target allows; `--gop 16` is the choice when disk is short. Shorter than 8 costs
disk (GOP 4: +60%) for no measurable time.

Idempotent and resumable: a video whose output exists is skipped, each output is written under
<output>/.prepare-tmp and renamed into place when complete, so a killed run leaves no half-written video where
a reader would find it. Videos are converted by --workers processes. A source that cannot be read (empty,
truncated, no video stream; "truncated" = fewer than 95% of the frames its container announces decode) is
listed at the end and counted as failed; the run goes on, and the copy's readers count it as missing.
"""
import filecmp
import multiprocessing
import os
import shutil
import statistics
import sys
import time

import av
import torch

import data
from harness import runs
from video import batches, decode
from video.sequential import CRF, GOP, TUNE, decoded_frames, encode_mp4

TMP = ".prepare-tmp"


class PrepareError(Exception):
    """A problem the user can fix from the command line: one line, exit status 2."""


def write_frames(src, tmp, short_side):
    """Decode src into a folder of img_00001.jpg ... (JPEG quality 95); returns the frame count."""
    from torchvision.io import encode_jpeg  # noqa: PLC0415 (only --frames needs it)
    import warnings

    os.makedirs(tmp)
    n = 0
    with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs deprecated (for TorchCodec)
        warnings.simplefilter("ignore", DeprecationWarning)
        for n, frame, _ in decoded_frames(src, short_side):
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
            with open(os.path.join(tmp, f"img_{n + 1:05d}.jpg"), "wb") as f:
                f.write(encode_jpeg(rgb, quality=95).numpy().tobytes())
    return n + 1


def convert(job):
    """One video, in a worker process: (relative source path, "converted" or "failed", message)."""
    rel, src, dst, tmp, opts = job
    try:
        if opts["frames"]:
            n = write_frames(src, tmp, opts["short_side"])
        else:
            n = encode_mp4(src, tmp, opts["short_side"], opts["gop"], opts["crf"])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(tmp, dst)  # atomic: a reader sees the whole video or none
        return rel, "converted", f"{n} frames"
    except (decode.VideoError, av.FFmpegError, OSError, ValueError) as e:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        return rel, "failed", str(e)


def plan(root, output, frames):
    """Walk the source: ([(rel, src, dst)] videos to convert, [(src, dst)] other files to copy)."""
    videos, files, taken = [], [], {}
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            src = os.path.join(d, name)
            rel = os.path.relpath(src, root)
            if name.lower().endswith(decode.VIDEO_EXTENSIONS):
                stem = os.path.splitext(rel)[0]
                dst = os.path.join(output, stem if frames else stem + ".mp4")
                if dst in taken:  # x.avi and x.mp4 side by side would make the same output
                    raise PrepareError(f"{rel} and {taken[dst]} would both become {dst}; move one away first")
                taken[dst] = rel
                videos.append((rel, src, dst))
            else:
                files.append((src, os.path.join(output, rel)))
    return videos, files


def copy_files(files, log):
    """Copy the non-video files (lists, labels) that are not there yet, atomically. A file already there is never
    overwritten (it may be the user's); one that differs from its source is named."""
    copied = 0
    for src, dst in files:
        if os.path.exists(dst):
            if not (os.path.isfile(dst) and filecmp.cmp(src, dst, shallow=False)):
                log(f"kept {dst}: it differs from {src} (delete it to copy the source's again)")
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst + ".part")
        os.replace(dst + ".part", dst)
        copied += 1
    return copied


def prepare(dataset, root, output, short_side=256, gop=GOP, crf=CRF, frames=False, workers=1, log=print):
    """Convert a dataset; returns dict(converted=[...], skipped=[...], failed=[(rel, why)], copied=n)."""
    root, output = os.path.abspath(root), os.path.abspath(output)
    if not os.path.isdir(root):
        raise PrepareError(f"--data-root {root}: no such folder")
    if os.path.commonpath([root, output]) in (root, output):
        raise PrepareError(f"--output {output} must be outside --data-root {root} and not contain it "
                           "(the copy never writes into the source)")
    if dataset != "any":
        data.class_names(dataset, root)  # the layout is checked before any work (DatasetError: one line)
    videos, files = plan(root, output, frames)
    if not videos:
        raise PrepareError(f"no video files ({', '.join(decode.VIDEO_EXTENSIONS)}) under {root}")
    tmp_dir = os.path.join(output, TMP)
    shutil.rmtree(tmp_dir, ignore_errors=True)  # what a killed run left half-written
    os.makedirs(tmp_dir)
    copied = copy_files(files, log)
    opts = dict(short_side=short_side, gop=gop, crf=crf, frames=frames)
    todo = [(rel, src, dst, os.path.join(tmp_dir, f"{k}" + ("" if frames else ".mp4")), opts)
            for k, (rel, src, dst) in enumerate(videos) if not os.path.exists(dst)]
    result = dict(converted=[], skipped=[rel for rel, _, dst in videos if os.path.exists(dst)], failed=[],
                  copied=copied)
    log(f"prepare: {len(videos)} videos under {root} -> {output} ({'frame folders' if frames else 'H.264 MP4'}, "
        f"short side {short_side}{'' if frames else f', keyframe every {gop} frames'}); {len(result['skipped'])} "
        f"already done, {len(todo)} to convert with {workers} worker(s); {copied} other file(s) copied")
    progress, t0 = runs.Logger(), time.time()
    with multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn").Pool(max(1, workers)) as pool:
        for k, (rel, status, message) in enumerate(pool.imap_unordered(convert, todo), 1):
            result[status].append(rel if status == "converted" else (rel, message))
            rate = k / (time.time() - t0)
            eta = runs.hms((len(todo) - k) / rate)
            progress.progress(f"[{k}/{len(todo)}] converted {len(result['converted'])} failed "
                              f"{len(result['failed'])}  {rate:.1f} videos/s  ETA {eta}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    if progress.tty:
        print()  # end the rewritten progress line
    for rel, why in result["failed"]:
        log(f"failed: {rel}: {why}")
    log(f"done in {time.time() - t0:.0f} s: converted {len(result['converted'])}, skipped {len(result['skipped'])} "
        f"(already done), failed {len(result['failed'])} (unreadable sources, listed above; the copy's readers "
        f"count them as missing)")
    return result


# ---------------------------------------------------------------------------------------------- --measure-gop
def measure_gop(path, settings=((4, TUNE), (8, None), (8, TUNE), (16, TUNE), (32, TUNE), (250, None)),
                short_side=256, reads=20):
    """Per (GOP, x264 tune): bytes per second of video, and the mean pictures decoded and median CPU seconds
    (this process, all its threads: other load on the machine does not count) of `reads` 8-frame training
    reads (random TSN offsets, seeded) of the re-encoded video. Returns a list of dicts."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gop, tune in settings:
            out = os.path.join(tmp, f"gop{gop}-{tune}.mp4")
            n = encode_mp4(path, out, short_side, gop, CRF, tune)
            with av.open(out) as c:
                seconds = float(c.duration / 1e6)
            g = torch.Generator().manual_seed(0)
            draws = [[min(int((k + float(u)) * n / 8), n - 1) for k, u in enumerate(torch.rand(8, generator=g))]
                     for _ in range(reads)]
            decode.read_frames(out, draws[0])  # warm the file cache
            before, times = decode.decoded_frames, []
            for idx in draws:
                t = time.process_time()
                decode.read_frames(out, idx)
                times.append(time.process_time() - t)
            rows.append(dict(gop=gop, tune=tune or "-", bytes_per_s=os.path.getsize(out) / seconds, frames=n,
                             decoded=(decode.decoded_frames - before) / reads, read_s=statistics.median(times)))
    return rows


def main(argv=None):
    p = runs.Parser(description=__doc__.split("\n")[0], formatter_class=runs.HelpFormatter)
    p.add_argument("--dataset", choices=(*data.PUBLISHED, "any"), help="the layout to check before converting (any: "
                   "none, every video converted)")
    p.add_argument("--data-root", help="the dataset as downloaded (never written to)")
    p.add_argument("--output", help="where the copy goes (a second run skips what is done)")
    p.add_argument("--short-side", type=int, default=256, help="pixels of the short side (smaller stay as they are)")
    p.add_argument("--gop", type=int, default=GOP, help="frames between keyframes")
    p.add_argument("--crf", type=int, default=CRF, help="libx264 quality (lower: better and larger)")
    p.add_argument("--frames", action="store_true", help="write frame folders <video>/img_00001.jpg instead")
    p.add_argument("--workers", type=int, default=batches.default_workers(), help="processes converting videos")
    p.add_argument("--measure-gop", metavar="VIDEO", help="only measure: size and read cost of VIDEO per GOP")
    args = p.parse_args(argv)
    try:
        if args.measure_gop:
            if not os.path.isfile(args.measure_gop):
                raise PrepareError(f"--measure-gop {args.measure_gop}: no such file")
            torch.set_num_threads(1)
            print(f"{'GOP':>5s} {'tune':>10s} {'kB per s of video':>18s} {'pictures decoded':>17s} "
                  f"{'8-frame read, CPU ms':>21s}")
            for r in measure_gop(args.measure_gop, short_side=args.short_side):
                print(f"{r['gop']:5d} {r['tune']:>10s} {r['bytes_per_s'] / 1e3:18.1f} {r['decoded']:17.1f} "
                      f"{1e3 * r['read_s']:21.2f}")
            return None
        for flag in ("dataset", "data_root", "output"):
            if getattr(args, flag) is None:
                raise PrepareError(f"--{flag.replace('_', '-')} is required")
        if args.short_side < 16 or args.gop < 1 or args.workers < 1:
            raise PrepareError("--short-side must be at least 16, --gop and --workers at least 1")
        return prepare(args.dataset, args.data_root, args.output, args.short_side, args.gop, args.crf, args.frames,
                       args.workers)
    except (PrepareError, data.DatasetError, decode.VideoError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
