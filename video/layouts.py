"""Where each dataset's videos and class names are: the five published datasets' official layouts, ViFi-CLIP-style
list files, and a folder of your own videos; the published class orders (protocols.json "classes"). data.py
builds the protocols' datasets on top of these readers (data.build_dataset), video/kinetics600.py and video/verify.py
use them to find listed videos.

A reader returns (class names in label order, [(path or None, label)], finder): None marks a listed video that
is not on disk, which the callers count as missing rather than drop silently.

Class order: the published label lists (ViFi-CLIP's labels/*.csv, which its split lists' labels and the authors'
description files index), carried in protocols.json as "classes": UCF101 classInd order; HMDB51's own order,
which is NOT sorted ("kick ball" before "kick", "sword exercise" before "sword"); Kinetics official names, sorted;
SSv2 label-index order. A tree whose classes are not all published keeps its own order (classInd, sorted folder
names, label index). Class-name text: UCF101 CamelCase split into words ("YoYo" -> "Yo Yo"), HMDB51 underscores
-> spaces, SSv2 templates without brackets.
"""
import csv
import functools
import json
import os
import re

from video.decode import FRAME_FILE, VIDEO_EXTENSIONS

DATASET_ALIASES = {"ucf101": "ucf101", "ucf": "ucf101", "hmdb51": "hmdb51", "hmdb": "hmdb51", "kinetics400": "kinetics400",
            "k400": "kinetics400", "kinetics600": "kinetics600", "k600": "kinetics600", "ssv2": "ssv2",
            "somethingsomethingv2": "ssv2", "sthv2": "ssv2", "synthetic": "synthetic", "list": "list",
            "folder": "folder"}
PROTOCOL_ALIASES = {"fewshot": "few-shot", "base2novel": "base2novel", "basetonovel": "base2novel", "b2n": "base2novel",
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


def fail(name, root, problem):
    layout, source = LAYOUTS["kinetics" if name.startswith("kinetics") else name]
    where = "" if name == "folder" else f"; download: {source.replace('<root>', str(root))}"
    raise DatasetError(f"{name} at {root}: {problem}. Expected {layout.replace('<root>', str(root))}{where}")


def canonical(value, table):
    key = re.sub(r"[^a-z0-9]", "", str(value).lower())  # "Few_Shot", "few-shot" and "fewshot" alike
    if key not in table:
        raise DatasetError(f"unknown {'dataset' if table is DATASET_ALIASES else 'protocol'} {value!r}; "
                           f"choose from {sorted(set(table.values()))}")
    return table[key]


def class_key(name):
    """Spelling-blind class key: folder names use underscores, CSVs spaces, downloaders drop parentheses."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _published_order(name, classes):
    """classes (names as the layout spells them) in the published label order of protocols.json, or as given when
    any of them is not a published class (a tree of your own in an official layout)."""
    position = {class_key(c): i for i, c in enumerate(protocol_facts()[name]["classes"])}
    if not all(class_key(c) in position for c in classes):
        return list(classes)
    return sorted(classes, key=lambda c: position[class_key(c)])


def list_lines(path):
    with open(path, encoding="utf-8", errors="replace") as f:  # universal newlines: the UCF lists are CRLF
        return [line.strip() for line in f if line.strip()]


@functools.lru_cache(maxsize=1)
def protocol_facts():
    """protocols.json: published class orders and base classes, the K600 zero-shot classes, the paper recipe."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "protocols.json")) as f:
        return json.load(f)


class Finder:
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
def finder(top):
    return Finder(top)


def _ucf101(root, split, part):
    lists = os.path.join(root, "ucfTrainTestlist")
    files = [os.path.join(lists, f) for f in ("classInd.txt", f"trainlist0{split}.txt", f"testlist0{split}.txt")]
    if not all(os.path.isfile(f) for f in files):
        fail("ucf101", root, f"missing {lists}/classInd.txt, trainlist0{split}.txt or testlist0{split}.txt")
    raw = [name for _, name in sorted((int(i), name) for i, name in (line.split()[:2] for line in list_lines(files[0])))]
    raw = _published_order("ucf101", raw)
    label = {name.lower(): i for i, name in enumerate(raw)}  # lower case: the HandstandPushups quirk
    videos = finder(os.path.join(root, "UCF-101") if os.path.isdir(os.path.join(root, "UCF-101")) else root)
    items = []
    for line in list_lines(files[1 if part == "train" else 2]):
        rel = line.split()[0]
        if rel.split("/")[0].lower() not in label:
            fail("ucf101", root, f"{rel} in a split list names a class not in classInd.txt")
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
        fail("hmdb51", root, f"no {splits}/<class>{suffix}")
    videos, items, want = finder(root), [], "1" if part == "train" else "2"  # 1 train, 2 test, 0 unused
    for label, f in enumerate(files):
        for line in list_lines(os.path.join(splits, f)):
            name, tag = line.split()[:2]
            if tag == want:
                items.append((videos.find(f"{f[:-len(suffix)]}/{name}"), label))
    return [f[:-len(suffix)].replace("_", " ") for f in files], items, videos


def _kinetics(name, root, part):
    classes = protocol_facts()[name]["classes"]
    label = {class_key(c): i for i, c in enumerate(classes)}
    names = ("train",) if part == "train" else ("val", "validate", "validation", "valid")
    top = next((os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))), None)
    if top is None:
        fail(name, root, f"no {root}/{names[0]} folder")
    videos, items = finder(top), []
    tables = [os.path.join(d, f) for d in (root, os.path.join(root, "annotations")) if os.path.isdir(d)
              for f in sorted(os.listdir(d)) if f.endswith(".csv") and any(n in f.lower() for n in names)]
    if tables:  # the official CSV says which videos exist and their labels, so missing downloads are counted
        with open(tables[0], newline="") as f:
            for row in csv.DictReader(f):
                if class_key(row["label"]) not in label:
                    fail(name, root, f"{tables[0]} has label {row['label']!r}, not a {name} class")
                stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
                items.append((videos.find(stem, fold_case=False), label[class_key(row["label"])]))
    else:  # no CSV: the class folders say the labels
        for stem, path in sorted(videos.exact.items()):
            if "/" in stem:
                folder = stem.split("/")[0]
                if class_key(folder) not in label:
                    fail(name, root, f"folder {folder!r} is not a {name} class")
                items.append((path, label[class_key(folder)]))
        if not items:
            fail(name, root, f"no videos in class folders under {top} and no annotation CSV")
    return list(classes), items, videos


def _ssv2(root, part):
    labels = os.path.join(root, "labels")
    files = [os.path.join(labels, f) for f in ("labels.json", "train.json" if part == "train" else "validation.json")]
    if not all(os.path.isfile(f) for f in files):
        fail("ssv2", root, f"missing {files[0]} or {files[1]}")
    with open(files[0]) as f:
        templates = sorted(json.load(f).items(), key=lambda kv: int(kv[1]))
    classes = _published_order("ssv2", [t.replace("[", "").replace("]", "") for t, _ in templates])
    label = {class_key(c): i for i, c in enumerate(classes)}
    videos, items = finder(os.path.join(root, "20bn-something-something-v2")), []
    with open(files[1]) as f:
        for entry in json.load(f):
            k = class_key(entry["template"].replace("[", "").replace("]", ""))
            if k not in label:
                fail("ssv2", root, f"template {entry['template']!r} of video {entry['id']} is not in labels.json")
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
        fail("folder", root, "no class folders in train/")
    where = os.path.join(root, part)
    if part == "test" and not os.path.isdir(where) and os.path.isdir(os.path.join(root, "val")):
        part, where = "val", os.path.join(root, "val")  # Kinetics-style trees call it val/
    if not os.path.isdir(where):
        fail("folder", root, f"no {part}/ folder")
    unknown = sorted(set(d for d in os.listdir(where) if os.path.isdir(os.path.join(where, d))) - set(classes))
    if unknown:
        fail("folder", root, f"{part}/ has class folders that train/ lacks: {', '.join(unknown[:5])}")
    videos, items = finder(where), []
    for path in videos.exact.values():
        rel = os.path.relpath(path, where).replace(os.sep, "/")
        if "/" in rel:  # files directly under <part>/ belong to no class
            items.append((path, classes.index(rel.split("/")[0])))
    items = sorted(set(items))  # the finder keys every video twice (relative path and bare name)
    if not items:
        fail("folder", root, f"no videos under {part}/<class>/")
    return [_class_text(c) for c in classes], items, videos


def _list_classes(root, labels_csv):
    """Class text from an 'id,name' CSV, in id order, written as above (CamelCase split, underscores to spaces)."""
    if not labels_csv or not os.path.isfile(labels_csv):
        fail("list", root, f"label CSV {labels_csv!r} not found")
    with open(labels_csv, newline="") as f:
        rows = sorted((int(r["id"]), r["name"]) for r in csv.DictReader(f))
    return [_class_text(n) for _, n in rows]


def _listed(root, part, train_list=None, test_list=None, labels_csv=None, novel_list=None, novel_labels_csv=None):
    """ViFi-CLIP-style lists: '<path relative to root> <label index>' per line, and an 'id,name' label CSV.
    (novel_list and novel_labels_csv, base2novel's novel test set, are swapped in by build_dataset for "novel".)"""
    path = train_list if part == "train" else test_list
    if not path or not os.path.isfile(path):
        fail("list", root, f"{part} list {path!r} not found")
    classes, videos = _list_classes(root, labels_csv), finder(root)
    items = [(videos.find(rel), int(lab)) for rel, lab in (line.rsplit(None, 1) for line in list_lines(path))]
    if any(not 0 <= lab < len(classes) for _, lab in items):
        fail("list", root, f"{path} has labels outside the {len(classes)} classes of {labels_csv}")
    return classes, items, videos


def read_part(name, root, split, part, lists):
    """(class names, [(path or None, label)], finder) for one part ('train' or 'test') of a dataset."""
    if name != "list" and not os.path.isdir(root):
        fail(name, root, "the folder does not exist")
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
    name = canonical(name, DATASET_ALIASES)
    if name == "synthetic":
        raise DatasetError("the synthetic dataset's classes are video/synthetic.py's: ask data.class_names")
    if name.startswith("kinetics"):
        return list(protocol_facts()[name]["classes"])
    if name == "list":
        return _list_classes(root, lists.get("labels_csv"))
    return read_part(name, root, 1, "test", lists)[0]
