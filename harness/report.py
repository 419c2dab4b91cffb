"""What a test got right and wrong: predictions.csv per video, accuracy per class, confusion.png, and the optional
TensorBoard log of a training run.

The numbers here are the ones the protocol's test scored (paper Sec. 4.1, evaluate.evaluate): a video's
probabilities are the mean over its test views of each view's softmax (the views' summed softmaxes, which
evaluate.evaluate ranks, divided by the number of views), and its top-5 classes are exactly the ones that
evaluate.evaluate counted for top-1 and top-5. So predictions.csv, the per-class numbers and the confusion picture
always agree with the printed top-1.

Files, in the run folder (train.py) or the evaluation folder (evaluate.py); one test set gives predictions.csv and
confusion.png, several (zero-shot's three splits, base2novel's base and novel) one file each, named after the test
set: predictions-split2.csv, confusion-novel.png. matplotlib and tensorboard are optional, imported only where
they are used.

Shape legend: n scored videos, k ranked classes (5, or C when there are fewer), C classes.
"""
import csv
import glob
import importlib.util
import os

import torch

WORST = 10  # classes listed in results.md, lowest top-1 first
FULL_MATRIX_MAX = 110  # up to this many classes (UCF101's 101 included) the picture is the whole matrix
TOP_PAIRS = 30  # above it, the most frequent (true, predicted) pairs instead
OUTPUTS = ("predictions*.csv", "confusion*.png", "events.out.tfevents.*")  # what this module writes in a folder


def predictions(dataset, scored, probs, top, labels):
    """The per-video record of one test set. scored: the dataset indices of the scored videos, in the order of
    probs (n, C), top (n, k) and labels (n,); every other index of the dataset could not be read."""
    items = getattr(dataset, "items", None)  # data.VideoDataset's (path, label) pairs
    tag = getattr(dataset, "name", type(dataset).__name__)

    def name(i):  # the video's path, or "<dataset>#<index>" for in-memory sets (the synthetic demo)
        return items[i][0] if items else f"{tag}#{i}"
    seen = set(scored)
    return dict(classes=list(dataset.classnames), index=list(scored), videos=[name(i) for i in scored],
                probs=probs.float(), top=top, labels=labels.tolist(),
                unreadable=[(i, name(i), items[i][1] if items else None) for i in range(len(dataset))
                            if i not in seen])


def confusion(pred):
    """(C, C) counts: row = true class, column = the top-1 prediction."""
    C = len(pred["classes"])
    pairs = torch.tensor(pred["labels"], dtype=torch.long) * C + pred["top"][:, 0].long()  # (n,)
    return torch.bincount(pairs, minlength=C * C).view(C, C)                                 # (C*C,) -> (C, C)


def per_class(pred):
    """One entry per class: videos scored, top-1 hits, top-1 (%), and the class its videos are most often
    predicted as instead (None when never wrong). Weighted by videos, the top-1s give the test set's top-1."""
    counts = confusion(pred)
    out = []
    for c, name in enumerate(pred["classes"]):
        row = counts[c].clone()
        videos, correct = int(row.sum()), int(row[c])
        row[c] = 0
        other = int(row.argmax())
        out.append({"class": name, "videos": videos, "correct": correct,
                    "top1": 100 * correct / videos if videos else None,
                    "confused_with": pred["classes"][other] if row[other] > 0 else None,
                    "confused": int(row[other])})
    return out


def worst_classes(rows, k=WORST):
    """results.md's lines: for each test set, its k lowest-top-1 classes with their most frequent wrong answer."""
    lines, several = [], len({r.get("run") for r in rows}) > 1  # several runs (evaluate.py): name each
    for r in rows:
        classes = [c for c in r.get("per_class") or [] if c["videos"]]
        if not classes:
            continue
        worst = sorted(classes, key=lambda c: c["top1"])[:k]  # sorted() is stable: ties keep class order
        where = f", {r['run']}" if several else ""
        lines += ["", f"### Worst classes: {r['row']}{where} ({len(worst)} of {len(r['per_class'])}; "
                  "all classes are in results.json)", "",
                  "| class | videos | top-1 | most often predicted instead |", "|---|---|---|---|"]
        for c in worst:
            instead = f"{c['confused_with']} ({c['confused']})" if c["confused_with"] else "-"
            lines.append(f"| {c['class']} | {c['videos']} | {c['top1']:.1f} | {instead} |")
    return lines


def write_predictions(path, pred):
    """predictions.csv: one row per test video in test-set order; unreadable ones say so and have no scores."""
    k = pred["top"].shape[1]
    header = ["video", "label", "true_class", "status", "correct", "in_top5", "p_true"]
    header += [f"{key}{j}" for j in range(1, k + 1) for key in ("pred", "p")]
    rows = []  # (dataset index, CSV row)
    for n, i in enumerate(pred["index"]):
        label, top, p = pred["labels"][n], pred["top"][n].tolist(), pred["probs"][n]
        ranked = [x for c in top for x in (pred["classes"][c], f"{p[c].item():.6f}")]
        rows.append((i, [pred["videos"][n], label, pred["classes"][label], "scored", int(top[0] == label),
                         int(label in top), f"{p[label].item():.6f}", *ranked]))
    for i, video, label in pred["unreadable"]:
        known = label is not None
        rows.append((i, [video, label if known else "", pred["classes"][label] if known else "", "unreadable"]
                     + [""] * (len(header) - 4)))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(row for _, row in sorted(rows, key=lambda r: r[0]))
    os.replace(tmp, path)  # a kill never leaves half a file


def draw_confusion(path, pred, title):
    """confusion.png: the matrix (rows = true class, colour = share of its videos) up to FULL_MATRIX_MAX classes,
    else a bar chart of the TOP_PAIRS most frequent confusions. Returns the path, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no window: works on servers without a display
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    counts, classes = confusion(pred), pred["classes"]
    n, correct = int(counts.sum()), int(counts.diagonal().sum())
    title = f"{title}\ntop-1 {100 * correct / max(1, n):.2f}% of {n} videos"
    fig = (_matrix if len(classes) <= FULL_MATRIX_MAX else _pairs)(plt, counts, classes, title)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _matrix(plt, counts, classes, title):
    import matplotlib.colors
    C = len(classes)
    font = 9 if C <= 20 else 7 if C <= 50 else 5  # points; a cell is made at least 1.4 font heights tall
    cell = max(1.4 * font / 72, min(0.55, 6 / C))  # inches
    width = max(len(c) for c in classes) * font * 0.55 / 72  # the label column, in inches
    # 150 dpi for large label sets: their 5-point labels are then 10 pixels tall, legible when zoomed in.
    fig, ax = plt.subplots(figsize=(C * cell + width + 1.6, C * cell + width + 1.0), dpi=100 if C <= 50 else 150)
    share = counts.float() / counts.sum(1, keepdim=True).clamp(min=1)  # (C, C): rows sum to 1
    # Square-root colour scale: a confusion of one video in ten is still clearly visible next to the diagonal.
    norm = matplotlib.colors.PowerNorm(0.5, vmin=0, vmax=1)
    image = ax.imshow(share.numpy(), cmap="Blues", norm=norm)
    ax.set_xticks(range(C), classes, rotation=90, fontsize=font)
    ax.set_yticks(range(C), classes, fontsize=font)
    ax.set(xlabel="predicted class (top-1)", ylabel="true class")
    if C <= 30:  # counts in the cells while they fit
        for t in range(C):
            for p in range(C):
                if counts[t, p]:
                    ax.text(p, t, int(counts[t, p]), ha="center", va="center", fontsize=font,
                            color="white" if share[t, p] > 0.3 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, ticks=[0, 0.05, 0.2, 0.4, 0.6, 0.8, 1],
                 label="share of the true class's videos")
    ax.set_title(title, fontsize=10)
    return fig


def _pairs(plt, counts, classes, title):
    off = counts.clone()
    off.fill_diagonal_(0)
    totals = counts.sum(1)
    values, flat = off.flatten().topk(min(TOP_PAIRS, off.numel()))  # the most frequent wrong answers
    pairs = [(int(f) // len(classes), int(f) % len(classes), int(v)) for v, f in zip(values, flat) if v > 0]
    fig, ax = plt.subplots(figsize=(9, 0.25 * max(len(pairs), 4) + 1.2), dpi=100)
    ax.barh(range(len(pairs)), [v for _, _, v in pairs], color="tab:blue")
    ax.set_yticks(range(len(pairs)), [f"{classes[t]}  ->  {classes[p]}" for t, p, _ in pairs], fontsize=8)
    ax.invert_yaxis()  # the most frequent first
    for y, (t, _, v) in enumerate(pairs):
        ax.text(v, y, f" {v} ({100 * v / int(totals[t]):.0f}% of the class)", va="center", fontsize=7)
    ax.set(xlabel="test videos of the true class predicted as the other (top-1)")
    ax.set_title(f"{title}; the {len(pairs)} most frequent confusions of {len(classes)} classes "
                 "(true -> predicted)", fontsize=10)
    ax.margins(x=0.25)
    return fig


def write(folder, results, log=None):
    """predictions*.csv and confusion*.png for each test set of run_protocol's results; returns the
    [(what, path)] written, for the closing list of files."""
    rows, preds = results["rows"], results.get("predictions") or []
    runs = {r.get("run") for r in rows}
    files, no_matplotlib = [], False
    for r, pred in zip(rows, preds):
        # One test set of one run: plain names; else the run's folder name and the test set's name are added.
        parts = ([os.path.basename(os.path.normpath(r["run"])).replace(" ", "-")] if len(runs) > 1 else []) + (
            [r["row"]] if len(rows) > 1 else [])
        stem, label = "".join("-" + p for p in parts), " ".join(parts)
        path = os.path.join(folder, f"predictions{stem}.csv")
        write_predictions(path, pred)
        files.append((f"per video {label}".strip(), path))
        title = f"{os.path.basename(os.path.normpath(r.get('run') or folder))}: {r['dataset']} {r['row']}"
        picture = draw_confusion(os.path.join(folder, f"confusion{stem}.png"), pred, title)
        if picture:
            files.append((f"confusions {label}".strip(), picture))
        no_matplotlib = picture is None
    if no_matplotlib and log:
        log("confusion.png: not drawn, matplotlib is not installed (pip install matplotlib)")
    return files


def written(folder):
    """The files of OUTPUTS in `folder` (--overwrite removes them with the rest of a run)."""
    return sorted(os.path.basename(p) for pattern in OUTPUTS for p in glob.glob(os.path.join(folder, pattern)))


# ------------------------------------------------------------------------------------------- TensorBoard
TENSORBOARD_MISSING = ("--tensorboard needs the tensorboard package: pip install tensorboard (or leave out "
                       "--tensorboard)")


def has_tensorboard():
    return importlib.util.find_spec("tensorboard") is not None


class Board:
    """--tensorboard: training loss and learning rate per step, epoch loss and accuracies per epoch, the final
    test at the end, all against the optimiser step, in the run folder (`tensorboard --logdir runs` shows every
    run by its folder name)."""

    def __init__(self, folder, step=0):
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: after --resume, the killed run's steps past the checkpoint are dropped, not drawn twice.
        self.writer = SummaryWriter(folder, purge_step=step or None)

    def step(self, step, loss, lr):
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, step, row):
        """One history row (train.py): the epoch's mean loss, running train top-1, any single-view test."""
        self.writer.add_scalar("epoch/loss", row["loss"], step)
        self.writer.add_scalar("epoch/train_top1", row["train_top1"], step)
        for key, value in row.items():
            if key.startswith("test_"):
                self.writer.add_scalar(f"epoch/{key}_single_view", value, step)

    def final(self, step, results):
        """The protocol's final test with its published views: each test set's top-1 and top-5, and the
        summary's harmonic mean (base2novel) or spread over splits (zero-shot)."""
        for r in results["rows"]:
            for key in ("top1", "top5"):
                self.writer.add_scalar(f"final/{r['row']}_{key}", r[key], step)
        for key in ("hm", "top1_std"):
            if key in results["summary"]:
                self.writer.add_scalar(f"final/{key}", results["summary"][key], step)
        self.writer.flush()

    def close(self):
        self.writer.close()
