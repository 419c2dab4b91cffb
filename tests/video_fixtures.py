"""Test helpers: tiny videos written with PyAV, miniature dataset trees in official layouts, id videos."""
import csv
import fractions
import json
import os
import shutil

import av
import numpy as np


def frames(n, w, h, seed=0):
    """n RGB frames (h, w, 3) uint8: moving gradients, a moving bar, noise, and a scene cut every 37 frames, so that
    encoders make real I/P/B frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0], img[..., 1] = (xx * 3 + 5 * i) % 256, (yy * 4 + 2 * i) % 256
        x = int((w - 8) * (0.5 + 0.5 * np.sin(i / 5)))
        img[h // 4:h // 2, x:x + 8, 2] = 255
        if i % 37 == 36:
            img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        yield img + rng.integers(0, 16, img.shape, dtype=np.uint8)


def write_video(path, codec="libx264", n=48, w=64, h=48, fps=25, options=None, bframes=None, gop=None,
                vfr=False, fmt=None, pix_fmt="yuv420p", seed=0):
    """Encode a test video; vfr=True gives irregular frame durations (millisecond time base)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with av.open(path, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if options:
            stream.options = options
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if gop is not None:
            stream.codec_context.gop_size = gop
        if vfr:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        t, rng = 0, np.random.default_rng(seed + 1)
        for img in frames(n, w, h, seed):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if vfr:
                frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
                t += int(rng.choice([20, 33, 40, 67]))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def full_decode(path):
    """The reference: every frame of a plain sequential decode, as RGB arrays."""
    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def place(src, dst):
    """Copy a fixture video to a dataset path (identical content is enough for layout tests)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)


def ucf101_tree(root, src, classes=("ApplyEyeMakeup", "HandstandPushups", "YoYo"), groups=8, clips=2,
                test_groups=2, folder_names=None):
    """UCF101 layout: UCF-101/<Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/ with CRLF line ends. Groups
    1..test_groups are the split-1 test set (the real split 1 tests groups 1-7). folder_names maps a class to
    the spelling used on disk (the real HandStandPushups quirk)."""
    folder_names = folder_names or {"HandstandPushups": "HandStandPushups"}
    lists = os.path.join(root, "ucfTrainTestlist")
    os.makedirs(lists, exist_ok=True)
    train, test = [], []
    for label, cls in enumerate(classes, 1):
        disk = folder_names.get(cls, cls)
        for g in range(1, groups + 1):
            for c in range(1, clips + 1):
                name = f"v_{disk}_g{g:02d}_c{c:02d}.avi"
                place(src, os.path.join(root, "UCF-101", disk, name))
                # The official lists spell the folder as classInd does and the file as on disk.
                (test if g <= test_groups else train).append((f"{cls}/{name}", label))
    with open(os.path.join(lists, "classInd.txt"), "w", newline="") as f:
        f.writelines(f"{i} {c}\r\n" for i, c in enumerate(classes, 1))
    for s in (1, 2, 3):
        with open(os.path.join(lists, f"trainlist0{s}.txt"), "w", newline="") as f:
            f.writelines(f"{p} {lab}\r\n" for p, lab in train)
        with open(os.path.join(lists, f"testlist0{s}.txt"), "w", newline="") as f:
            f.writelines(f"{p}\r\n" for p, _ in test)
    return train, test


def hmdb51_tree(root, src, classes, per_class=(4, 2, 1)):
    """HMDB51 layout: <class>/<video>.avi and testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt with
    per_class = (train, test, unused) videos tagged 1, 2, 0. Split s moves the test set by s videos. Returns
    {split: {video name: tag}}."""
    splits = os.path.join(root, "testTrainMulti_7030_splits")
    os.makedirs(splits, exist_ok=True)
    n, written = sum(per_class), {1: {}, 2: {}, 3: {}}  # split -> {video name: tag}
    for cls in classes:
        names = [f"{cls}_video_{i}_u_nm_np1_fr_med_{i}.avi" for i in range(n)]
        for name in names:
            place(src, os.path.join(root, cls, name))
        for s in (1, 2, 3):
            tags = ["1"] * per_class[0] + ["2"] * per_class[1] + ["0"] * per_class[2]
            tags = tags[-s:] + tags[:-s]
            written[s].update(zip(names, tags))
            with open(os.path.join(splits, f"{cls}_test_split{s}.txt"), "w") as f:
                f.writelines(f"{name} {tag} \n" for name, tag in zip(names, tags))  # the real files end lines with " "
    return written


def kinetics_tree(root, src, videos, csv_rows=None):
    """Kinetics layout: {train,val}/<class folder>/<youtube_id>_<start>_<end>.mp4; videos = [(split, folder, id)].
    csv_rows = {split: [(label, youtube_id)]} writes annotations/<split>.csv as the official CSVs do."""
    for split, folder, yid in videos:
        place(src, os.path.join(root, split, folder, f"{yid}_000010_000020.mp4"))
    for split, rows in (csv_rows or {}).items():
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        with open(os.path.join(root, "annotations", f"{split}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            w.writerows([label, yid, 10, 20, split] for label, yid in rows)


def ssv2_tree(root, src, templates, train, validation):
    """SSv2 layout: 20bn-something-something-v2/<id>.webm and labels/{labels,train,validation}.json; train and
    validation are [(id, template index)]; json templates carry the [something] brackets."""
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    with open(os.path.join(root, "labels", "labels.json"), "w") as f:
        json.dump({t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates)}, f)
    for name, entries in (("train", train), ("validation", validation)):
        with open(os.path.join(root, "labels", f"{name}.json"), "w") as f:
            json.dump([{"id": str(vid), "label": "x", "template": templates[t], "placeholders": ["x"]}
                       for vid, t in entries], f)
        for vid, _ in entries:
            place(src, os.path.join(root, "20bn-something-something-v2", f"{vid}.webm"))


# ---------------------------------------------------------------- videos that say who they are
# Every frame of an "id video" is one flat colour: red = 20 + 10 * video id, green = 20 + 10 * frame index, blue
# 128, in lossless FFV1 AVIs. Flat colours survive resizing and cropping too, so a test can read back from a served
# tensor which video and which frames it holds: fixtures whose content differs per video, class and split.
ID_STEP, ID_BASE = 10, 20


def write_id_video(path, vid, n=24, w=32, h=24):
    """A video of n flat frames that carry (vid, frame index), see above; vid and n at most 23."""
    assert 0 <= vid <= 23 and n <= 24
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"  # lossless RGB: mpeg4 was off by up to 5
        for i in range(n):
            img = np.empty((h, w, 3), np.uint8)
            img[...] = (ID_BASE + ID_STEP * vid, ID_BASE + ID_STEP * i, 128)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_ids(clip, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)):
    """(video id, [frame indices]) of a served clip (T, 3, H, W), normalised with CLIP's mean and std."""
    rgb = [(clip[:, c].float().mean((1, 2)) * std[c] + mean[c]) * 255 for c in (0, 1)]  # 2 x (T,)
    vids = ((rgb[0] - ID_BASE) / ID_STEP).round().long().unique().tolist()
    assert len(vids) == 1, vids  # one video per clip, never frames of two videos mixed
    return vids[0], ((rgb[1] - ID_BASE) / ID_STEP).round().long().tolist()


def ucf101_id_tree(root, classes, groups=3, n=24):
    """UCF101 layout of id videos, one clip per (class, group); split s tests group s and trains on the others,
    so the three splits' test sets differ. Returns {vid: (class index, group)}; vid = class index * groups +
    group - 1."""
    lists = os.path.join(root, "ucfTrainTestlist")
    os.makedirs(lists, exist_ok=True)
    table, rows = {}, []
    for c, cls in enumerate(classes):
        for g in range(1, groups + 1):
            vid = c * groups + g - 1
            name = f"v_{cls}_g{g:02d}_c01.avi"
            write_id_video(os.path.join(root, "UCF-101", cls, name), vid, n=n)
            table[vid] = (c, g)
            rows.append((f"{cls}/{name}", c + 1, g))
    with open(os.path.join(lists, "classInd.txt"), "w", newline="") as f:
        f.writelines(f"{i} {c}\r\n" for i, c in enumerate(classes, 1))
    for s in (1, 2, 3):
        with open(os.path.join(lists, f"trainlist0{s}.txt"), "w", newline="") as f:
            f.writelines(f"{p} {lab}\r\n" for p, lab, g in rows if g != s)
        with open(os.path.join(lists, f"testlist0{s}.txt"), "w", newline="") as f:
            f.writelines(f"{p}\r\n" for p, _, g in rows if g == s)
    return table
