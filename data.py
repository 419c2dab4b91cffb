"""Video datasets for MSTA: five real datasets read from their official layouts, the four published protocols,
a synthetic motion dataset that needs no download, and "folder": your own videos, one folder per class.

    build_dataset(name, root, protocol, split, shots=None, seed=0, num_frames=8, train=True, resolution=224,
                  views=(1, 1), mean=CLIP_MEAN, std=CLIP_STD, **lists) -> Dataset of (video, label)

video is float (T, 3, H, W) normalised with the model's mean/std (default CLIP's), or (V, T, 3, H, W) for a
multi-view test (V = temporal clips x spatial crops, clip-major); label is an int. With defer_photometric=True
(train.py) a training video is (uint8 (T, 3, H, W), its photometric parameters) instead, and the caller applies
transforms.photometric to the batch on its device (video/transforms.py). Every dataset has .classnames (the
class-name text prompts and descriptions are keyed by) and .skipped (videos it could not serve). Decoding, frame
sampling are in video/decode.py, the clip transforms in video/transforms.py.

Protocols, as ViFi-CLIP (Rasheed et al., CVPR 2023) publishes them and MSTA's paper evaluates them:
  few-shot    K shots per class drawn with `seed` from the training list of official split `split` (1 in the
              paper); test on that split's test list (UCF101, HMDB51) or the validation set (Kinetics, SSv2).
  base2novel  base classes = the published halves in protocols.json (novel = the rest); train on 16 shots per
              base class (shots=None means 16) from split 1 / the training set; subset="base" or "novel" picks
              which classes a test set holds; labels are renumbered within the evaluated classes.
  zero-shot   train on all of Kinetics-400; test on all classes of UCF101/HMDB51 official split `split`
              (1, 2, 3), or on Kinetics-600 zero-shot test set `split`: ViFi-CLIP's published list of 160 classes
              not in Kinetics-400 (14,084 / 13,978 / 14,136 videos from K600's train, val and test parts),
              found wherever each video lies in the download (video/kinetics600.py).
  full        the whole training split; test on the whole test/validation split.
Class orders and class-name text: video/layouts.py (the published label lists). `python data.py verify ...` checks
a dataset on disk before a run (video/verify.py). Shape legend: T frames, H x W pixels, V views.
"""
import logging
import multiprocessing
import os
import random
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

# One video: decoding and frame sampling (video/decode.py), the clip transforms (video/transforms.py); the offline
# demo's clips (video/synthetic.py); where each dataset's videos and class names are (video/layouts.py).
from video.decode import VideoError, open_video, sample_indices
from video.layouts import DATASET_ALIASES, PROTOCOL_ALIASES, DatasetError, canonical, class_key, fail, protocol_facts, \
    read_part
from video import layouts
from video.synthetic import SYNTHETIC_CLASSES, SyntheticMotion
from video.transforms import CLIP_MEAN, CLIP_STD, TestTransform, WorkerTransform, train_transform

log = logging.getLogger(__name__)

PUBLISHED = ("ucf101", "hmdb51", "k400", "k600", "ssv2")  # the five datasets with published protocols
DATASETS = PUBLISHED + ("synthetic", "folder")  # --dataset: those, the offline demo, and a folder of your own videos

# ---------------------------------------------------------------- the dataset of video files


class VideoDataset(Dataset):
    """(video, label) items from (path, label) pairs; paths are video files or frame folders.

    A video that fails to decode is logged once and marked broken in an array shared with the DataLoader workers
    (so .skipped counts each bad video once, whichever process met it, in every epoch). In training it is replaced
    by another video of the same class (after 10 failed tries, of any class), so labels stay right and the epoch
    goes on. In a test set (train=False) it is not replaced, which would score another video twice: the item is
    (None, label), which evaluate.py leaves out of the metric and counts.
    """

    def __init__(self, name, items, classnames, num_frames=8, train=True, resolution=224, views=(1, 1), flip=True,
                 missing=0, mean=CLIP_MEAN, std=CLIP_STD, defer_photometric=False):
        self.name, self.items, self.classnames, self.missing = name, items, list(classnames), missing
        self.num_frames, self.train, self.views = num_frames, train, (1, 1) if train else tuple(views)
        if not train:
            self.transform = TestTransform(resolution, self.views[1], mean, std)
        elif defer_photometric:  # the worker returns (uint8 clip, photometric params), see video.WorkerTransform
            self.transform = WorkerTransform(resolution, flip)
        else:
            self.transform = train_transform(resolution, flip, mean, std)
        self._broken = multiprocessing.RawArray("b", max(len(items), 1))  # inherited by forked/spawned workers
        self._by_class = defaultdict(list)
        for i, (_, label) in enumerate(items):
            self._by_class[label].append(i)

    @property
    def skipped(self):
        """Videos the dataset could not serve: missing from disk when built, plus undecodable ones met so far."""
        return self.missing + int(np.frombuffer(self._broken, dtype=np.int8).sum())

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        i = index
        for attempt in range(100):
            path, label = self.items[i]
            if not self._broken[i]:
                try:
                    return self.load(path), label
                except VideoError as e:
                    self._broken[i] = 1
                    log.warning("%s: skipping a video that cannot be decoded, %s: %s", self.name,
                                "using another of its class" if self.train else "not scored", e)
            if not self.train:
                return None, label
            pool = self._by_class[label] if attempt < 10 else range(len(self.items))
            i = pool[random.Random(index * 1_000_003 + attempt).randrange(len(pool))]  # deterministic stand-in
        raise RuntimeError(f"{self.name}: 100 videos in a row failed to decode (last: {path}); is the data readable?")

    def load(self, path):
        """float (T, 3, r, r), or (V, T, 3, r, r) for a multi-view test; deferred: (uint8 clip, params)."""
        clips, crops = self.views
        offsets = [None] if self.train else [(n + 0.5) / clips for n in range(clips)]

        def indices(length):  # clips * T frame indices, clip after clip
            return [i for o in offsets for i in sample_indices(length, self.num_frames, self.train, o)]
        with open_video(path) as video:
            if video.length < 1:
                raise VideoError(f"{path}: no frames")
            try:
                frames = video.read(indices(video.length))
            except VideoError as e:
                if not 0 < e.available < video.length:
                    raise
                frames = video.read(indices(e.available))  # fewer frames decode than the container counts
        frames = frames.permute(0, 3, 1, 2)  # (clips*T, H, W, 3) -> (clips*T, 3, H, W)
        out = [self.transform(tv_tensors.Video(clip)) for clip in frames.split(self.num_frames)]
        if (clips, crops) == (1, 1):
            return out[0]  # (T, 3, r, r)
        return torch.cat([o if crops > 1 else o[None] for o in out])  # (V, T, 3, r, r), V = clips * crops


# ---------------------------------------------------------------- protocols


def build_dataset(name, root, protocol="full", split=1, shots=None, seed=0, num_frames=8, train=True,
                  resolution=224, views=(1, 1), subset=None, flip=None, mean=CLIP_MEAN, std=CLIP_STD,
                  defer_photometric=False, **lists):
    """A Dataset for one side (train=True/False) of a protocol; see the module docstring for the protocols.

    split: official split 1-3 (UCF101/HMDB51 lists; the K600 zero-shot test set; 1 in published few-shot and
    base2novel). subset: base2novel's classes, "base" (training, the default) or "novel" ("base" also tests).
    shots: videos per class drawn with `seed` for training (few-shot; base2novel defaults to 16).
    resolution, mean, std: the model's input size and pixel normalisation (train.py reads them from the model).
    views=(clips, crops) for testing.
    flip: horizontal flips in training; None means all datasets but SSv2 (pass False for SSv2 given as lists).
    defer_photometric: training items are (uint8 clip, photometric params) for transforms.photometric on the batch.
    lists: train_list=, test_list=, labels_csv= for name="list" (paths relative to root); for base2novel also
    novel_list=, novel_labels_csv=, the novel test set with its own label list. ViFi-CLIP publishes exactly these:
    fs_base_s{1,2,3}_train.txt (the three seeds' 16-shot draws, used as they are: no shots are drawn from a list
    unless shots is given), base_val.txt with the base labels CSV, novel_val.txt with the novel labels CSV; each
    list's labels index its own CSV.
    Raises DatasetError (one line: layout and download source) before any training starts."""
    name, protocol = canonical(name, DATASET_ALIASES), canonical(protocol, PROTOCOL_ALIASES)
    if shots is not None and (int(shots) != shots or shots <= 0):
        raise DatasetError(f"shots must be a positive integer, got {shots!r}")
    if protocol == "few-shot" and shots is None and train:
        raise DatasetError("the few-shot protocol needs shots (e.g. 2, 4, 8 or 16)")
    if str(split).lower() in ("base", "novel"):
        subset, split = str(split).lower(), 1  # base2novel's half given as the split: also understood
    split = int(split) if str(split).isdigit() else split
    half = None
    if protocol == "base2novel":
        half = str(subset or "base").lower()
        if half not in ("base", "novel") or (train and half != "base"):
            raise DatasetError(f"base2novel trains on subset 'base' and tests on 'base' or 'novel', got {subset!r}")
        shots = shots or (None if name == "list" else 16)  # a published list is already the 16-shot draw
        if name == "list" and half == "novel":  # the novel classes' own test list and label CSV
            lists = dict(lists, test_list=lists.get("novel_list"), labels_csv=lists.get("novel_labels_csv"))
    if name == "synthetic":
        return SyntheticMotion(shots, seed, num_frames, train, resolution, views, half, mean, std,
                               defer_photometric=defer_photometric and train)
    if protocol == "zero-shot" and not train and name == "kinetics600":
        from video import kinetics600  # the published test sets, resolved wherever the download holds each video
        classes, items, videos = kinetics600.zero_shot(root, split)
    else:
        classes, items, videos = read_part(name, root, split, "train" if train else "test", lists)
    subset = range(len(classes))
    if half is not None and name != "list":  # (a list holds its half's classes only, labelled by its own CSV)
        facts = protocol_facts().get(name, {}).get("base")
        if facts is None:
            raise DatasetError(f"base2novel has no published base classes for {name}")
        base = {class_key(c) for c in facts}
        if len(base & {class_key(c) for c in classes}) != len(base):
            raise DatasetError(f"{name} class list does not contain all published base classes")
        subset = [c for c in subset if (class_key(classes[c]) in base) == (half == "base")]
    relabel = {c: i for i, c in enumerate(subset)}  # labels renumbered within the evaluated classes
    classnames = [classes[c] for c in subset]
    items = [(p, relabel[label]) for p, label in items if label in relabel]
    missing = sum(p is None for p, _ in items)
    if missing == len(items):
        fail(name, root, f"none of the {len(items)} listed videos was found under {videos.top}")
    if missing:
        log.warning("%s: %d of %d listed videos are missing under %s; they are skipped", name, missing, len(items),
                    videos.top)
    items = [(p, label) for p, label in items if p is not None]
    if train and shots is not None:
        # Never draw a shot that is also a test video of this split (the official lists are disjoint anyway).
        listed = name in ("ucf101", "hmdb51") or (name == "list" and lists.get("test_list"))
        test = {p for p, _ in read_part(name, root, split, "test", lists)[1]} if listed else set()
        items = draw_shots([(p, label) for p, label in items if p not in test], shots, seed, classnames)
    flip = name != "ssv2" if flip is None else flip  # SSv2 labels say left/right: never mirror them
    return VideoDataset(name, items, classnames, num_frames, train, resolution, views, flip=flip, missing=missing,
                        mean=mean, std=std, defer_photometric=defer_photometric)


def class_names(name, root=None, **lists):
    """The class-name text of a whole dataset, in its published label order (protocol subsets are taken from it):
    the offline demo's classes, or those of a dataset's layout or list files under root (video/layouts.py). Raises
    DatasetError (one line: layout and download source) when the root does not hold the dataset."""
    if canonical(name, DATASET_ALIASES) == "synthetic":
        return list(SYNTHETIC_CLASSES)
    return layouts.class_names(name, root, **lists)


def draw_shots(items, shots, seed, classnames):
    """`shots` items per class, drawn with random.Random(seed) from each class's items sorted by path."""
    by_class = defaultdict(list)
    for path, label in items:
        by_class[label].append(path)
    fewest = min(range(len(classnames)), key=lambda c: len(by_class[c]))
    if shots > len(by_class[fewest]):
        raise DatasetError(f"shots={shots} but class {classnames[fewest]!r} has only {len(by_class[fewest])} "
                           "training videos")
    rng = random.Random(seed)
    return [(p, c) for c in range(len(classnames)) for p in rng.sample(sorted(by_class[c]), shots)]




if __name__ == "__main__":  # python data.py verify ...: see video/verify.py
    import sys
    from video import verify
    sys.exit(verify.main(sys.argv[1:]))
