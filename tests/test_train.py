"""train.py and evaluate.py end to end: a miniature UCF101 in its official layout and a small CLIP checkpoint in
OpenAI's format (both written here), exact resume, two-process torchrun equal to one process, one-line errors."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

import adapters
import clip
import data
from video import batches
import evaluate
import models
import prompts
from harness import runs, settings
import train
from conftest import ucf101_tree, write_video
from video import synthetic, transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ucf(tmp_path_factory, small_clip_file):
    """(data root, CLIP checkpoint path): 3 classes x 8 groups x 2 clips; groups 1-2 are the split-1 test set."""
    d = tmp_path_factory.mktemp("ucf")
    src = write_video(str(d / "src.avi"), codec="mpeg4", n=24, w=64, h=48)
    ucf101_tree(str(d / "ucf101"), src)
    return str(d / "ucf101"), small_clip_file


def few_shot_args(ucf, out, *extra):
    root, ckpt = ucf
    return ["--dataset", "ucf101", "--data-root", root, "--shots", "2", "--clip", ckpt, "--blocks", "1-2",
            "--rank", "8", "--frames", "4", "--batch-size", "2", "--workers", "0", "--output", str(out), *extra]


@pytest.mark.slow
def test_few_shot_end_to_end_then_evaluate(ucf, tmp_path):
    out = tmp_path / "run"
    results = train.main(few_shot_args(ucf, out, "--epochs", "2", "--eval-every", "1", "--clips", "2",
                                       "--crops", "3"))
    saved = json.loads((out / "results.json").read_text())
    for key in ("dataset", "protocol", "shots", "split", "seed", "epochs", "top1", "top5", "views",
                "trainable_params"):
        assert key in saved, key
    assert (saved["dataset"], saved["protocol"], saved["shots"], saved["epochs"]) == ("ucf101", "few-shot", 2, 2)
    assert saved["views"] == "2x3" and saved["rows"][0]["videos"] == 12 and saved["trainable_params"] > 0
    assert len(saved["history"]) == 2 and "test_top1" in saved["history"][0]  # --eval-every 1: epoch 1 was tested
    assert (out / "log.txt").exists() and (out / "results.md").exists()
    # The checkpoint holds adapter tensors, optimiser state, epoch and plain arguments only.
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"adapters", "optimizer", "scheduler", "scaler", "epoch", "history", "args"}
    assert all(k.startswith("adapters.") for k in ckpt["adapters"]) and ckpt["epoch"] == 2
    # evaluate.py rebuilds CLIP + adapters from the checkpoint and gets the same numbers.
    evaluate.main(["--checkpoint", str(out), "--workers", "0", "--output", str(tmp_path / "eval")])
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["top1"] == pytest.approx(results["summary"]["top1"])
    assert again["rows"][0]["videos"] == 12


@pytest.mark.slow
def test_resume_after_a_kill_is_exact(ucf, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train.main(few_shot_args(ucf, whole, "--epochs", "3", "--eval-every", "0", "--clips", "1", "--crops", "1"))
    # 3 steps an epoch: stopping at step 5 is a kill in the middle of epoch 2, after epoch 1's checkpoint.
    assert train.main(few_shot_args(ucf, killed, "--epochs", "3", "--eval-every", "0", "--max-steps", "5")) is None
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"] == 1
    train.main(few_shot_args(ucf, killed, "--epochs", "3", "--eval-every", "0", "--clips", "1", "--crops", "1",
                             "--resume"))
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert a["adapters"].keys() == b["adapters"].keys()
    for k in a["adapters"]:
        assert torch.equal(a["adapters"][k], b["adapters"][k]), k
    ha = json.loads((whole / "results.json").read_text())["history"]
    hb = json.loads((killed / "results.json").read_text())["history"]
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]  # epoch 1 comes back from the checkpoint


def run(args, env=None):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    # 4 clips per class (the demo's 128 would make this a minute): 4 steps of 8 per epoch.
    common = ["--dataset", "synthetic", "--clip", "random-tiny", "--shots", "4", "--epochs", "2",
              "--batch-size", "8", "--workers", "0", "--eval-every", "1"]
    one = run(["train.py", *common, "--output", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = run(["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "train.py", *common,
               "--output", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-2000:]
    h1 = json.loads((tmp_path / "one" / "results.json").read_text())
    h2 = json.loads((tmp_path / "two" / "results.json").read_text())
    for a, b in zip(h1["history"], h2["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a.get("test_top1") == pytest.approx(b.get("test_top1"))  # every test video scored exactly once
    assert h1["rows"][0]["videos"] == h2["rows"][0]["videos"] == 128
    assert h1["top1"] == pytest.approx(h2["top1"])


BAD_ARGUMENTS = {
    "unknown-dataset": lambda ucf, d: ["train.py", "--dataset", "nope"],
    "zero-shots": lambda ucf, d: ["train.py", "--dataset", "ucf101", "--shots", "0"],
    "too-many-shots": lambda ucf, d: few_shot_args(ucf, d)[:4] + ["--shots", "99", "--clip", ucf[1], "--blocks", "1-2"],
    "missing-root": lambda ucf, d: ["train.py", "--dataset", "ucf101", "--data-root", str(d / "absent"), "--shots",
                                    "2", "--clip", "random-tiny"],
    "bad-clip": lambda ucf, d: ["train.py", "--dataset", "synthetic", "--clip", str(d / "garbage.pt")],
    "bad-checkpoint": lambda ucf, d: ["evaluate.py", "--checkpoint", str(d / "garbage.pt")],
}


def bad_arguments(ucf, tmp_path, name):
    """The command line of BAD_ARGUMENTS[name], its output folder inside tmp_path."""
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    args = BAD_ARGUMENTS[name](ucf, tmp_path)
    if args[0] != "train.py" and args[0] != "evaluate.py":
        args = ["train.py", *args]
    if args[0] == "train.py" and "--output" not in args:
        args += ["--output", str(tmp_path / "run")]  # never the repository's runs/, whatever the command
    return args


def assert_one_error_line(returncode, stderr, tmp_path):
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert not (tmp_path / "run").exists()  # a failed command writes nothing


@pytest.mark.parametrize("name", BAD_ARGUMENTS)
def test_bad_arguments_are_one_line_and_exit_2(ucf, tmp_path, name, capsys):
    """Through run(argv), the function `python train.py ARGV` / `python evaluate.py ARGV` runs, in this process."""
    args = bad_arguments(ucf, tmp_path, name)
    with pytest.raises(SystemExit) as stop:
        (train if args[0] == "train.py" else evaluate).run(args[1:])
    assert_one_error_line(stop.value.code, capsys.readouterr().err, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["too-many-shots", "bad-checkpoint"])
def test_bad_arguments_as_typed_are_one_line_and_exit_2(ucf, tmp_path, name):
    result = run(bad_arguments(ucf, tmp_path, name))
    assert_one_error_line(result.returncode, result.stderr, tmp_path)


@pytest.mark.slow
def test_base_to_novel_reports_base_novel_and_harmonic_mean(tmp_path):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"b2n{seed}"
        train.main(["--dataset", "synthetic", "--protocol", "base2novel", "--seed", str(seed), "--epochs", "1",
                    "--batch-size", "8", "--workers", "0", "--output", str(out)])
        r = json.loads((out / "results.json").read_text())
        assert {row["row"] for row in r["rows"]} == {"base", "novel"} and r["shots"] == 16
        assert r["hm"] == pytest.approx(2 * r["base"] * r["novel"] / max(1e-9, r["base"] + r["novel"]))
        runs.append(r)
    # evaluate.py averages the seeds: base and novel means, HM of the means.
    evaluate.main(["--checkpoint", str(tmp_path / "b2n0"), str(tmp_path / "b2n1"), "--workers", "0",
                   "--output", str(tmp_path / "avg")])
    avg = json.loads((tmp_path / "avg" / "results.json").read_text())
    assert avg["base"] == pytest.approx((runs[0]["base"] + runs[1]["base"]) / 2)
    assert avg["novel"] == pytest.approx((runs[0]["novel"] + runs[1]["novel"]) / 2)
    assert avg["runs"] == 2 and "harmonic mean" in (tmp_path / "avg" / "results.md").read_text()


@pytest.mark.slow
def test_full_protocol_and_zero_shot_evaluation_over_three_splits(ucf, tmp_path):
    root, ckpt = ucf
    out = tmp_path / "full"
    train.main(["--dataset", "ucf101", "--data-root", root, "--protocol", "full", "--clip", ckpt, "--blocks",
                "1-2", "--rank", "8", "--frames", "4", "--epochs", "1", "--batch-size", "12", "--workers", "0",
                "--clips", "1", "--crops", "1", "--output", str(out)])
    r = json.loads((out / "results.json").read_text())
    assert r["protocol"] == "full" and r["rows"][0]["videos"] == 12
    # Zero-shot transfer is tested on all classes of each of the three official splits: mean and std.
    evaluate.main(["--checkpoint", str(out), "--dataset", "ucf101", "--data-root", root, "--protocol",
                   "zero-shot", "--clips", "1", "--crops", "1", "--workers", "0", "--output", str(tmp_path / "zs")])
    zs = json.loads((tmp_path / "zs" / "results.json").read_text())
    assert [row["split"] for row in zs["rows"]] == [1, 2, 3] and "top1_std" in zs
    # The frozen-CLIP baseline needs no checkpoint.
    evaluate.main(["--zero-shot-clip", "--clip", ckpt, "--dataset", "ucf101", "--data-root", root, "--clips", "1",
                   "--crops", "1", "--workers", "0", "--output", str(tmp_path / "clip")])
    assert json.loads((tmp_path / "clip" / "results.json").read_text())["trainable_params"] == 0


@pytest.mark.slow
def test_offline_demo_temporal_adapters_beat_frame_mean(tmp_path):
    """The README's first run, exactly as typed there (all defaults, seed 0), for the three --temporal choices.

    The synthetic twins (left/right, up/down, shrink/grow, anticlockwise/clockwise) have the same distribution of
    single frames, so --temporal none (a frame mean) cannot tell them apart; attn and conv must, by a wide margin.
    """
    top1, seconds = {}, {}
    for temporal in ("none", "attn", "conv"):
        start = time.time()
        result = subprocess.run([sys.executable, "train.py", "--dataset", "synthetic", "--temporal", temporal,
                                 "--output", str(tmp_path / temporal)], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "RANDOMLY INITIALISED, NOT PRETRAINED" in result.stdout  # the label the README promises
        seconds[temporal] = time.time() - start
        top1[temporal] = json.loads((tmp_path / temporal / "results.json").read_text())["top1"]
    print("demo top-1", top1, "seconds", {k: round(v) for k, v in seconds.items()})
    assert top1["attn"] >= top1["none"] + 20, top1
    assert top1["conv"] >= top1["none"] + 20, top1


def test_lr_schedule_is_timms_cosine_stepped_per_iteration():
    """train.lr_at equals timm's CosineLRScheduler as ViFi-CLIP builds it (t_initial = all steps, warmup_t = 5
    epochs of steps, warmup_lr_init 0, lr_min 1e-5, t_in_epochs False), read after step_update(t). The golden
    values are timm 1.0.31's, run outside this repository with 7 steps per epoch and 50 epochs."""
    args = train.parse_args(["--dataset", "ucf101", "--shots", "2"])  # few-shot: 50 epochs, 5 of warm-up
    assert (args.epochs, args.warmup_epochs, args.lr, args.min_lr) == (50, 5, 1e-3, 1e-5)
    lr_at = lambda step, per_epoch: train.lr_at(step, per_epoch, args.lr, args.min_lr, args.epochs,  # noqa: E731
                                                args.warmup_epochs)
    timm = {0: 0.0, 17: 0.0004857142857142857, 34: 0.0009714285714285714, 35: 0.0009757729755661011,
            36: 0.000974381033087177, 175: 0.0005050000000000001, 349: 1.001994049541881e-05}
    for step, lr in timm.items():
        assert lr_at(step, 7) == pytest.approx(lr, rel=1e-12, abs=1e-18), step
    # The warm-up ends on the cosine over the whole run: 9.76e-4 after epoch 5, the value the authors' logs show.
    assert f"{lr_at(5 * 7, 7):.2e}" == "9.76e-04"


# A test split of 8 videos, one of which cannot be decoded (an empty file), scored by evaluate.evaluate.
UNREADABLE_SCRIPT = """
import json, os, sys
sys.path.insert(0, {root!r})
import torch, torch.distributed as dist
import adapters, clip, data, evaluate
items = {items!r}
if os.environ.get("WORLD_SIZE"):
    dist.init_process_group("gloo")
torch.manual_seed(0)
model = adapters.MSTA(clip.build_random("random-tiny"), num_frames=4, rank=8, blocks=(3, 4))
result = evaluate.evaluate(model, data.VideoDataset("test", items, ["a", "b", "c"], num_frames=4, train=False,
                                                    resolution=32), torch.device("cpu"), batch_size=3)
if not dist.is_initialized() or dist.get_rank() == 0:
    print("RESULT " + json.dumps(result))
"""


def unreadable_split(tmp_path):
    """(items of 8 videos with one empty file among them, the same items without it)."""
    paths = [write_video(str(tmp_path / f"v{i}.avi"), codec="mpeg4", n=12 + 5 * i, w=40, h=32) for i in range(7)]
    (tmp_path / "broken.avi").write_bytes(b"")
    items = [(p, i % 3) for i, p in enumerate(paths)]
    return items[:3] + [(str(tmp_path / "broken.avi"), 1)] + items[3:], items


def test_unreadable_test_video_is_counted_not_scored(tmp_path):
    with_broken, readable = unreadable_split(tmp_path)
    torch.manual_seed(0)
    model = adapters.MSTA(clip.build_random("random-tiny"), num_frames=4, rank=8, blocks=(3, 4))
    results = {name: evaluate.evaluate(model, data.VideoDataset("test", items, ["a", "b", "c"], num_frames=4,
                                                                train=False, resolution=32),
                                       torch.device("cpu"), batch_size=3)
               for name, items in (("broken", with_broken), ("readable", readable))}
    assert (results["broken"]["videos"], results["broken"]["skipped"]) == (7, 1)
    assert (results["readable"]["videos"], results["readable"]["skipped"]) == (7, 0)
    assert results["broken"]["top1"] == pytest.approx(results["readable"]["top1"])  # the same 7 videos, once each
    assert results["broken"]["top5"] == pytest.approx(results["readable"]["top5"])
    # The results table shows both numbers.
    row = dict(row="split1", dataset="ucf101", split=1, subset=None, classes=3, **results["broken"])
    runs.write_results(str(tmp_path / "out"), dict(dataset="ucf101", protocol="full", views="1x1", rows=[row],
                                                      summary=evaluate.summarize("full", [row])))
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| videos | unreadable |" in table and "| 7 | 1 |" in table


@pytest.mark.slow
def test_unreadable_test_video_is_counted_not_scored_by_two_processes(tmp_path):
    with_broken, readable = unreadable_split(tmp_path)
    torch.manual_seed(0)
    model = adapters.MSTA(clip.build_random("random-tiny"), num_frames=4, rank=8, blocks=(3, 4))
    alone = evaluate.evaluate(model, data.VideoDataset("test", readable, ["a", "b", "c"], num_frames=4, train=False,
                                                       resolution=32), torch.device("cpu"), batch_size=3)
    (tmp_path / "broken.py").write_text(UNREADABLE_SCRIPT.format(root=ROOT, items=with_broken))
    # Two processes: every readable video scored exactly once across the ranks, the unreadable one counted once.
    two = run(["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
               str(tmp_path / "broken.py")])
    assert two.returncode == 0, two.stderr[-2000:]
    gathered = json.loads(two.stdout.split("RESULT ")[1])
    assert (gathered["videos"], gathered["skipped"]) == (7, 1)
    assert gathered["top1"] == pytest.approx(alone["top1"]) and gathered["top5"] == pytest.approx(alone["top5"])


def vifi_base2novel_tree(root, src):
    """A miniature of ViFi-CLIP's published base-to-novel files, in their exact format: flat video names with a
    label index per line ('v_Typing_g10_c04.avi 0'), fs_base_s1_train.txt (16 shots per base class),
    base_val.txt and novel_val.txt, and 'id,name' label CSVs whose ids the lists' labels index. The base CSV is
    in ViFi-CLIP's order (not alphabetical), so labels read by position in a sorted list would be wrong."""
    base, novel = ["Typing", "BasketballDunk"], ["PlayingViolin", "PullUps"]
    os.makedirs(os.path.join(root, "videos"))
    lists = {}

    def listing(name, classes, groups, clips):
        lines = []
        for label, c in enumerate(classes):
            for g in groups:
                for k in range(1, clips + 1):
                    video = f"v_{c}_g{g:02d}_c{k:02d}.avi"
                    os.link(src, os.path.join(root, "videos", video))
                    lines.append(f"{video} {label}\n")
        lists[name] = os.path.join(root, name)
        with open(lists[name], "w") as f:
            f.writelines(lines)
    listing("fs_base_s1_train.txt", base, range(8, 12), 4)  # 4 groups x 4 clips = 16 shots per base class
    listing("base_val.txt", base, (1,), 3)
    listing("novel_val.txt", novel, (1, 2), 2)
    for name, classes in (("ucf_101_base_labels.csv", base), ("ucf_101_novel_labels.csv", novel)):
        lists[name] = os.path.join(root, name)
        with open(lists[name], "w") as f:
            f.write("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes)))
    return lists


def training_set(args, resolution=32):
    """The training set train.main builds from these arguments (at random-tiny's resolution, CLIP's mean and std)."""
    reader, lists = settings.data_source(args)
    return train.training_set(args.dataset, reader, args.data_root, lists, args.protocol, args.split, args.shots,
                              args.seed, args.frames, resolution, transforms.CLIP_MEAN, transforms.CLIP_STD)


def test_base_to_novel_from_vifi_clip_list_files(tmp_path):
    src = write_video(str(tmp_path / "src.avi"), codec="mpeg4", n=16, w=40, h=32)
    root = str(tmp_path / "ucf101")
    f = vifi_base2novel_tree(root, src)
    out = tmp_path / "run"
    argv = ["--dataset", "ucf101", "--data-root", root, "--protocol", "base2novel",
            "--train-list", f["fs_base_s1_train.txt"], "--test-list", f["base_val.txt"],
            "--labels-csv", f["ucf_101_base_labels.csv"], "--novel-list", f["novel_val.txt"],
            "--novel-labels-csv", f["ucf_101_novel_labels.csv"], "--clip", "random-tiny", "--blocks", "1-2",
            "--rank", "8", "--frames", "4", "--epochs", "1", "--batch-size", "8", "--workers", "0",
            "--clips", "1", "--crops", "1", "--output", str(out)]
    train.main(argv)
    r = json.loads((out / "results.json").read_text())
    rows = {row["row"]: row for row in r["rows"]}
    assert set(rows) == {"base", "novel"} and "hm" in r
    assert (rows["base"]["videos"], rows["base"]["classes"]) == (6, 2)
    assert (rows["novel"]["videos"], rows["novel"]["classes"]) == (8, 2)
    # The published draw is used as it is (no second draw), labelled by the base CSV; each test set by its own CSV.
    args = train.parse_args(argv)
    train_set = training_set(args)
    assert train_set.classnames == ["Typing", "Basketball Dunk"] and len(train_set) == 32
    assert sorted((os.path.basename(p), label) for p, label in train_set.items) == sorted(
        (line.split()[0], int(line.split()[1])) for line in open(f["fs_base_s1_train.txt"]))
    novel = data.build_dataset("list", root, "base2novel", subset="novel", train=False, resolution=32,
                               **settings.data_source(args)[1])
    assert novel.classnames == ["Playing Violin", "Pull Ups"]
    assert all(os.path.basename(p).startswith("v_" + ["PlayingViolin", "PullUps"][label]) for p, label in novel.items)
    # A missing novel list is a one-line usage error, before anything runs.
    with pytest.raises(train.UsageError, match="--novel-list"):
        train.parse_args([a for a in argv if a != f["novel_val.txt"] and a != "--novel-list"])
    # The authors' _base description files are keyed by the base CSV's ids: read that way from the lists.
    for kind in ("s", "t"):
        table = {"0": [f"{kind} typing."] * 2, "1": [f"{kind} dunk."] * 2}
        (tmp_path / f"2_{kind}_description_ucf_101_base.json").write_text(json.dumps(table))
    args.descriptions = str(tmp_path)
    spatial, temporal = train.read_descriptions(args.dataset, "list", args.data_root, args.protocol,
                                                train_set.classnames, args.num_descriptions, args.descriptions)
    assert spatial == [["s typing."] * 2, ["s dunk."] * 2] and temporal[1] == ["t dunk."] * 2


def test_no_flip_for_ssv2_also_from_list_files(tmp_path):
    """SSv2's labels say left and right: its training clips are never mirrored, also when read from lists."""
    from torchvision.transforms import v2
    src = write_video(str(tmp_path / "src.avi"), codec="mpeg4", n=16, w=40, h=32)
    root = str(tmp_path / "lists")
    f = vifi_base2novel_tree(root, src)
    flips = {}
    for dataset in ("ssv2", "ucf101"):
        args = train.parse_args(["--dataset", dataset, "--data-root", root, "--train-list", f["fs_base_s1_train.txt"],
                                 "--test-list", f["base_val.txt"], "--labels-csv", f["ucf_101_base_labels.csv"]])
        transforms = training_set(args).transform.transforms
        flips[dataset] = any(isinstance(t, v2.RandomHorizontalFlip) for t in transforms)
    assert flips == {"ssv2": False, "ucf101": True}


# ------------------------------------------------------------------------------ the objective train.py optimises
def first_step(tmp_path, monkeypatch, *extra):
    """Run train.py for one step; return (the loss it backpropagated, the batch's videos and labels, the model
    with the adapters as they were at that step, the parsed arguments)."""
    import adapters
    seen = {}
    build = models.build_msta

    def build_and_keep(*args, **kwargs):
        seen["model"] = build(*args, **kwargs)
        return seen["model"]

    class KeepBatch(torch.utils.data.DataLoader):
        def __iter__(self):
            for batch in super().__iter__():
                seen.setdefault("labels", batch[-1].clone())
                yield batch

    class KeepLoss(torch.amp.GradScaler):
        def scale(self, outputs):
            if "loss" not in seen:
                seen["loss"] = outputs.detach().clone()
                seen["adapters"] = {k: v.clone() for k, v in seen["model"].trainable_state_dict().items()}
            return super().scale(outputs)

    encode_video = adapters.MSTA.encode_video

    def keep_videos(self, videos):
        seen.setdefault("videos", videos.detach().clone())
        return encode_video(self, videos)
    monkeypatch.setattr(models, "build_msta", build_and_keep)
    monkeypatch.setattr(torch.utils.data, "DataLoader", KeepBatch)
    monkeypatch.setattr(torch.amp, "GradScaler", KeepLoss)
    monkeypatch.setattr(adapters.MSTA, "encode_video", keep_videos)

    class KeepOptimiser(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            params = list(params)
            seen["optimiser"] = dict(kwargs, params=params)
            super().__init__(params, **kwargs)
    monkeypatch.setattr(torch.optim, "AdamW", KeepOptimiser)
    assert train.main(["--dataset", "synthetic", "--shots", "1", "--batch-size", "8", "--workers", "0",
                       "--eval-every", "0", "--max-steps", "1", "--output", str(tmp_path / "run"), *extra]) is None
    monkeypatch.undo()
    seen["model"].load_trainable_state_dict(seen["adapters"])
    return seen


def description_means(model, sentences):
    """D_c written out: the frozen CLIP text encoder's mean of L2-normalised sentence embeddings, per class."""
    import clip
    with torch.no_grad():
        return torch.stack([F.normalize(model.clip.encode_text(clip.tokenize(s)), dim=-1).mean(0)
                            for s in sentences])  # (C, E)


@pytest.mark.parametrize("alpha, num", [(0.5, 3), (0.0, 2)])
def test_first_step_loss_is_ce_plus_alpha_cc_of_that_batch(tmp_path, monkeypatch, alpha, num):
    """The loss of the first step equals L_CE + alpha L_CC computed here from the same batch: the class prompts
    through the adapted text branch, the first `num` spatial and temporal descriptions of each class through the
    frozen one (paper Sec. 3)."""
    import clip
    import data
    seen = first_step(tmp_path, monkeypatch, "--alpha", str(alpha), "--num-descriptions", str(num))
    model, videos, labels = seen["model"], seen["videos"], seen["labels"]
    assert videos.shape[0] == len(labels) == 8
    with open(os.path.join(ROOT, "descriptions", "synthetic.json")) as f:
        table = json.load(f)
    classes = list(synthetic.SYNTHETIC_CLASSES)
    spatial = description_means(model, [table[c]["spatial"][:num] for c in classes])
    temporal = description_means(model, [table[c]["temporal"][:num] for c in classes])
    with torch.no_grad():
        w = model.encode_text(clip.tokenize([f"a video of {c}." for c in classes]))  # (C, E)
        logits = model.logits(model.encode_video(videos), w)  # (B, C)
    ce = F.cross_entropy(logits, labels)
    cc = ((1 - F.cosine_similarity(w, spatial)) + (1 - F.cosine_similarity(w, temporal))).mean()
    assert cc > 0.05  # far from zero, so alpha's weight shows
    torch.testing.assert_close(seen["loss"], ce + alpha * cc, rtol=1e-5, atol=1e-5)
    # AdamW with the paper's betas and weight decay, on the adapters' parameters only
    opt = seen["optimiser"]
    assert (opt["betas"], opt["weight_decay"]) == ((0.9, 0.98), 1e-3)
    assert {id(p) for p in opt["params"]} == {id(p) for p in model.adapters.parameters()}


def test_paper_settings_are_the_defaults():
    """The optimiser and schedule of the paper (Sec. 4.1, its released runs) and PROTOCOLS' adapter sizes, written
    out here; base2novel's r 256 in blocks 1-12 is this project's default, not the authors' (--recipe paper)."""
    few = train.parse_args(["--dataset", "ucf101", "--shots", "4"])
    assert (few.protocol, few.rank, few.blocks, few.epochs, few.warmup_epochs, few.batch_size) == (
        "few-shot", 128, (8, 12), 50, 5, 32)
    assert (few.lr, few.min_lr, few.weight_decay, few.scale, few.alpha, few.frames) == (1e-3, 1e-5, 1e-3, 0.005,
                                                                                        1.0, 8)
    b2n = train.parse_args(["--dataset", "ucf101", "--protocol", "base2novel"])
    assert (b2n.rank, b2n.blocks, b2n.shots, b2n.epochs) == (256, (1, 12), 16, 50)


def test_learning_rate_warms_up_then_decays_to_min_lr():
    """The schedule's shape (warm-up from low, then a decay that ends at --min-lr); its exact values are timm's."""
    args = train.parse_args(["--dataset", "ucf101", "--shots", "4", "--epochs", "10", "--warmup-epochs", "2"])
    lrs = [train.lr_at(step, 10, args.lr, args.min_lr, args.epochs, args.warmup_epochs)  # 10 steps an epoch
           for step in range(100)]
    assert lrs[0] < 0.2 * args.lr  # warm-up starts low
    assert all(a < b for a, b in zip(lrs[:19], lrs[1:20]))  # rises through the warm-up (steps 0-19)
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))  # then only decreases
    assert args.min_lr <= lrs[-1] < 2 * args.min_lr
