"""benchmark.py's data rows: reading video and feeding the training step, per worker core and as train.py loads.

  data     decode.read_frames on the 8 test-sampled frames of a 10-s 340x256 30-fps video (written here with PyAV)
           against decoding every frame; then clips per CPU-second of one pinned single-threaded process (one
           DataLoader worker's core) for (a) reading plus the whole training transform, (b) the same on the
           video's prepare.py copy, (c) (b) with the photometric half deferred to the training device, and the
           pictures each decodes (the loader targets: (c) >= 3x (a), (b) <= 1/4 of (a)'s pictures)
  loader   the loader as train.py builds it with all cores, beside the training step's clips/s on a GPU, and the
           share of time a step as long as a batch's loading waits for data at prefetch 2, 4 and 8

Shape legend: B videos, T frames, H height, W width.
"""
import os
import statistics
import sys
import tempfile
import time

import torch

from bench.measure import sync, timed
from video import decode, sequential
from video import transforms
from video import batches

DATA_TARGETS = dict(speedup=3.0, decoded=0.25)  # loader: (c) / (a) clips/s at least, (b) / (a) pictures at most
# The source video (seconds, width, height) and the training resolution: ViT-B/16's, and --quick's tiny one.
VIDEO = {False: dict(video=(10, 340, 256), resolution=224), True: dict(video=(2, 68, 52), resolution=32)}


def write_video(path, seconds, width, height, fps=30):
    """A test video with PyAV: a textured background panning 2 px per frame and a square crossing it, so the
    encoder sees real motion. H.264 (libx264) when the PyAV wheel has it, else MPEG-4 Part 2; the encoder's
    defaults otherwise (libx264: a keyframe every 250 frames, B-frames), as ffmpeg re-encoded datasets have."""
    import av  # imported here: only the data part needs it

    codec = next((c for c in ("libx264", "h264", "mpeg4") if _has_encoder(av, c)), None)
    if codec is None:
        raise RuntimeError("this PyAV build has neither an H.264 nor an MPEG-4 encoder")
    g = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, height // 8, width // 4 + 1, generator=g),
                                              size=(height, 2 * width), mode="bilinear")[0]  # (3, H, 2W)
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            shift = (2 * i) % width
            img = texture[:, :, shift:shift + width].clone()                   # (3, H, W)
            x, y = (5 * i) % (width - 40), height // 3
            img[:, y:y + 40, x:x + 40] = 1.0
            img = (img.permute(1, 2, 0) * 255).to(torch.uint8).contiguous()   # (3, H, W) -> (H, W, 3)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img.numpy(), format="rgb24")))
        out.mux(stream.encode())  # flush the encoder's delayed frames
    return codec


def _has_encoder(av, name):
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # PyAV raises UnknownCodecError or ValueError depending on the version
        return False


def decode_everything(path, indices, convert_all=True):
    """The dense baseline: decode every frame of the file and convert each to RGB (torchvision.io.read_video's
    way), then pick the wanted ones. convert_all=False converts only those: the decoding alone."""
    import av

    wanted, frames = set(indices), {}
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if convert_all or i in wanted:
                frames[i] = torch.from_numpy(frame.to_ndarray(format="rgb24"))
    return torch.stack([frames[i] for i in indices])  # (T, H, W, 3)


def keyframe_count(path):
    import av

    with av.open(path) as container:
        return sum(p.is_keyframe for p in container.demux(video=0) if p.size)


def data_worker(name, args):
    """Item 6: the sparse reader vs decoding every frame, and the training pipeline's clips/s, in one process of
    one thread (a DataLoader worker: torch gives each one thread) pinned to one core (FFmpeg's decoder threads
    share it), for the original clip and its prepare.py copy."""
    import data  # imported here: only this part needs PyAV and torchvision

    torch.set_num_threads(1)
    if args.worker and hasattr(os, "sched_setaffinity"):  # its own process: one core, FFmpeg's threads included
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    size, T = VIDEO[args.quick], args.frames
    seconds, width, height = size["video"]
    reps = 1 if args.quick else 5
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "original", "video.mp4")
        os.makedirs(os.path.dirname(path))
        codec = write_video(path, seconds, width, height)
        length = decode.video_length(path)
        indices = decode.sample_indices(length, T, train=False)  # the single-view test's segment centres
        reader = sys.modules.get(decode.read_frames.__module__)  # video/decode.py counts the pictures it decodes
        before = getattr(reader, "decoded_frames", None)
        if not torch.equal(decode.read_frames(path, indices), decode_everything(path, indices)):
            raise RuntimeError("decode.read_frames differs from a full decode at the same indices")
        decoded = None if before is None else reader.decoded_frames - before
        sparse = timed(lambda: decode.read_frames(path, indices), 1, reps, cpu)
        full = timed(lambda: decode_everything(path, indices), 1, reps, cpu)
        decode_only = timed(lambda: decode_everything(path, indices, convert_all=False), 1, reps, cpu)
        # The training pipeline for one clip through data.py's public API, per worker core:
        # (a) the original clip, whole augmentation in the worker; (b) its prepare.py copy, likewise; (c) (b) with
        # the photometric half deferred to the training device (the worker returns uint8 + its draws).
        prepared = os.path.join(tmp, "prepared", "video.mp4")
        os.makedirs(os.path.dirname(prepared))
        sequential.encode_mp4(path, prepared, 256, sequential.GOP, sequential.CRF)
        items = 2 if args.quick else 20
        pipelines = {key: pipeline_rate(data, os.path.dirname(p), T, size["resolution"], defer, items)
                     for key, p, defer in (("a", path, False), ("b", prepared, False), ("c", prepared, True))}
        keyframes, prepared_keyframes = keyframe_count(path), keyframe_count(prepared)
    s, f = statistics.median(sparse), statistics.median(full)
    a, b, c = (pipelines[k] for k in "abc")
    return dict(config=name, codec=codec, seconds=seconds, width=width, height=height, fps=30, frames=length,
                keyframes=keyframes, indices=indices, sparse_s=s, sparse_times_s=sparse,
                sparse_decoded_frames=decoded, full_decode_s=f, full_times_s=full, sparse_speedup=f / s,
                full_decode_convert_wanted_s=statistics.median(decode_only),
                pipeline_s=a["s"], pipeline_times_s=a["times_s"], pipeline_clips_per_s=a["clips_per_s"],
                pipelines=pipelines, prepared_gop=sequential.GOP, prepared_keyframes=prepared_keyframes,
                cores=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                resolution=size["resolution"], threads=torch.get_num_threads())


def one_video_list(data, folder, T, resolution, defer):
    """A training dataset of the one video.mp4 in folder, through data.py's "list" reader."""
    with open(os.path.join(folder, "train.txt"), "w") as f:
        f.write("video.mp4 0\n")
    with open(os.path.join(folder, "labels.csv"), "w") as f:
        f.write("id,name\n0,video\n")
    return data.build_dataset("list", folder, "full", train=True, num_frames=T, resolution=resolution,
                              train_list=os.path.join(folder, "train.txt"),
                              labels_csv=os.path.join(folder, "labels.csv"), defer_photometric=defer)


def pipeline_rate(data, folder, T, resolution, defer, items):
    """Clips per CPU-second and decoded pictures per clip of dataset items (open, demux, 8 random TSN frames,
    augmentation), item k seeded with k, so every pipeline reads the same frames. CPU time of this process (all
    its threads, FFmpeg's included) is what a worker core pays per clip, and other load on the machine does not
    inflate it (the wall times are kept too)."""
    from video import decode  # noqa: PLC0415 (the decoded-picture counter)

    dataset = one_video_list(data, folder, T, resolution, defer)
    batches.seed_everything(0)
    dataset[0]  # warm-up: file cache, codec set-up
    times, wall, before = [], [], decode.decoded_frames
    for k in range(items):
        batches.seed_everything(k)
        t0, w0 = time.process_time(), time.perf_counter()
        dataset[0]
        times.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    p = statistics.median(times)
    return dict(s=p, times_s=times, clips_per_s=1 / p, wall_s=statistics.median(wall), wall_times_s=wall,
                decoded_per_clip=(decode.decoded_frames - before) / items,
                photometric="training device" if defer else "worker")


def loader_worker(name, args):
    """The loader as train.py builds it (persistent workers, pinned memory, batches.PREFETCH batches each, uint8
    clips, photometric half on the device), all the process's cores as workers, over copies of the prepared
    clip: clips/s delivered to the device. Then the prefetch depth: with a stand-in training step as long as
    the loader's own time per batch (where waiting is likeliest), the share of the time the step waits for
    data at prefetch 2, 4 and 8 batches per worker."""
    import data  # noqa: PLC0415
    from video import batches  # noqa: PLC0415

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, T = VIDEO[args.quick], args.frames
    workers = 1 if args.quick else batches.default_workers()
    B, timed_batches = (2, 3) if args.quick else (32 if device.type == "cuda" else 8, 12)
    with tempfile.TemporaryDirectory() as tmp:
        src, folder = os.path.join(tmp, "src.mp4"), os.path.join(tmp, "prepared")
        os.makedirs(folder)
        write_video(src, *size["video"])
        sequential.encode_mp4(src, os.path.join(folder, "video.mp4"), 256, sequential.GOP, sequential.CRF)
        n = B * (timed_batches + 2 * workers + 2)  # every item the same video, as train.py's datasets defer
        dataset = data.VideoDataset("loader", [(os.path.join(folder, "video.mp4"), 0)] * n, ["video"], T, True,
                                    size["resolution"], defer_photometric=True)

        def run(prefetch, step_s=0.0):
            loader = torch.utils.data.DataLoader(dataset, batch_size=B, num_workers=workers,
                                                 pin_memory=device.type == "cuda", persistent_workers=True,
                                                 prefetch_factor=prefetch)
            it, waited, n = iter(loader), 0.0, 0
            for _ in range(2 * workers):  # warm-up: every worker has started and delivered
                next(it)
            t0 = time.perf_counter()
            for _ in range(timed_batches):
                w0 = time.perf_counter()
                (clips, params), _ = next(it)
                waited += time.perf_counter() - w0  # the step could not start: no batch was ready
                videos = transforms.photometric(clips.to(device, non_blocking=True), params)
                sync(device)
                n += len(videos)
                time.sleep(step_s)  # the training step: the GPU works while the workers decode
            total = time.perf_counter() - t0
            del it, loader
            return n / total, waited / total

        rate, _ = run(batches.PREFETCH)
        step_s = B / rate
        waits = {p: run(p, step_s)[1] for p in (2, 4, 8)}
    return dict(config=name, device=device.type, workers=workers, batch=B, batches=timed_batches,
                clips_per_s=rate, prefetch=batches.PREFETCH, step_s=step_s,
                wait_share={str(p): w for p, w in waits.items()})



def check_data(results):
    """The loader's targets, from this run's pipeline rows (one worker core): [dict(passed, value, target, text)]."""
    pipes, lines = results.get("data", {}).get("pipelines", {}), []
    a, b, c = (pipes.get(k, {}) for k in "abc")
    r = _ratio(c.get("clips_per_s"), a.get("clips_per_s"))
    lines.append(dict(name="pipeline_speedup", passed=r is not None and r >= DATA_TARGETS["speedup"], value=r,
                      target=f">= {DATA_TARGETS['speedup']}", text=f"(c) prepared clip, photometric half on the "
                      f"device: {r:.2f}x the clips/s of (a) today's pipeline on the original clip (target >= "
                      f"{DATA_TARGETS['speedup']}x)" if r else "(c) / (a) clips/s: not measured"))
    r = _ratio(b.get("decoded_per_clip"), a.get("decoded_per_clip"))
    lines.append(dict(name="decoded_pictures", passed=r is not None and r <= DATA_TARGETS["decoded"], value=r,
                      target=f"<= {DATA_TARGETS['decoded']}", text=f"(b) prepared clip decodes "
                      f"{b.get('decoded_per_clip', 0):.1f} pictures for 8 frames, (a) the original "
                      f"{a.get('decoded_per_clip', 0):.1f}: {r:.2f}x (target <= {DATA_TARGETS['decoded']}x)"
                      if r else "(b) / (a) decoded pictures: not measured"))
    return lines


def report(results, train):
    """The data rows of the screen table: section 6, the loader, or what failed."""
    out = []
    d = results.get("data", {})
    if "sparse_s" in d:
        out += ["", f"5. data: {d['seconds']} s {d['width']}x{d['height']} {d['fps']} fps {d['codec']} video, "
                    f"{d['frames']} frames, {d['keyframes']} keyframe(s); {len(d['indices'])} test-sampled frames",
                f"   sparse read (decode.read_frames)  {1e3 * d['sparse_s']:8.1f} ms"
                + (f"  ({d['sparse_decoded_frames']} pictures decoded)" if d["sparse_decoded_frames"] else ""),
                f"   decode every frame, all to RGB  {1e3 * d['full_decode_s']:8.1f} ms  -> sparse is "
                f"{d['sparse_speedup']:.2f}x faster",
                f"   decode every frame, 8 to RGB    {1e3 * d['full_decode_convert_wanted_s']:8.1f} ms",
                f"   training pipeline per worker core (read 8 random TSN frames + augment to "
                f"{len(d['indices'])}x3x{d['resolution']}x{d['resolution']}, 1 thread, pinned to core "
                f"{d['cores']}; clips per CPU-second):"]
        for key, what in (("a", "original clip, whole augmentation in the worker"),
                          ("b", f"after prepare.py (GOP {d['prepared_gop']}), whole augmentation"),
                          ("c", "(b), photometric half on the training device")):
            r = d["pipelines"][key]
            out.append(f"     ({key}) {what:50s} {r['clips_per_s']:7.2f} clips/s {r['decoded_per_clip']:6.1f} "
                       "pictures decoded per clip")
    lo = results.get("loader", {})
    if "clips_per_s" in lo:
        step = train.get("msta-few-shot", {})
        step_rate = step["batch"] / step["time_s"] if "time_s" in step else None
        out.append(f"   loader as train.py builds it: {lo['workers']} workers, batch {lo['batch']}, photometric on "
                   f"{lo['device']}: {lo['clips_per_s']:.1f} clips/s"
                   + (f"; the MSTA few-shot training step: {step_rate:.1f} clips/s -> loader / step = "
                      f"{lo['clips_per_s'] / step_rate:.2f} (>= 1: the {lo['device'].upper()} never waits)"
                      if step_rate and lo["device"] == "cuda" else ""))
        out.append("   prefetch (batches per worker) 2 / 4 / 8, step as long as a batch's loading: the step waited "
                   + " / ".join(f"{100 * lo['wait_share'][p]:.0f}%" for p in ("2", "4", "8"))
                   + f" of the time (train.py uses {lo['prefetch']})")
    elif lo:
        out += [f"   loader FAILED: {lo.get('error', '').splitlines()[-1:]}"]
    elif d:
        out += ["", f"5. data FAILED: {d.get('error', '').splitlines()[-1:]}"]
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None
