"""Video datasets for MSTA: five real datasets read from their official layouts, the four published protocols,
a synthetic motion dataset that needs no download, and "folder": your own videos, one folder per class.

    build_dataset(name, root, protocol, split, shots=None, seed=0, num_frames=8, train=True, resolution=224,
                  views=(1, 1), mean=CLIP_MEAN, std=CLIP_STD, **lists) -> Dataset of (video, label)

video is float (T, 3, H, W) normalised with the model's mean/std (default CLIP's), or (V, T, 3, H, W) for a
multi-view test (V = temporal clips x spatial crops, clip-major); label is an int. With defer_photometric=True
(train.py) a training video is (uint8 (T, 3, H, W), its photometric parameters) instead, and the caller applies
video.photometric to the batch on its device (see video.py). Every dataset has .classnames (the class-name text
prompts and descriptions are keyed by) and .skipped (videos it could not serve). Decoding, frame sampling and
the clip transforms are in video.py.

Protocols, as ViFi-CLIP (Rasheed et al., CVPR 2023) publishes them and MSTA's paper evaluates them:
  few-shot    K shots per class drawn with `seed` from the training list of official split `split` (1 in the
              paper); test on that split's test list (UCF101, HMDB51) or the validation set (Kinetics, SSv2).
  base2novel  base classes = the published halves in protocols.json (novel = the rest); train on 16 shots per
              base class (shots=None means 16) from split 1 / the training set; subset="base" or "novel" picks
              which classes a test set holds; labels are renumbered within the evaluated classes.
  zero-shot   train on all of Kinetics-400; test on all classes of UCF101/HMDB51 official split `split`
              (1, 2, 3), or on Kinetics-600 zero-shot test set `split`: ViFi-CLIP's published list of 160 classes
              not in Kinetics-400 (14,084 / 13,978 / 14,136 videos from K600's train, val and test parts),
              found wherever each video lies in the download (kinetics600_lists.py).
  full        the whole training split; test on the whole test/validation split.
Class order: the published label lists (ViFi-CLIP's labels/*.csv, which its split lists' labels and the authors'
description files index), carried in protocols.json as "classes": UCF101 classInd order; HMDB51's own order,
which is NOT sorted ("kick ball" before "kick", "sword exercise" before "sword"); Kinetics official names, sorted;
SSv2 label-index order. A tree whose classes are not all published keeps its own order (classInd, sorted folder
names, label index). Class-name text: UCF101 CamelCase split into words ("YoYo" -> "Yo Yo"), HMDB51 underscores
-> spaces, SSv2 templates without brackets. Shape legend: T frames, H x W pixels, V views.
"""
import csv
import functools
import json
import logging
import multiprocessing
import os
import random
import re
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

# Reading one video (decoding, frame sampling, transforms) lives in video.py; the interface names are re-exported.
from video import (CLIP_MEAN, CLIP_STD, FRAME_FILE, VIDEO_EXTENSIONS, PHOTOMETRIC_PARAMS, TestTransform,  # noqa: F401
                   VideoError, WorkerTransform, no_photometric, open_video, photometric, read_frames,
                   sample_indices, train_transform, video_length)
# The offline demo's dataset lives in synthetic.py; build_dataset serves it under the name "synthetic".
from synthetic import SYNTHETIC_CLASSES, SyntheticMotion, synthetic_clip  # noqa: F401

log = logging.getLogger(__name__)
DATASETS = {"ucf101": "ucf101", "ucf": "ucf101", "hmdb51": "hmdb51", "hmdb": "hmdb51", "kinetics400": "kinetics400",
            "k400": "kinetics400", "kinetics600": "kinetics600", "k600": "kinetics600", "ssv2": "ssv2",
            "somethingsomethingv2": "ssv2", "sthv2": "ssv2", "synthetic": "synthetic", "list": "list",
            "folder": "folder"}
PROTOCOLS = {"fewshot": "few-shot", "base2novel": "base2novel", "basetonovel": "base2novel", "b2n": "base2novel",
             "zeroshot": "zero-shot", "full": "full", "fullysupervised": "full", "supervised": "full"}
LAYOUTS = {  # what a root must hold, and where it is downloaded from
    "ucf101": ("<root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi and <root>/ucfTrainTestlist/{classInd,trainlist0N,"
               "testlist0N}.txt", "UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from "
               "https://www.crcv.ucf.edu/data/UCF101.php, both extracted into <root>"),
    "hmdb51": ("<root>/<class>/<video>.avi and <root>/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt",
               "hmdb51_org.rar (then each per-class .rar inside it) and test_train_splits.rar from "
               "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/, extracted into <root>"),
    "kinetics": ("<root>/{train,val}/<class name>/<youtube_id>_<start>_<end>.mp4, or the flat {train,val}/*.mp4 "
                 "with the official annotation CSVs (label,youtube_id,time_start,time_end,split) in "
                 "<root>/annotations/", "https://github.com/cvdfoundation/kinetics-dataset"),
    "ssv2": ("<root>/20bn-something-something-v2/<id>.webm and <root>/labels/{labels,train,validation}.json",
             "https://developer.qualcomm.com/software/ai-datasets/something-something"),
    "folder": ("<root>/train/<class>/<video> and <root>/test/<class>/<video> (or val/; one folder per class, "
               "named by the class; any video file or frame folder inside)", "your own videos"),
    "list": ("list files of '<path relative to root> <label index>' lines (train_list=, test_list=) and an 'id,name' "
             "label CSV (labels_csv=)", "the published split files, e.g. ViFi-CLIP's"),
}


class DatasetError(ValueError):
    """A dataset root, list or argument that cannot work; the message is one line meant for the user."""


def _fail(name, root, problem):
    layout, source = LAYOUTS["kinetics" if name.startswith("kinetics") else name]
    where = "" if name == "folder" else f"; download: {source.replace('<root>', str(root))}"
    raise DatasetError(f"{name} at {root}: {problem}. Expected {layout.replace('<root>', str(root))}{where}")


def _canonical(value, table):
    key = re.sub(r"[^a-z0-9]", "", str(value).lower())  # "Few_Shot", "few-shot" and "fewshot" alike
    if key not in table:
        raise DatasetError(f"unknown {'dataset' if table is DATASETS else 'protocol'} {value!r}; "
                           f"choose from {sorted(set(table.values()))}")
    return table[key]


def _key(name):
    """Spelling-blind class key: folder names use underscores, CSVs spaces, downloaders drop parentheses."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _published_order(name, classes):
    """classes (names as the layout spells them) in the published label order of protocols.json, or as given when
    any of them is not a published class (a tree of your own in an official layout)."""
    position = {_key(c): i for i, c in enumerate(protocol_facts()[name]["classes"])}
    if not all(_key(c) in position for c in classes):
        return list(classes)
    return sorted(classes, key=lambda c: position[_key(c)])


def _lines(path):
    with open(path, encoding="utf-8", errors="replace") as f:  # universal newlines: the UCF lists are CRLF
        return [line.strip() for line in f if line.strip()]


@functools.lru_cache(maxsize=1)
def protocol_facts():
    """protocols.json: published class orders and base classes, the K600 zero-shot classes, the paper recipe."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocols.json")) as f:
        return json.load(f)


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


# ---------------------------------------------------------------- official layouts


class _Finder:
    """Every video file and frame folder under a directory, looked up by relative path, then ignoring case
    (UCF101's lists say HandstandPushups, its files HandStandPushups), then by bare name (flattened copies, as
    ViFi-CLIP's lists expect). Extensions are ignored, so a frame folder can stand in for its video."""

    def __init__(self, top):
        self.top, self.exact, self.folded = top, {}, {}
        for d, dirs, files in os.walk(top):
            dirs.sort()
            if any(FRAME_FILE.match(f) for f in files):
                self._add(d, os.path.relpath(d, top))
                dirs[:] = []
                continue
            for f in sorted(files):
                if f.lower().endswith(VIDEO_EXTENSIONS):
                    self._add(os.path.join(d, f), os.path.splitext(os.path.relpath(os.path.join(d, f), top))[0])

    def _add(self, path, stem):
        stem = stem.replace(os.sep, "/")
        for key in (stem, os.path.basename(stem)):
            self.exact.setdefault(key, path)
            self.folded.setdefault(key.lower(), path)

    def find(self, rel, fold_case=True):
        """Path of a listed video, or None when it is not on disk. YouTube ids differ by case alone, so
        Kinetics asks with fold_case=False."""
        stem = rel.replace("\\", "/").strip("/")
        if stem.lower().endswith(VIDEO_EXTENSIONS):
            stem = os.path.splitext(stem)[0]
        for table, key in ((self.exact, stem), (self.folded, stem.lower()), (self.exact, os.path.basename(stem)),
                           (self.folded, os.path.basename(stem).lower())):
            if key in table and (fold_case or table is self.exact):
                return table[key]
        return None


@functools.lru_cache(maxsize=4)
def _finder(top):
    return _Finder(top)


def _ucf101(root, split, part):
    lists = os.path.join(root, "ucfTrainTestlist")
    files = [os.path.join(lists, f) for f in ("classInd.txt", f"trainlist0{split}.txt", f"testlist0{split}.txt")]
    if not all(os.path.isfile(f) for f in files):
        _fail("ucf101", root, f"missing {lists}/classInd.txt, trainlist0{split}.txt or testlist0{split}.txt")
    raw = [name for _, name in sorted((int(i), name) for i, name in (line.split()[:2] for line in _lines(files[0])))]
    raw = _published_order("ucf101", raw)
    label = {name.lower(): i for i, name in enumerate(raw)}  # lower case: the HandstandPushups quirk
    videos = _finder(os.path.join(root, "UCF-101") if os.path.isdir(os.path.join(root, "UCF-101")) else root)
    items = []
    for line in _lines(files[1 if part == "train" else 2]):
        rel = line.split()[0]
        if rel.split("/")[0].lower() not in label:
            _fail("ucf101", root, f"{rel} in a split list names a class not in classInd.txt")
        items.append((videos.find(rel), label[rel.split("/")[0].lower()]))
    return [re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name) for name in raw], items, videos


def _hmdb51(root, split, part):
    splits = os.path.join(root, "testTrainMulti_7030_splits")
    suffix = f"_test_split{split}.txt"
    # The published order (hmdb_51_labels.csv) is neither sorted class names nor sorted file names: it has
    # "climb" before "climb_stairs" but "kick_ball" before "kick" and "sword_exercise" before "sword".
    found = sorted(f[:-len(suffix)] for f in (os.listdir(splits) if os.path.isdir(splits) else [])
                   if f.endswith(suffix))
    files = [c + suffix for c in _published_order("hmdb51", found)]
    if not files:
        _fail("hmdb51", root, f"no {splits}/<class>{suffix}")
    videos, items, want = _finder(root), [], "1" if part == "train" else "2"  # 1 train, 2 test, 0 unused
    for label, f in enumerate(files):
        for line in _lines(os.path.join(splits, f)):
            name, tag = line.split()[:2]
            if tag == want:
                items.append((videos.find(f"{f[:-len(suffix)]}/{name}"), label))
    return [f[:-len(suffix)].replace("_", " ") for f in files], items, videos


def _kinetics(name, root, part):
    classes = protocol_facts()[name]["classes"]
    label = {_key(c): i for i, c in enumerate(classes)}
    names = ("train",) if part == "train" else ("val", "validate", "validation", "valid")
    top = next((os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))), None)
    if top is None:
        _fail(name, root, f"no {root}/{names[0]} folder")
    videos, items = _finder(top), []
    tables = [os.path.join(d, f) for d in (root, os.path.join(root, "annotations")) if os.path.isdir(d)
              for f in sorted(os.listdir(d)) if f.endswith(".csv") and any(n in f.lower() for n in names)]
    if tables:  # the official CSV says which videos exist and their labels, so missing downloads are counted
        with open(tables[0], newline="") as f:
            for row in csv.DictReader(f):
                if _key(row["label"]) not in label:
                    _fail(name, root, f"{tables[0]} has label {row['label']!r}, not a {name} class")
                stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
                items.append((videos.find(stem, fold_case=False), label[_key(row["label"])]))
    else:  # no CSV: the class folders say the labels
        for stem, path in sorted(videos.exact.items()):
            if "/" in stem:
                folder = stem.split("/")[0]
                if _key(folder) not in label:
                    _fail(name, root, f"folder {folder!r} is not a {name} class")
                items.append((path, label[_key(folder)]))
        if not items:
            _fail(name, root, f"no videos in class folders under {top} and no annotation CSV")
    return list(classes), items, videos


def _ssv2(root, part):
    labels = os.path.join(root, "labels")
    files = [os.path.join(labels, f) for f in ("labels.json", "train.json" if part == "train" else "validation.json")]
    if not all(os.path.isfile(f) for f in files):
        _fail("ssv2", root, f"missing {files[0]} or {files[1]}")
    with open(files[0]) as f:
        templates = sorted(json.load(f).items(), key=lambda kv: int(kv[1]))
    classes = _published_order("ssv2", [t.replace("[", "").replace("]", "") for t, _ in templates])
    label = {_key(c): i for i, c in enumerate(classes)}
    videos, items = _finder(os.path.join(root, "20bn-something-something-v2")), []
    with open(files[1]) as f:
        for entry in json.load(f):
            k = _key(entry["template"].replace("[", "").replace("]", ""))
            if k not in label:
                _fail("ssv2", root, f"template {entry['template']!r} of video {entry['id']} is not in labels.json")
            items.append((videos.find(str(entry["id"]), fold_case=False), label[k]))
    return classes, items, videos


def _class_text(name):
    """A folder or CSV class name as prompt text: CamelCase split into words, underscores to spaces."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ")


def _folder(root, part):
    """Your own videos, one folder per class: <root>/train/<class>/... and <root>/test/<class>/...; the classes
    are train/'s folders, sorted, and test/ may hold any of them (a test class with no training folder is an
    error: the model would have no name for it)."""
    top = os.path.join(root, "train")
    classes = sorted(d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d))) if os.path.isdir(top) else []
    if not classes:
        _fail("folder", root, "no class folders in train/")
    where = os.path.join(root, part)
    if part == "test" and not os.path.isdir(where) and os.path.isdir(os.path.join(root, "val")):
        part, where = "val", os.path.join(root, "val")  # Kinetics-style trees call it val/
    if not os.path.isdir(where):
        _fail("folder", root, f"no {part}/ folder")
    unknown = sorted(set(d for d in os.listdir(where) if os.path.isdir(os.path.join(where, d))) - set(classes))
    if unknown:
        _fail("folder", root, f"{part}/ has class folders that train/ lacks: {', '.join(unknown[:5])}")
    videos, items = _finder(where), []
    for path in videos.exact.values():
        rel = os.path.relpath(path, where).replace(os.sep, "/")
        if "/" in rel:  # files directly under <part>/ belong to no class
            items.append((path, classes.index(rel.split("/")[0])))
    items = sorted(set(items))  # the finder keys every video twice (relative path and bare name)
    if not items:
        _fail("folder", root, f"no videos under {part}/<class>/")
    return [_class_text(c) for c in classes], items, videos


def _list_classes(root, labels_csv):
    """Class text from an 'id,name' CSV, in id order, written as above (CamelCase split, underscores to spaces)."""
    if not labels_csv or not os.path.isfile(labels_csv):
        _fail("list", root, f"label CSV {labels_csv!r} not found")
    with open(labels_csv, newline="") as f:
        rows = sorted((int(r["id"]), r["name"]) for r in csv.DictReader(f))
    return [_class_text(n) for _, n in rows]


def _listed(root, part, train_list=None, test_list=None, labels_csv=None, novel_list=None, novel_labels_csv=None):
    """ViFi-CLIP-style lists: '<path relative to root> <label index>' per line, and an 'id,name' label CSV.
    (novel_list and novel_labels_csv, base2novel's novel test set, are swapped in by build_dataset for "novel".)"""
    path = train_list if part == "train" else test_list
    if not path or not os.path.isfile(path):
        _fail("list", root, f"{part} list {path!r} not found")
    classes, videos = _list_classes(root, labels_csv), _finder(root)
    items = [(videos.find(rel), int(lab)) for rel, lab in (line.rsplit(None, 1) for line in _lines(path))]
    if any(not 0 <= lab < len(classes) for _, lab in items):
        _fail("list", root, f"{path} has labels outside the {len(classes)} classes of {labels_csv}")
    return classes, items, videos


def _read(name, root, split, part, lists):
    """(class names, [(path or None, label)], finder) for one part ('train' or 'test') of a dataset."""
    if name != "list" and not os.path.isdir(root):
        _fail(name, root, "the folder does not exist")
    if name in ("ucf101", "hmdb51"):
        if split not in (1, 2, 3):
            raise DatasetError(f"{name} has official splits 1, 2 and 3, not {split!r}")
        return (_ucf101 if name == "ucf101" else _hmdb51)(root, split, part)
    if name.startswith("kinetics"):
        return _kinetics(name, root, part)
    if name == "folder":
        return _folder(root, part)
    return _ssv2(root, part) if name == "ssv2" else _listed(root, part, **lists)


def class_names(name, root=None, **lists):
    """The class-name text of a whole dataset, in label order (protocol subsets are taken from it)."""
    name = _canonical(name, DATASETS)
    if name == "synthetic":
        return list(SYNTHETIC_CLASSES)
    if name.startswith("kinetics"):
        return list(protocol_facts()[name]["classes"])
    if name == "list":
        return _list_classes(root, lists.get("labels_csv"))
    return _read(name, root, 1, "test", lists)[0]


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
    defer_photometric: training items are (uint8 clip, photometric params) for video.photometric on the batch.
    lists: train_list=, test_list=, labels_csv= for name="list" (paths relative to root); for base2novel also
    novel_list=, novel_labels_csv=, the novel test set with its own label list. ViFi-CLIP publishes exactly these:
    fs_base_s{1,2,3}_train.txt (the three seeds' 16-shot draws, used as they are: no shots are drawn from a list
    unless shots is given), base_val.txt with the base labels CSV, novel_val.txt with the novel labels CSV; each
    list's labels index its own CSV.
    Raises DatasetError (one line: layout and download source) before any training starts."""
    name, protocol = _canonical(name, DATASETS), _canonical(protocol, PROTOCOLS)
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
        import kinetics600_lists  # the published test sets, resolved wherever the download holds each video
        classes, items, videos = kinetics600_lists.zero_shot(root, split)
    else:
        classes, items, videos = _read(name, root, split, "train" if train else "test", lists)
    subset = range(len(classes))
    if half is not None and name != "list":  # (a list holds its half's classes only, labelled by its own CSV)
        facts = protocol_facts().get(name, {}).get("base")
        if facts is None:
            raise DatasetError(f"base2novel has no published base classes for {name}")
        base = {_key(c) for c in facts}
        if len(base & {_key(c) for c in classes}) != len(base):
            raise DatasetError(f"{name} class list does not contain all published base classes")
        subset = [c for c in subset if (_key(classes[c]) in base) == (half == "base")]
    relabel = {c: i for i, c in enumerate(subset)}  # labels renumbered within the evaluated classes
    classnames = [classes[c] for c in subset]
    items = [(p, relabel[label]) for p, label in items if label in relabel]
    missing = sum(p is None for p, _ in items)
    if missing == len(items):
        _fail(name, root, f"none of the {len(items)} listed videos was found under {videos.top}")
    if missing:
        log.warning("%s: %d of %d listed videos are missing under %s; they are skipped", name, missing, len(items),
                    videos.top)
    items = [(p, label) for p, label in items if p is not None]
    if train and shots is not None:
        # Never draw a shot that is also a test video of this split (the official lists are disjoint anyway).
        listed = name in ("ucf101", "hmdb51") or (name == "list" and lists.get("test_list"))
        test = {p for p, _ in _read(name, root, split, "test", lists)[1]} if listed else set()
        items = draw_shots([(p, label) for p, label in items if p not in test], shots, seed, classnames)
    flip = name != "ssv2" if flip is None else flip  # SSv2 labels say left/right: never mirror them
    return VideoDataset(name, items, classnames, num_frames, train, resolution, views, flip=flip, missing=missing,
                        mean=mean, std=std, defer_photometric=defer_photometric)


def usable_cores():
    """CPUs this process may run on (its affinity mask: a container's or a scheduler's share, which taskset
    narrows too, rather than the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def default_workers():
    """Loader worker processes: the cores this process may use, shared between the processes torchrun starts per
    node (evaluate.choose_threads then gives the model what the workers leave)."""
    cores = usable_cores()
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def seed_everything(seed):
    """Seed every random draw an item makes: frame offsets, crop, flip and colour jitter all come from torch's
    generator (the stand-ins for broken videos are chosen from the item index alone)."""
    torch.manual_seed(seed)
    random.seed(seed)


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




if __name__ == "__main__":  # python data.py verify ...: see verify.py
    import sys
    import verify
    sys.exit(verify.main(sys.argv[1:]))
