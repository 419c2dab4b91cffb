"""A user's first hour, as commands: a class-per-folder tree of your own videos trained and evaluated, a finished
run never written over, evaluate.py's one-line errors, --video on videos the run never saw, what the screen
and the run folder hold, Ctrl-C's resume hint, the thread rule and the help texts. Everything is written under
pytest's temporary folders; the commands run as subprocesses, as a user types them."""
import csv
import hashlib
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest
import torch

from harness import curves
import evaluate
import prompts
from harness import runs
import train
from conftest import write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("PlayingCello", "walking_dog", "jump", "Surfing", "tai_chi", "YoYo")  # 6: top-5 is a real choice


def run(*args):
    """`python ARGS` in the project folder. No time limit: a verdict never depends on the machine's speed."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def call(module, argv, capsys):
    """module.run(argv) in this process, the function `python module.py ARGV` runs, for speed (no interpreter
    and torch start-up per command); returns a CompletedProcess like run()'s."""
    try:
        module.run(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out.out, out.err)


def one_error_line(result):
    """Exit status 2, no traceback, exactly one (non-empty) line on stderr, starting with "error:"."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def digests(folder):
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, f))}


@pytest.fixture(scope="module")
def tree(tmp_path_factory, small_clip_file):
    """(root, CLIP checkpoint): DIR/train/<class>/ 2 videos and DIR/test/<class>/ 1 video for 6 classes."""
    d = tmp_path_factory.mktemp("mine")
    for c, name in enumerate(CLASSES):
        for part, n in (("train", 2), ("test", 1)):
            for i in range(n):
                write_video(str(d / "videos" / part / name / f"clip{i}.mp4"), n=12, w=48, h=40, seed=10 * c + i)
    return str(d / "videos"), small_clip_file


def folder_args(tree, out, *extra):
    root, ckpt = tree
    return ["train.py", "--dataset", "folder", "--data-root", root, "--clip", ckpt, "--frames", "4", "--rank", "8",
            "--blocks", "1-2", "--batch-size", "4", "--workers", "0", "--output", str(out), *extra]


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory):
    """A run trained on the folder tree by the command line: (run folder, the command's result)."""
    out = tmp_path_factory.mktemp("runs") / "mine"
    result = run(*folder_args(tree, out, "--epochs", "2", "--eval-every", "1"))
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result


@pytest.mark.slow
def test_folder_dataset_trains_and_evaluates(trained, capsys):
    out, result = trained
    saved = json.loads((out / "results.json").read_text())
    assert saved["dataset"] == "folder" and saved["rows"][0]["classes"] == 6 and saved["rows"][0]["videos"] == 6
    assert saved["args"]["classnames"] == ["Playing Cello", "Surfing", "Yo Yo", "jump", "tai chi", "walking dog"]
    # No descriptions file: L_CC is off, and the log says so once.
    log = (out / "log.txt").read_text()
    assert log.count("L_CC is off") == 1 and saved["args"]["alpha"] == 0
    # evaluate.py on the same run and tree gives the training run's final numbers.
    ev = call(evaluate, ["--checkpoint", str(out), "--workers", "0"], capsys)
    assert ev.returncode == 0, ev.stderr[-2000:]
    again = json.loads((out / "eval-folder-full" / "results.json").read_text())
    assert again["top1"] == pytest.approx(saved["top1"]) and again["rows"][0]["videos"] == 6
    assert str(out / "eval-folder-full" / "results.md") in ev.stdout


@pytest.mark.slow
def test_the_screen_says_where_everything_is(trained):
    out, result = trained
    for name in ("results.md", "results.json", "checkpoint.pt", "history.csv", "log.txt"):
        assert str(out / name) in result.stdout, name
    assert "| test set |" in result.stdout  # the results table
    assert '"data_root"' not in result.stdout and '"data_root"' in (out / "log.txt").read_text()  # args: log only
    assert "ETA --:--" in result.stdout  # the epoch's first progress line (after its 2nd step) makes no guess
    assert re.search(r"epoch 1/2: .*test top-1 \d+\.\d%.*\(single view\)", result.stdout), result.stdout
    # results.json records every argument, including the ones left at their defaults.
    saved = json.loads((out / "results.json").read_text())
    parsed = train.parse_args(folder_args(("r", "c"), "o")[1:])
    assert set(vars(parsed)) - {"classnames"} <= set(saved["args"])


@pytest.mark.slow
def test_history_csv_and_curves(trained):
    out, _ = trained
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["test_top1"] != "" and rows[1]["test_top1"] == ""
    assert float(rows[0]["loss"]) > 0 and 0 <= float(rows[1]["train_top1"]) <= 100
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert (out / "curves.png").exists() == has_matplotlib
    if has_matplotlib:
        assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_are_skipped_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    rows = [dict(epoch=1, loss=2.0, train_top1=10.0, lr=0.1, clips_per_s=5.0),
            dict(epoch=2, loss=1.5, train_top1=30.0, test_top1=25.0, test_top5=80.0, lr=0.01, clips_per_s=5.0)]
    curves.write_history(str(tmp_path), rows)
    assert curves.plot(str(tmp_path), rows) is None and not (tmp_path / "curves.png").exists()
    with open(tmp_path / "history.csv", newline="") as f:
        back = list(csv.DictReader(f))
    assert back[0]["test_top1"] == "" and back[1]["test_top1"] == "25"


@pytest.mark.slow
def test_a_second_run_never_writes_over_the_first(trained, tree, tmp_path, capsys):
    out, _ = trained
    before = digests(out)
    line = one_error_line(run(*folder_args(tree, out)))  # the command line itself, once
    assert "already holds a finished run" in line and "--resume" in line and "--overwrite" in line
    for extra in (["--epochs", "1", "--temporal", "conv"], ["--clip", str(tmp_path / "absent.pt")]):
        assert "already holds a finished run" in one_error_line(call(train, folder_args(tree, out, *extra)[1:],
                                                                     capsys))
    assert digests(out) == before
    # A partial run (a log, a checkpoint, no results) is refused the same way.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "log.txt").write_text("an earlier run's log\n")
    assert "partial run" in one_error_line(call(train, folder_args(tree, partial)[1:], capsys))
    assert (partial / "log.txt").read_text() == "an earlier run's log\n"


@pytest.mark.slow
def test_overwrite_replaces_the_old_run(trained, tree, tmp_path, capsys):
    out, _ = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(out):
        if os.path.isfile(out / name):
            (copy / name).write_bytes((out / name).read_bytes())
    (copy / "eval-folder-full").mkdir()
    (copy / "eval-folder-full" / "results.json").write_text("{}")  # the old run's evaluation goes with it
    (copy / "notes.txt").write_text("mine")  # a file the user put there stays
    result = call(train, folder_args(tree, copy, "--epochs", "1", "--eval-every", "0", "--overwrite")[1:], capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((copy / "results.json").read_text())
    assert saved["epochs"] == 1 and len(saved["history"]) == 1
    assert (copy / "log.txt").read_text().count("train.py ") == 1  # the old log is gone, not appended to
    assert not (copy / "eval-folder-full").exists() and (copy / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_evaluate_never_writes_over_results(trained, tmp_path, capsys):
    out, _ = trained
    target = tmp_path / "eval"
    args = ["--checkpoint", str(out), "--workers", "0", "--output", str(target)]
    assert call(evaluate, args, capsys).returncode == 0
    before = digests(target)
    assert "already holds" in one_error_line(call(evaluate, args + ["--clips", "2"], capsys))
    assert digests(target) == before
    result = call(evaluate, args + ["--clips", "2", "--overwrite"], capsys)
    assert result.returncode == 0 and json.loads((target / "results.json").read_text())["views"] == "2x1"


BAD_EVALUATE = {  # name: evaluate.py arguments after the run folder (RUN) and a scratch folder (TMP)
    "dataset-spelling": ["--checkpoint", "RUN", "--dataset", "UCF101"],
    "protocol-spelling": ["--checkpoint", "RUN", "--protocol", "zeroshot"],
    "split-4": ["--checkpoint", "RUN", "--split", "4"],
    "clips-0": ["--checkpoint", "RUN", "--clips", "0"],
    "crops-2": ["--checkpoint", "RUN", "--crops", "2"],
    "batch-not-a-number": ["--checkpoint", "RUN", "--batch-size", "x"],
    "workers-negative": ["--checkpoint", "RUN", "--workers", "-1"],
    "threads-0": ["--checkpoint", "RUN", "--threads", "0"],
    "precision": ["--checkpoint", "RUN", "--precision", "fp8"],
    "unknown-option": ["--checkpoint", "RUN", "--bogus"],
    "nothing-to-evaluate": [],
    "clip-without-baseline": ["--checkpoint", "RUN", "--clip", "ViT-B/16"],
    "missing-checkpoint": ["--checkpoint", "TMP/absent"],
    "zero-shot-on-ssv2": ["--checkpoint", "RUN", "--protocol", "zero-shot", "--dataset", "ssv2"],
    "base2novel-on-folder": ["--checkpoint", "RUN", "--protocol", "base2novel"],
    "missing-data-root": ["--checkpoint", "RUN", "--dataset", "hmdb51", "--data-root", "TMP/absent"],
    "video-with-two-runs": ["--checkpoint", "RUN", "RUN", "--video", "TMP/a.mp4"],
    "video-missing": ["--checkpoint", "RUN", "--video", "TMP/absent.mp4"],
    "output-is-a-file": ["--checkpoint", "RUN", "--output", "TMP/a.mp4"],
}


@pytest.fixture(scope="module")
def one_epoch(tree, tmp_path_factory):
    """A finished run on the folder tree (1 epoch), trained in this process: the run folder."""
    out = tmp_path_factory.mktemp("runs") / "one-epoch"
    train.main(folder_args(tree, out, "--epochs", "1", "--eval-every", "0")[1:])
    return out


def bad_evaluate(out, tmp_path, name):
    (tmp_path / "a.mp4").write_bytes(b"")
    return [str(out) if a == "RUN" else a.replace("TMP", str(tmp_path)) for a in BAD_EVALUATE[name]]


@pytest.mark.parametrize("name", BAD_EVALUATE)
def test_evaluate_bad_arguments_are_one_line_and_exit_2(one_epoch, tmp_path, name, capsys, monkeypatch):
    """Through evaluate.run(argv), the function `python evaluate.py ARGV` runs, in this process."""
    monkeypatch.chdir(tmp_path)  # a default output folder, were one ever made, lands here
    one_error_line(call(evaluate, ["--workers", "0", *bad_evaluate(one_epoch, tmp_path, name)], capsys))
    assert not any(n.startswith("eval-") for n in os.listdir(one_epoch))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dataset-spelling", "protocol-spelling", "video-missing"])
def test_evaluate_bad_arguments_as_typed_are_one_line_and_exit_2(trained, tmp_path, name, monkeypatch):
    out, _ = trained
    monkeypatch.chdir(tmp_path)
    one_error_line(run("evaluate.py", "--workers", "0", *bad_evaluate(out, tmp_path, name)))
    assert not any(n.startswith("eval-") and n != "eval-folder-full" for n in os.listdir(out))


@pytest.mark.slow
def test_video_prints_the_top5_classes(trained, tmp_path, capsys):
    out, _ = trained
    videos = [write_video(str(tmp_path / "new.mkv"), codec="mpeg4", n=20, w=56, h=44, seed=99),
              write_video(str(tmp_path / "other.mp4"), n=30, w=40, h=64, seed=98)]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00 ftypisom not really a video")
    result = run("evaluate.py", "--checkpoint", str(out), "--video", videos[0], str(broken), videos[1],
                 "--clips", "2", "--crops", "3")
    assert result.returncode == 2  # one of the three could not be read: said in one line, the others answered
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        line for line in result.stderr.splitlines() if str(broken) in line and line.startswith("error:")]
    names = {"Playing Cello", "Surfing", "Yo Yo", "jump", "tai chi", "walking dog"}
    for video in videos:
        lines = result.stdout.split(video, 1)[1].splitlines()[1:6]
        found = [re.fullmatch(r"\s+(\d+\.\d)%  (.+)", line) for line in lines]
        assert all(found), result.stdout
        probs = [float(m.group(1)) for m in found]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.1
        assert {m.group(2) for m in found} <= names and len({m.group(2) for m in found}) == 5
    assert call(evaluate, ["--checkpoint", str(out), "--video", *videos], capsys).returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["broken.mp4", "new.mkv", "other.mp4"]  # --video writes nothing


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    """A real SIGINT, sent by the run to itself at a known point (right after epoch 1's checkpoint and history.csv,
    the last thing an epoch writes), so the verdict never depends on how fast the machine is."""
    out = tmp_path / "run"
    write_history = curves.write_history

    def write_then_interrupt(folder, history):
        write_history(folder, history)
        if len(history) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt at the next bytecode
    monkeypatch.setattr(curves, "write_history", write_then_interrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a plain `python` has it
    try:
        result = call(train, ["--dataset", "synthetic", "--shots", "4", "--epochs", "60", "--eval-every", "0",
                              "--workers", "0", "--output", str(out)], capsys)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.returncode == 130
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr and "--resume" in lines[0], result.stderr
    assert f"{out}/checkpoint.pt holds epoch 1." in lines[0]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    command = shlex.split(lines[0].split("Continue with: ")[1])
    assert command[:2] == ["python", "train.py"]
    resumed = train.parse_args(command[2:])
    assert resumed.resume and resumed.output == str(out) and resumed.epochs == 60


def test_default_run_names_carry_every_setting():
    name = lambda *a: train.parse_args(list(a)).output  # noqa: E731
    assert name("--dataset", "ucf101", "--shots", "4") == os.path.join(
        "runs", "ucf101-few-shot-4shot-ViT-B-16-attn-r128-b8-12-split1-seed0")
    assert name("--dataset", "synthetic") == os.path.join("runs", "synthetic-full-random-tiny-attn-r8-b1-4-split1-seed0")
    demo = {name("--dataset", "synthetic", "--temporal", t) for t in ("attn", "conv", "none")}
    assert len(demo) == 3  # the README's none/attn/conv comparison no longer overwrites itself
    assert name("--dataset", "ucf101", "--shots", "4", "--lr", "0.01", "--frames", "16").endswith("-f16-lr0.01")
    # The commands of docs/protocols.md name the folders train.py makes.
    readme = open(os.path.join(ROOT, "docs", "protocols.md"), encoding="utf-8").read()
    assert name("--dataset", "ucf101", "--protocol", "base2novel", "--seed", "1").replace("seed1", "seed{1,2,3}") in readme
    assert name("--dataset", "k400", "--protocol", "zero-shot") in readme
    assert name("--dataset", "folder", "--data-root", "/x/my_videos/").startswith(
        os.path.join("runs", "folder-my_videos-full-ViT-B-16-attn-r256-b1-12"))


def test_threads_rule(monkeypatch):
    threads = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        monkeypatch.setattr(runs.batches, "usable_cores", lambda: 8)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert runs.choose_threads(0) == 8 and torch.get_num_threads() == 8
        assert runs.choose_threads(2) == 6
        assert runs.choose_threads(8) == 4  # on the CPU the workers' share is at most half
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: two processes share the 8 cores
        assert runs.choose_threads(2) == 2
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert runs.choose_threads(4) == 1  # on a GPU the workers are busy: each keeps a core
        assert runs.choose_threads(4, requested=3) == 3  # --threads wins
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # set by the user: respected
        torch.set_num_threads(1)
        assert runs.choose_threads(0) == 1
    finally:
        torch.set_num_threads(threads)


def test_help_shows_real_defaults(capsys):
    for parse in (train.parse_args, evaluate.parse_args):
        with pytest.raises(SystemExit):
            parse(["--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "(default: None)" not in text
    for module in ("train", "evaluate"):
        assert not re.search(r"issue \d", open(os.path.join(ROOT, f"{module}.py")).read(), re.I)
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: 128 for few-shot, 256 otherwise" in text
    for flag in ("--frames", "--temporal", "--epochs", "--lr"):
        assert re.search(rf"{flag} \S+ \w", text), flag  # each has help text


def test_no_issue_numbers_in_user_facing_text(capsys):
    import benchmark
    assert not re.search(r"issue \d", open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(), re.I)
    with pytest.raises(SystemExit):
        benchmark.main(["--help"])
    assert not re.search(r"issue \d", capsys.readouterr().out, re.I)
    assert not re.search(r"issue \d", open(os.path.join(ROOT, "benchmark.py")).read(), re.I)  # its printed text


@pytest.mark.slow
def test_folder_dataset_with_descriptions_uses_l_cc(tree, tmp_path):
    names = ["Playing Cello", "Surfing", "Yo Yo", "jump", "tai chi", "walking dog"]
    table = {n: {"spatial": [f"a frame of {n}.", f"{n}, seen once."],
                 "temporal": [f"{n} starts, goes on, and ends.", f"first {n}, then more {n}."]} for n in names}
    (tmp_path / "mine.json").write_text(json.dumps(table))
    out = tmp_path / "run"
    train.main(folder_args(tree, out, "--epochs", "1", "--eval-every", "0", "--descriptions",
                           str(tmp_path / "mine.json"))[1:])
    assert "L_CC is off" not in (out / "log.txt").read_text()
    assert json.loads((out / "results.json").read_text())["args"]["alpha"] == 1.0
    with pytest.raises(prompts.DescriptionError):  # a file that misses a class is an error, not silence
        table.pop("jump")
        (tmp_path / "mine.json").write_text(json.dumps(table))
        train.main(folder_args(tree, tmp_path / "other", "--descriptions", str(tmp_path / "mine.json"))[1:])
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_a_small_tree_with_val_and_the_default_batch(tree, tmp_path):
    """Kinetics-style val/ instead of test/, and fewer videos than the default batch of 32: the batch becomes
    all the training videos, and the log says so."""
    for c, name in enumerate(("archery", "bowling")):
        for part in ("train", "val"):
            write_video(str(tmp_path / "tiny" / part / name / "a.mp4"), n=8, w=32, h=32, seed=c)
        write_video(str(tmp_path / "tiny" / "train" / name / "b.mp4"), n=8, w=32, h=32, seed=5 + c)
    out = tmp_path / "run"
    result = train.main(["--dataset", "folder", "--data-root", str(tmp_path / "tiny"), "--clip", tree[1],
                         "--frames", "2", "--rank", "4", "--blocks", "2-2", "--epochs", "1", "--workers", "0",
                         "--output", str(out)])
    assert result["rows"][0]["videos"] == 2 and result["rows"][0]["classes"] == 2
    assert "batch size: 4, all the training videos" in (out / "log.txt").read_text()
