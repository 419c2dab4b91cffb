"""The Kinetics-600 zero-shot test sets as published, found in a user's Kinetics-600 download.

The zero-shot protocol (ViFi-CLIP, Rasheed et al. CVPR 2023, after ER-ZSAR's three 160-class splits of the
Kinetics-600 classes not in Kinetics-400) tests on three fixed lists of videos, drawn from K600's train, val AND
test parts: ViFi-CLIP's datasets_splits/k600_splits/ZS_split{1,2,3}_K600_eval.txt. k600_zero_shot.txt.gz carries
them (its header names the commit it was made from): 14,084, 13,978 and 14,136 videos.

A download keeps each video under train/, val/ (or validate/) or test/, flat or in class folders, as
<youtube id>_<start:06d>_<end:06d>.mp4; a video is looked up by the list's relative path first, then by its file
name anywhere under the root (layouts.Finder), with the case kept (YouTube ids differ by case alone). A video the
download lacks is counted and reported as missing, never replaced by another.
"""
import functools
import gzip
import os

from video import layouts

LISTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k600_zero_shot.txt.gz")
SPLITS = (1, 2, 3)


@functools.lru_cache(maxsize=1)
def published():
    """{split: [('<part>/<youtube id>_<start>_<end>', label)]}, in the file's order; labels index the split's
    classes, protocols.json kinetics600.zero_shot[split - 1]."""
    lists = {s: [] for s in SPLITS}
    with gzip.open(LISTS, "rt", encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            stem, *labels = line.split()
            for s, label in zip(SPLITS, labels):
                if label != "-":
                    lists[s].append((stem, int(label)))
    return lists


def zero_shot(root, split):
    """(class names, [(path or None, label)], finder) of zero-shot test set `split` under a K600 root."""
    if split not in SPLITS:
        raise layouts.DatasetError(f"Kinetics-600 zero-shot has test sets 1, 2 and 3, not {split!r}")
    if not os.path.isdir(root):
        layouts.fail("kinetics600", root, "the folder does not exist")
    videos = layouts.finder(root)  # the whole download: train/, val/ and test/ all hold listed videos
    items = [(videos.find(stem, fold_case=False), label) for stem, label in published()[split]]
    return list(layouts.protocol_facts()["kinetics600"]["zero_shot"][split - 1]), items, videos
