"""`python data.py verify --dataset NAME --data-root DIR [--protocol P --split S | --train-list ...]`: before a
run spends GPU hours, count what a protocol's lists expect against what is on disk and test-decode every video.

Lists: the official layout's train and test parts of each split (UCF101, HMDB51: splits 1-3, or --split), the train
and validation parts (Kinetics, SSv2), the three published zero-shot test sets (Kinetics-600, see
video/kinetics600.py), or the list files given (--train-list, --test-list, --novel-list). Each listed video is
decoded to its last frame in --workers processes with the check of sequential.py (prepare.py's) (empty, no video
stream, undecodable, or truncated: fewer than 95% of the frames its container announces decode). Results are cached
per file (path, size, modification time) in --cache, so a second run decodes only what changed. The report (missing
and undecodable videos, expected vs found per list) goes to --report; exit status 0 when everything is there and
decodes, 1 otherwise, 2 for a usage error.
"""
import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time

from video import batches
from video import layouts
from video import sequential  # prepare.py's sequential decode and its completeness check (95% of the announced frames)
from video import decode


def expected_lists(dataset, root, protocol=None, split=None, lists=None):
    """[(list name, [(path or None, label)], [what each line names, or None])] for what the protocol (all of
    them when None) reads; the names say which video is missing where the list spells it (list files, K600)."""
    name = layouts.canonical(dataset, layouts.DATASET_ALIASES)
    if lists:
        out = []
        for part, key in (("train", "train_list"), ("test", "test_list"), ("novel test", "novel_list")):
            if lists.get(key):
                given = {**lists, "test_list": lists[key]} if key == "novel_list" else lists
                items = layouts.read_part("list", root, 1, "train" if part == "train" else "test", given)[1]
                out.append((f"{part} {lists[key]}", items, [line.rsplit(None, 1)[0]
                                                            for line in layouts.list_lines(lists[key])]))
        return out
    if name == "kinetics600" and protocol in (None, "zero-shot"):
        from video import kinetics600
        return [(f"zero-shot test set {s}", kinetics600.zero_shot(root, s)[1],
                 [stem for stem, _ in kinetics600.published()[s]])
                for s in ([split] if split else kinetics600.SPLITS)]
    official = name in ("ucf101", "hmdb51")
    splits = ([split] if split else [1, 2, 3]) if official else [split or 1]
    return [(f"{part} split {s}" if official else part, layouts.read_part(name, root, s, part, {})[1], None)
            for s in splits for part in ("train", "test")]


def check(path):
    """(path, None) when the video decodes whole, else (path, why)."""
    try:
        if os.path.isdir(path):  # a frame folder
            with decode.open_video(path) as video:
                video.read([0, video.length - 1])
        else:
            for _ in sequential.decoded_frames(path, short_side=1 << 20):  # no resize: the size is kept
                pass
        return path, None
    except (decode.VideoError, OSError, ValueError) as e:
        return path, str(e) or type(e).__name__


def default_cache(root):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:16]
    return os.path.join(base, "msta-verify", f"{key}.json")


def stamp(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def decode_all(paths, workers, cache_path, log=print):
    """{path: None or why} for every path, decoding only those not in the cache with the same size and mtime."""
    cache = {}
    if os.path.isfile(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    results, todo = {}, []
    for p in paths:
        entry = cache.get(p)
        if entry and entry[:2] == stamp(p):
            results[p] = entry[2]
        else:
            todo.append(p)
    log(f"decoding {len(todo)} video(s) in {workers} process(es); {len(results)} unchanged since the last run")
    t0 = time.time()
    with multiprocessing.Pool(workers) as pool:
        for n, (p, why) in enumerate(pool.imap_unordered(check, todo, chunksize=4), 1):
            results[p], cache[p] = why, stamp(p) + [why]
            if n % 50 == 0 or n == len(todo):
                eta = (time.time() - t0) / n * (len(todo) - n)
                print(f"\r{n}/{len(todo)} decoded, ETA {int(eta // 60)}:{int(eta % 60):02d}", end="",
                      file=sys.stderr, flush=True)
                _save(cache_path, cache)  # resumable: a killed run keeps what it decoded
    if todo:
        print(file=sys.stderr)
    _save(cache_path, cache)
    return results


def _save(path, cache):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(cache, f)
    os.replace(path + ".tmp", path)


def verify(dataset, root, protocol=None, split=None, lists=None, workers=None, cache=None, report=None,
           log=print):
    """Check, write the report, return (exit status, report text)."""
    expected = expected_lists(dataset, root, protocol, split, lists)
    paths = sorted({p for _, items, _ in expected for p, _ in items if p is not None})
    bad = decode_all(paths, workers or batches.default_workers(), cache or default_cache(root), log)
    lines, problems = [f"verify {dataset} at {root}" + (f", {protocol}" if protocol else "")
                          + (f", split {split}" if split else ""), ""], 0
    for name, items, _ in expected:
        missing = sum(p is None for p, _ in items)
        broken = sum(1 for p, _ in items if p is not None and bad[p])
        problems += missing + broken
        lines.append(f"{name}: expected {len(items)}, found {len(items) - missing}, missing {missing}, "
                     f"undecodable {broken}")
    undecodable = sorted((p, bad[p]) for p in paths if bad[p])
    lines += ["", f"undecodable ({len(undecodable)}):"] + [f"  {p}: {why}" for p, why in undecodable]
    missing = [f"{name}: {names[i] if names else f'entry {i + 1}'}" for name, items, names in expected
               for i, (p, _) in enumerate(items) if p is None]
    lines += ["", f"missing ({len(missing)}; list: video, or its entry number in an official layout's list):"]
    lines += [f"  {m}" for m in missing]
    text = "\n".join(lines) + "\n"
    if report:
        os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
        with open(report, "w") as f:
            f.write(text)
    for line in lines[2:2 + len(expected)]:
        log(line)
    log(("all videos are there and decode" if not problems else f"{problems} problem(s)")
        + (f"; report: {report}" if report else ""))
    return (0 if not problems else 1), text


def main(argv=None):
    p = argparse.ArgumentParser(prog="python data.py verify", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("verify",))
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--protocol", default=None, choices=("few-shot", "base2novel", "zero-shot", "full"))
    p.add_argument("--split", type=int, default=None)
    for flag in ("--train-list", "--test-list", "--labels-csv", "--novel-list", "--novel-labels-csv"):
        p.add_argument(flag, default=None)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: every usable core)")
    p.add_argument("--cache", default=None, help="results per file (default: ~/.cache/msta-verify/)")
    p.add_argument("--report", default=None, help="report file (default: runs/verify-<dataset>.txt)")
    a = p.parse_args(argv)
    lists = {k: getattr(a, k) for k in ("train_list", "test_list", "labels_csv", "novel_list", "novel_labels_csv")
             if getattr(a, k)}
    if lists and not a.labels_csv:
        print("error: --train-list/--test-list need --labels-csv (the 'id,name' class list)", file=sys.stderr)
        return 2
    report = a.report or os.path.join("runs", f"verify-{a.dataset}.txt")
    try:
        return verify(a.dataset, a.data_root, a.protocol, a.split, lists, a.workers, a.cache, report)[0]
    except layouts.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
