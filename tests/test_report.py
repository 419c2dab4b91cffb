"""harness/report.py and harness/compare.py pinned: predictions.csv rows equal what evaluate.evaluate scored
(hand-computed view means of a stub's known logits, and the synthetic demo's test clips through a stub of known
weights), per-class numbers that add up to top-1, the confusion picture, the compare table's mean and std over
made-up run folders, one line for a folder that is no finished run, --tensorboard, and one tiny train.py run end to
end.

Shape legend: B videos, V views, T frames, C classes, E embedding.
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from harness import compare
import data
import evaluate
from harness import report
from harness import runs
from harness import settings
import train
from conftest import CLASSES, TABLE, Items, Stub, run_protocol, table_answer
from video import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Holes(Items):
    """Items whose video `hole` cannot be read, as data.VideoDataset serves an undecodable test video."""

    def __init__(self, labels, views, hole):
        super().__init__(labels, views)
        self.hole, self.items = hole, [(f"videos/v{i}.avi", y) for i, y in enumerate(labels)]

    def __getitem__(self, i):
        return (None, self.labels[i]) if i == self.hole else super().__getitem__(i)


# ----------------------------------------------------------------------------- predictions.csv, per class
@pytest.mark.parametrize("batch_size", [1, 4])
def test_predictions_are_the_view_means_that_were_scored(tmp_path, batch_size):
    """TABLE's two views per video (conftest.py): each row's probabilities are the mean of the two views'
    softmaxes, its top-5 their ranking, and video 3 (unreadable) is listed as such, unscored."""
    labels = [row[0] for row in TABLE]
    result = evaluate.evaluate(Stub(table_answer), Holes(labels, views=2, hole=3), torch.device("cpu"),
                               batch_size=batch_size, keep=True)
    report.write_predictions(str(tmp_path / "p.csv"), result["predictions"])
    rows = read_csv(tmp_path / "p.csv")
    assert [r["video"] for r in rows] == [f"videos/v{i}.avi" for i in range(6)]
    assert rows[3]["status"] == "unreadable" and rows[3]["pred1"] == "" and rows[3]["correct"] == ""
    assert (rows[3]["label"], rows[3]["true_class"]) == (str(TABLE[3][0]), CLASSES[TABLE[3][0]])
    assert result["videos"] == 5 and result["skipped"] == 1
    for i, row in enumerate(rows):
        if i == 3:
            continue
        label, view0, view1 = TABLE[i]
        probs = (torch.tensor(view0).softmax(0) + torch.tensor(view1).softmax(0)) / 2  # (C,)
        top = [CLASSES.index(row[f"pred{j}"]) for j in range(1, 6)]  # TABLE has ties: any order among them
        assert [float(row[f"p{j}"]) for j in range(1, 6)] == pytest.approx(probs[top].tolist(), abs=1e-6)
        assert probs[top].tolist() == pytest.approx(probs.sort(descending=True).values[:5].tolist())
        assert (row["label"], row["true_class"], row["status"]) == (str(label), CLASSES[label], "scored")
        assert top[0] == int(probs.argmax())  # no tie at the top
        assert row["correct"] == str(int(top[0] == label)) and row["in_top5"] == str(int(label in top))
        assert float(row["p_true"]) == pytest.approx(probs[label].item(), abs=1e-6)
    # the file's hits are the metric's: videos 0, 4, 5 right of the 5 scored
    assert sum(int(r["correct"]) for r in rows if r["status"] == "scored") / 5 * 100 == pytest.approx(result["top1"])


class Motion(torch.nn.Module):
    """A stub of known weights for the synthetic demo's clips: the feature is each frame's mean pixel value,
    the logits that times a fixed matrix. Its answers are computed again below from the dataset's own items."""

    def __init__(self, frames, classes):
        super().__init__()
        self.weight = torch.randn(frames, classes, generator=torch.Generator().manual_seed(0)) * 20  # (T, C)
        self.clip = argparse.Namespace(visual=argparse.Namespace(input_resolution=32))

    def encode_text(self, tokens):
        return torch.zeros(len(tokens), 1)                    # (C, E)

    def encode_video(self, videos):
        return videos.mean((2, 3, 4))                          # (B, T, 3, H, W) -> (B, T)

    def logits(self, features, text):
        return features @ self.weight[:, :len(text)]          # (B, T) @ (T, C) -> (B, C)


def synthetic_args(**kw):
    base = dict(dataset="synthetic", data_root=None, protocol="full", split=1, seed=0, shots=None, frames=4,
                precision="fp32", workers=0, eval_batch_size=16, clips=None, crops=None, epochs=0)
    return argparse.Namespace(**{**base, **kw})


def test_synthetic_demo_rows_per_class_and_confusion(tmp_path):
    """The demo's 128 test clips through Motion: every row of predictions.csv is the stub's own answer for that
    clip; the per-class numbers add up, weighted by class size, to the printed top-1."""
    model = Motion(4, 8)
    results = run_protocol(model, synthetic_args(), torch.device("cpu"), final=True)
    (row,) = results["rows"]
    files = dict(report.write(str(tmp_path), results))
    rows = read_csv(files["per video"])
    test = data.build_dataset("synthetic", None, "full", train=False, num_frames=4, resolution=32)
    assert len(rows) == len(test) == 128
    for i, r in enumerate(rows):
        video, label = test[i]
        probs = model.logits(model.encode_video(video[None]), torch.zeros(8, 1)).softmax(-1)[0]  # (C,)
        assert r["video"] == f"synthetic#{i}" and r["true_class"] == synthetic.SYNTHETIC_CLASSES[label]
        assert r["pred1"] == synthetic.SYNTHETIC_CLASSES[int(probs.argmax())]
        assert float(r["p1"]) == pytest.approx(probs.max().item(), abs=1e-5)
    hits = sum(int(r["correct"]) for r in rows)
    assert 100 * hits / 128 == pytest.approx(row["top1"])
    assert 0 < hits < 128  # the stub is neither always right nor always wrong: the sums below can fail
    per_class = row["per_class"]
    assert [c["class"] for c in per_class] == list(synthetic.SYNTHETIC_CLASSES)
    assert sum(c["videos"] for c in per_class) == 128
    assert sum(c["videos"] * c["top1"] for c in per_class) / 128 == pytest.approx(row["top1"])
    for c, entry in enumerate(per_class):  # the most frequent wrong answer, counted from the file
        wrong = [r["pred1"] for r in rows if r["true_class"] == entry["class"] and r["correct"] == "0"]
        assert entry["confused"] == max((wrong.count(w) for w in wrong), default=0)
        if wrong:
            assert wrong.count(entry["confused_with"]) == entry["confused"]
        else:
            assert entry["confused_with"] is None
    lines = report.worst_classes(results["rows"])
    worst = min(per_class, key=lambda c: c["top1"])
    assert f"| {worst['class']} | 16 | {worst['top1']:.1f} |" in lines[5]
    if report.draw_confusion(str(tmp_path / "check.png"), results["predictions"][0], "t") is not None:
        assert files["confusions"].endswith("confusion.png") and os.path.getsize(files["confusions"]) > 5000


def test_several_test_sets_get_one_file_each(tmp_path):
    """base2novel: base and novel, each against its own four classes."""
    results = run_protocol(Motion(4, 4), synthetic_args(protocol="base2novel"), torch.device("cpu"))
    paths = dict(report.write(str(tmp_path), results))
    base, novel = read_csv(paths["per video base"]), read_csv(paths["per video novel"])
    assert paths["per video base"].endswith("predictions-base.csv") and len(base) == len(novel) == 64
    assert {r["true_class"] for r in base} == set(synthetic.SYNTHETIC_CLASSES[1::2])
    assert {r["pred1"] for r in novel} <= set(synthetic.SYNTHETIC_CLASSES[0::2])
    assert [r["row"] for r in results["rows"]] == ["base", "novel"]


def test_many_classes_draw_the_most_confused_pairs(tmp_path):
    pytest.importorskip("matplotlib")
    C, n = 150, 600
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % C
    probs = torch.rand(n, C, generator=g).softmax(-1)
    pred = dict(classes=[f"class number {c}" for c in range(C)], labels=labels.tolist(), probs=probs,
                top=probs.topk(5).indices)
    assert report.draw_confusion(str(tmp_path / "pairs.png"), pred, "150 classes") is not None
    assert os.path.getsize(tmp_path / "pairs.png") > 5000


def test_overwrite_removes_the_reports_too(tmp_path):
    for f in ("results.json", "predictions.csv", "predictions-split2.csv", "confusion.png",
              "events.out.tfevents.1.host.1.0", "notes.txt"):
        (tmp_path / f).write_text("x")
    runs.clear_output(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


# ----------------------------------------------------------------------------------------- --compare
def fake_run(folder, top1, top5, **args):
    """A finished run folder as train.py leaves it, with made-up numbers."""
    base = dict(dataset="synthetic", protocol="full", shots=None, clip="random-tiny", temporal="attn", rank=8,
                blocks=[1, 4], lr=0.01, split=1, seed=0, output=str(folder), workers=2)
    args = {**base, **args}
    row = dict(row=f"split{args['split']}", dataset="synthetic", split=args["split"], top1=top1, top5=top5)
    os.makedirs(folder)
    record = dict(dataset="synthetic", protocol="full", top1=top1, top5=top5, views="1x1", rows=[row],
                  summary=dict(top1=top1, top5=top5, runs=1), args=args)
    (folder / "results.json").write_text(json.dumps(record))
    return str(folder)


def table_rows(text):
    """The markdown table's rows as lists of cells, header first."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_compare_groups_seeds_and_shows_what_differs(tmp_path, capsys):
    runs = [fake_run(tmp_path / "r8-seed0", 70.0, 90.0, seed=0, workers=4),
            fake_run(tmp_path / "r8-seed1", 80.0, 96.0, seed=1),
            fake_run(tmp_path / "r16-seed0", 61.5, 88.0, rank=16)]
    out = tmp_path / "table.md"
    evaluate.main(["--compare", *runs, "--compare-output", str(out)])
    header, first, second = table_rows(capsys.readouterr().out)
    assert header == ["#", "rank", "seed", "n", "test top-1", "test top-5"]  # workers and output never count
    assert first == ["1", "8", "0, 1", "2", "75.00 ± 5.00", "93.00 ± 3.00"]  # population std of (70, 80)
    assert second == ["2", "16", "0", "1", "61.50", "88.00"]
    text = out.read_text()
    assert text.startswith(compare.MARK) and table_rows(text)[1] == first
    assert f"row 1: {runs[0]}, {runs[1]}" in text and "lr 0.01" in text and "blocks 1-4" in text


def recipe_run(folder, protocol, dataset, split, rows, shots=None):
    """A finished --recipe paper run folder as train.py leaves it (made-up numbers): rows {row name: top-1}."""
    args = dict(dataset=dataset, protocol=protocol, shots=shots, split=split, seed=2048, clip="ViCLIP-B/16",
                temporal="conv", recipe="paper", output=str(folder))
    os.makedirs(folder)
    record = dict(dataset=dataset, protocol=protocol, shots=shots, split=split, recipe="paper", views="2x3",
                  rows=[dict(row=r, top1=v, top5=99.0) for r, v in rows.items()], summary=dict(top1=0.0),
                  args=args)
    (folder / "results.json").write_text(json.dumps(record))
    return str(folder)


def test_compare_puts_the_authors_logged_numbers_beside_recipe_runs(tmp_path, capsys):
    """Beside each --recipe paper run: the authors' logged top-1 of the same protocol, dataset, shots and split,
    last epoch and best (protocols.json); a base-to-novel row of three draws shows the mean of their three logs."""
    runs = [recipe_run(tmp_path / "ssv2-2", "few-shot", "ssv2", 1, {"test": 8.0}, shots=2),
            recipe_run(tmp_path / "hmdb-4", "few-shot", "hmdb51", 1, {"test": 60.0}, shots=4),
            *[recipe_run(tmp_path / f"ucf-b2n-{s}", "base2novel", "ucf101", s, {"base": 95.0, "novel": 70.0})
              for s in (1, 2, 3)],
            fake_run(tmp_path / "plain", 50.0, 90.0)]
    evaluate.main(["--compare", *runs, "--compare-output", str(tmp_path / "table.md")])
    header, *rows = table_rows(capsys.readouterr().out)
    cell = {row[header.index("dataset")]: dict(zip(header, row)) for row in rows}
    assert (cell["ssv2"]["authors' last top-1"], cell["ssv2"]["authors' best top-1"]) == ("7.55", "9.10")
    assert (cell["hmdb51"]["authors' last top-1"], cell["hmdb51"]["authors' best top-1"]) == ("62.07", "62.27")
    assert cell["hmdb51"]["authors' novel top-1"] == "-"
    ucf = cell["ucf101"]  # the mean of the three logs (s1, s2, s3) and their spread
    assert ucf["n"] == "3" and ucf["authors' last top-1"].startswith("95.70 ± ")
    assert ucf["authors' novel top-1"].startswith("72.98 ± ")
    assert cell["synthetic"]["authors' last top-1"] == "-"  # no recipe: nothing beside it


def test_compare_std_is_the_one_summarize_gives(tmp_path):
    """Three seeds of one setting: the spread equals evaluate.summarize's for three splits of a zero-shot run."""
    values = [52.0, 61.0, 58.5]
    runs = [compare.read_run(fake_run(tmp_path / f"s{s}", v, 99.0, seed=s)) for s, v in enumerate(values)]
    cell = table_rows("\n".join(compare.table(runs)))[1][3]
    std = evaluate.summarize("zero-shot", [dict(top1=v, top5=0.0) for v in values])["top1_std"]
    assert cell == f"{sum(values) / 3:.2f} ± {std:.2f}"


@pytest.mark.slow
def test_compare_skips_broken_and_unfinished_folders_with_one_line_each(tmp_path):
    good = fake_run(tmp_path / "good", 50.0, 90.0)
    broken, unfinished, empty, other = (tmp_path / n for n in ("broken", "unfinished", "empty", "other"))
    for d in (broken, unfinished, empty, other):
        d.mkdir()
    (broken / "results.json").write_text('{"rows": [')  # cut off mid-write
    (other / "results.json").write_text('{"rows": [{"row": "split1"}]}')  # JSON, but not a run's results
    (unfinished / "log.txt").write_text("epoch 1/16\n")
    (unfinished / "checkpoint.pt").write_bytes(b"")
    out = str(tmp_path / "t.md")
    command = [sys.executable, "evaluate.py", "--compare-output", out, "--compare"]
    done = subprocess.run([*command, good, str(broken), str(unfinished), str(empty), str(tmp_path / "nope"),
                           str(other)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 5 and all(line.startswith("skipped ") for line in lines), done.stderr
    assert "cannot be read" in lines[0] and "unfinished" in lines[1] and "no results.json" in lines[2]
    assert "no such folder" in lines[3] and "not a results.json" in lines[4]
    assert table_rows(done.stdout)[1][2] == "50.00"
    nothing = subprocess.run([*command, str(broken), str(unfinished)], cwd=ROOT, capture_output=True, text=True)
    assert nothing.returncode == 2 and nothing.stderr.splitlines()[-1].startswith("error: no finished run")
    assert len(nothing.stderr.splitlines()) == 3 and "Traceback" not in nothing.stderr


def test_compare_never_replaces_a_file_it_did_not_write(tmp_path):
    good = fake_run(tmp_path / "good", 50.0, 90.0)
    mine = tmp_path / "compare.md"
    mine.write_text("my notes\n")
    with pytest.raises(compare.CompareError, match="not written by --compare"):
        compare.main([good], str(mine))
    assert mine.read_text() == "my notes\n"
    compare.main([good], str(mine), overwrite=True)
    compare.main([good], str(mine))  # its own file: rewritten
    assert mine.read_text().startswith(compare.MARK)


# ------------------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_missing_is_one_line_before_anything_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "has_tensorboard", lambda: False)
    with pytest.raises(SystemExit) as exit:
        train.run(["--dataset", "synthetic", "--tensorboard", "--output", str(tmp_path / "run")])
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"error: {report.TENSORBOARD_MISSING}\n"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- train.py end to end
def tiny_run(folder, seed, *extra):
    """1 epoch of 4 clips per class (4 steps): a finished run folder in seconds."""
    return train.main(["--dataset", "synthetic", "--shots", "4", "--epochs", "1", "--eval-every", "0",
                       "--workers", "0", "--seed", str(seed), "--output", str(folder), *extra])


@pytest.mark.slow
def test_train_writes_reports_that_agree_with_the_printed_top1(tmp_path, capsys):
    tiny_run(tmp_path / "seed0", 0)
    printed = capsys.readouterr().out
    top1 = float(re.search(r"test synthetic split1: top1 ([\d.]+)", printed).group(1))
    run = tmp_path / "seed0"
    rows = read_csv(run / "predictions.csv")
    assert len(rows) == 128 and f"{100 * sum(int(r['correct']) for r in rows) / 128:.2f}" == f"{top1:.2f}"
    saved = json.loads((run / "results.json").read_text())
    per_class = saved["rows"][0]["per_class"]
    assert f"{sum(c['correct'] for c in per_class) / 1.28:.2f}" == f"{top1:.2f}"
    assert "### Worst classes: split1 (8 of 8" in (run / "results.md").read_text()
    assert str(run / "predictions.csv") in printed
    try:
        import matplotlib  # noqa: F401
        assert (run / "confusion.png").stat().st_size > 5000
    except ImportError:
        assert not (run / "confusion.png").exists() and "matplotlib is not installed" in printed
    # A second seed, then one table: the two seeds are one row, n = 2.
    tiny_run(tmp_path / "seed1", 1)
    capsys.readouterr()  # the second run's own lines
    evaluate.main(["--compare", str(run), str(tmp_path / "seed1"), "--compare-output", str(tmp_path / "c.md")])
    header, row = table_rows(capsys.readouterr().out)
    assert header[:3] == ["#", "seed", "n"] and row[1:3] == ["0, 1", "2"]


@pytest.mark.slow
def test_tensorboard_logs_the_meters_reads_and_the_final_test(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    results = tiny_run(tmp_path / "tb", 0, "--tensorboard")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    # 32 clips, batch 8: 4 steps; the loss is logged where the meter reads it (the epoch's 2nd step, every 20th).
    assert [e.step for e in events.Scalars("train/loss")] == [2]
    assert 0 < events.Scalars("train/lr")[0].value < 1e-2  # in the warm-up, below the demo's peak
    assert [e.step for e in events.Scalars("epoch/loss")] == [4]
    assert events.Scalars("final/split1_top1")[0].value == pytest.approx(results["summary"]["top1"])
