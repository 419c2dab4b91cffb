"""`train.py --recipe paper --print-config` against every run the authors logged (tests/fixtures/paper_logs.json,
read from their released logs), the precedence of typed flags, the refusal when the inputs are absent, and the run
folder names docs/reproducing.md gives."""
import json
import os
import re
import shutil

import pytest
import torch

import clip
import prompts
import train
from harness import recipe, settings
from video import batches, transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "tests", "fixtures", "paper_logs.json")) as f:
    RUNS = json.load(f)["runs"]
GPUS = 8  # the logs' BATCH_SIZE is per GPU (see the fixture's _about)


def printed(capsys, argv):
    assert train.main(argv + ["--print-config"]) is None
    return json.loads(capsys.readouterr().out)


def command(run):
    argv = ["--recipe", "paper", "--dataset", run["dataset"], "--protocol", run["protocol"],
            "--split", str(run["split"])]
    return argv + (["--shots", str(run["shots"])] if "shots" in run else [])


def published(path):
    """The published list standing in for a logged one: the authors' *_new.txt lists were never published."""
    return path.replace("_new.txt", ".txt")


@pytest.mark.parametrize("entry", RUNS, ids=[e["log"] for e in RUNS])
def test_print_config_equals_the_log(capsys, tmp_path, monkeypatch, entry):
    monkeypatch.chdir(tmp_path)
    c, log = printed(capsys, command(entry["run"])), entry["logged"]
    assert os.listdir(tmp_path) == []  # nothing written
    assert c["clip"] == log["MODEL.ARCH"] + "/16" and c["temporal"] == "conv"  # the paper's temporal convolution
    assert c["rank"] == int(log["TRAINER.MMADAPTER.ADAPTER_DIM"])
    assert c["blocks"] == [int(log["TRAINER.MMADAPTER.ADAPTER_START"]), int(log["TRAINER.MMADAPTER.ADAPTER_END"])]
    assert c["scale"] == float(log["TRAINER.MMADAPTER.ADAPTER_SCALE"])
    assert c["num_descriptions"] == int(log["TRAINER.MMADAPTER.DES_N"])
    tag = prompts.AUTHORS_TAGS[c["dataset"]] + ("_base" if c["protocol"] == "base2novel" else "")
    spatial = os.path.join(c["descriptions"], f"{c['num_descriptions']}_s_description_{tag}.json")
    assert spatial.endswith(log["DATA.DES_SPATIAL"])
    assert c["alpha"] == (1.0 if log["TRAIN.Cons_LOSS"] == "True" else 0.0)
    assert c["seed"] == int(log["SEED"])
    assert (c["epochs"], c["warmup_epochs"]) == (int(log["TRAIN.EPOCHS"]), int(log["TRAIN.WARMUP_EPOCHS"]))
    assert (c["lr"], c["weight_decay"]) == (float(log["TRAIN.LR"]), float(log["TRAIN.WEIGHT_DECAY"]))
    assert c["batch_size"] == int(log["TRAIN.BATCH_SIZE"]) * GPUS
    assert c["frames"] == int(log["DATA.NUM_FRAMES"])
    assert (c["clips"], c["crops"]) == (int(log["TEST.NUM_CLIP"]), int(log["TEST.NUM_CROP"]))
    assert c["train_list"].endswith(published(log["DATA.TRAIN_FILE"]))
    assert c["test_list"].endswith(published(log["DATA.VAL_FILE"]))
    assert c["labels_csv"].endswith(log["DATA.LABEL_LIST"])
    assert c["precision"] == {"O0": "fp32"}[log["TRAIN.OPT_LEVEL"]]
    if "eval_logged" in entry:  # the novel classes' test, from the run's evaluation log
        ev = entry["eval_logged"]
        assert c["novel_list"].endswith(published(ev["DATA.VAL_FILE"]))
        assert c["novel_labels_csv"].endswith(ev["DATA.LABEL_LIST"])
        assert (c["clips"], c["crops"]) == (int(ev["TEST.NUM_CLIP"]), int(ev["TEST.NUM_CROP"]))
    assert c["recipe"] == "paper" and c["output"].endswith("-recipe-paper")


def test_every_logged_run_is_in_the_fixture():
    runs = {(e["run"]["protocol"], e["run"]["dataset"], e["run"].get("shots"), e["run"]["split"]) for e in RUNS}
    assert len(runs) == 24  # few-shot: 3 datasets x K 2/4/8/16; base2novel: 4 datasets x 3 draws


def test_typed_flags_win_and_are_named(capsys):
    c = printed(capsys, ["--recipe", "paper", "--dataset", "hmdb51", "--shots", "4", "--lr", "0.01", "--rank", "64"])
    assert (c["lr"], c["rank"], c["seed"], c["clip"]) == (0.01, 64, 2048, "ViCLIP-B/16")
    assert os.path.basename(c["output"]) == ("hmdb51-lists-few-shot-4shot-ViCLIP-B-16-conv-r64-b8-12-split1-seed2048-"
                                             "lr0.01-recipe-paper")


def test_without_a_recipe_the_defaults_stay(capsys):
    c = printed(capsys, ["--dataset", "ucf101", "--shots", "2"])
    assert (c["clip"], c["temporal"], c["seed"], c["recipe"]) == ("ViT-B/16", "attn", 0, None)


@pytest.mark.parametrize("argv", [["--dataset", "ucf101", "--shots", "3"], ["--dataset", "k400", "--shots", "2"],
                                  ["--dataset", "hmdb51", "--shots", "2", "--split", "2"]])
def test_runs_the_authors_did_not_log_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as e:
        train.run(["--recipe", "paper", "--print-config"] + argv)
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_missing_inputs_name_the_two_commands(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(train.recipe, "HERE", str(tmp_path))  # a checkout without the two clones
    with pytest.raises(SystemExit) as e:
        train.run(["--recipe", "paper", "--dataset", "ucf101", "--shots", "2", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "git clone https://github.com/muzairkhattak/ViFi-CLIP" in err
    assert "git clone https://github.com/chenhaoxing/ETL4Video" in err
    assert os.listdir(tmp_path) == []


def test_run_folders_in_docs_are_the_names_train_py_makes(capsys):
    with open(os.path.join(ROOT, "docs", "reproducing.md")) as f:
        doc = f.read()
    made = {printed(capsys, command(e["run"]))["output"] for e in RUNS}
    made.add(printed(capsys, ["--clip", "ViCLIP-B/16", "--temporal", "conv", "--dataset", "k400", "--protocol",
                              "zero-shot"])["output"])
    named = set()
    for name in re.findall(r"runs/[^\s`]+", doc):
        if "<" in name:  # a pattern written for the reader, e.g. runs/<dataset>-...
            continue
        for d in ("k400", "hmdb51", "ucf101", "ssv2"):
            for s in ("1", "2", "3"):
                named.add(name.replace("$d", d).replace("{1,2,3}", s))
    assert named and named <= made


def test_results_json_records_the_recipe(capsys):
    from harness import runs
    args = train.parse_args(["--recipe", "paper", "--dataset", "ssv2", "--shots", "8", "--print-config"])
    record = runs.result_record(dict(views="2x3", rows=[], summary=dict(top1=1.0)), args.dataset, args.protocol,
                                args.shots, args.split, args.seed, args.epochs, args.recipe)
    assert record["recipe"] == "paper" and json.loads(json.dumps(record))["recipe"] == "paper"


# ------------------------------------------------ the settings the logs' pipeline adds, checked against every log
@pytest.mark.parametrize("entry", RUNS, ids=[e["log"] for e in RUNS])
def test_text_augmentation_and_steps_equal_the_log(capsys, entry):
    c, log = printed(capsys, command(entry["run"])), entry["logged"]
    # MMA's text side reads "<CTX_INIT> <class>." (Multi-Modal-Adapter trainers/mmadapter.py), with the label
    # CSV's names as written (ViFi-CLIP's VideoDataset.classes reads labels/*.csv unchanged).
    assert c["prompt"] == log["TRAINER.MMADAPTER.CTX_INIT"] + " {class}." and c["class_text"] == "as-written"
    # ViFi-CLIP's training pipeline (datasets/build.py): Flip(flip_ratio=0.5) for every dataset, ColorJitter with
    # p AUG.COLOR_JITTER drawn frame by frame and GrayScale with p AUG.GRAY_SCALE (datasets/pipeline.py).
    assert c["flip"] == "on" and c["jitter"] == "frame"
    photometric = transforms.Photometric(per_frame=c["jitter"] == "frame")
    assert (photometric.p_jitter, photometric.p_gray) == (float(log["AUG.COLOR_JITTER"]), float(log["AUG.GRAY_SCALE"]))
    # No label smoothing, mixup or cutmix in the logged runs, and none here (losses.classification_loss is plain
    # cross-entropy, tests/test_losses.py).
    assert all(float(log[k]) == 0 for k in ("AUG.LABEL_SMOOTH", "AUG.MIXUP", "AUG.CUTMIX"))
    # Steps per epoch: the sampler on the published list's videos, on 1 process and on the authors' 8.
    for world in (1, GPUS):
        sampler = batches.GlobalBatches(entry["train_videos"], c["batch_size"], c["seed"], 0, world,
                                        c["epoch_padding"])
        assert len(sampler) == len(list(sampler)) == int(log["steps_per_epoch"])
    assert log["TRAIN.clip_ratio"] == "0.07"  # logged in every run: what it does, docs/reproducing.md


def test_only_ssv2_two_shot_needs_the_padding():
    """Without the padding (n // 32 steps) only the SSv2 2-shot run would differ from its log (10 for 11)."""
    differ = [e["log"] for e in RUNS if len(batches.GlobalBatches(e["train_videos"], 32, 0))
              != int(e["logged"]["steps_per_epoch"])]
    assert differ == ["few-shot/ssv2/2.txt"]


def test_logged_numbers_are_beside_the_recipe():
    """protocols.json holds the authors' logged top-1 of every run the fixture names, found by recipe.py."""
    for e in RUNS:
        r = e["run"]
        row = recipe.logged_numbers("paper", r["protocol"], r["dataset"], r.get("shots"), r["split"])
        assert row["log"] == e["log"] and row["best"] >= row["last"] > 0
        assert ("novel" in row) == (r["protocol"] == "base2novel")
    assert recipe.logged_numbers("paper", "few-shot", "ssv2", 2, 1)["last"] == 7.549
    assert recipe.logged_numbers("paper", "few-shot", "ssv2", 3, 1) is None


# ------------------------------------------------------- the settings as behaviour, on made-up trees and lists
def paper_inputs(tmp_path, monkeypatch, run, names, lines, test_lines=None):
    """A made-up checkout with the two clones the recipe reads (under tmp_path/paper): the run's training list
    (`lines`, '<path> <label>'), its test list and label CSV (`names`), and the authors' description files.
    Returns the recipe's argv with the data root."""
    monkeypatch.setattr(recipe, "HERE", str(tmp_path))
    argv = command(run) + ["--data-root", str(tmp_path / "data")]
    c = json.loads(subprocess_free_config(argv))
    files = {c["train_list"]: "\n".join(lines), c["test_list"]: "\n".join(test_lines or ["t.avi 0"]),
             c["labels_csv"]: "id,name\n" + "\n".join(f'{i},"{n}"' for i, n in enumerate(names))}
    tag = prompts.AUTHORS_TAGS[c["dataset"]]
    for kind in "st":
        table = {str(i): [f"{kind} sentence {j} of {n}." for j in range(8)] for i, n in enumerate(names)}
        files[os.path.join(c["descriptions"], f"{c['num_descriptions']}_{kind}_description_{tag}.json")] = \
            json.dumps(table)
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
    return argv, c


def subprocess_free_config(argv):
    """--print-config's JSON, without touching stdout capture."""
    return settings.config(train.parse_args(argv + ["--print-config"]))


def training_set(args, resolution=32):
    """The training set train.main builds from these arguments (at random-tiny's resolution, CLIP's mean and std)."""
    reader, lists = settings.data_source(args)
    return train.training_set(args.dataset, reader, args.data_root, lists, args.protocol, args.split, args.shots,
                              args.seed, args.frames, resolution, transforms.CLIP_MEAN, transforms.CLIP_STD,
                              args.flip, args.jitter, args.class_text)


def gradient_video(path, n=12, w=64, h=48):
    """A video whose brightness rises from left to right in every frame: a mirrored clip falls instead. Also
    written as t.avi beside it, the made-up test list's video."""
    import av
    import numpy as np
    img = np.repeat(np.repeat(np.linspace(0, 255, w, dtype=np.uint8)[None, :, None], h, 0), 3, 2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for _ in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    shutil.copyfile(path, os.path.join(os.path.dirname(path), "t.avi"))
    return path


def test_ucf101_prompt_under_the_recipe_and_by_default(tmp_path, monkeypatch):
    """The text the encoder reads for a UCF101 class: "a photo of a ApplyEyeMakeup." under the recipe (the
    label CSV's name as written, the logs' CTX_INIT), "a video of Apply Eye Makeup." by default."""
    gradient_video(str(tmp_path / "data" / "v.avi"))
    names = ["ApplyEyeMakeup", "YoYo"]
    argv, c = paper_inputs(tmp_path, monkeypatch, dict(protocol="few-shot", dataset="ucf101", shots=2, split=1),
                           names, [f"v.avi {i // 2}" for i in range(4)])
    for args, want in ((train.parse_args(argv), ["a photo of a ApplyEyeMakeup.", "a photo of a YoYo."]),
                       (train.parse_args(["--dataset", "ucf101", "--data-root", c["data_root"], "--train-list",
                                          c["train_list"], "--test-list", c["test_list"], "--labels-csv",
                                          c["labels_csv"]]),
                        ["a video of Apply Eye Makeup.", "a video of Yo Yo."])):
        classnames = training_set(args).classnames
        assert prompts.class_prompts(classnames, args.prompt) == want
        assert torch.equal(prompts.class_tokens(classnames, 32, args.prompt), clip.tokenize(want, 32))


def test_ssv2_clip_is_mirrored_under_the_recipe_never_by_default(tmp_path, monkeypatch):
    gradient_video(str(tmp_path / "data" / "v.avi"))
    argv, c = paper_inputs(tmp_path, monkeypatch, dict(protocol="few-shot", dataset="ssv2", shots=2, split=1),
                           [f"class {i}" for i in range(4)], [f"v.avi {i // 2}" for i in range(8)])
    default = ["--dataset", "ssv2", "--data-root", c["data_root"], "--train-list", c["train_list"],
               "--test-list", c["test_list"], "--labels-csv", c["labels_csv"]]
    mirrored = {}
    for name, args in (("recipe", train.parse_args(argv)), ("default", train.parse_args(default))):
        items = batches.SeededItems(training_set(args), args.seed)
        falls = []
        for epoch in range(12):
            (clip_, _), _ = items[(epoch, 0)]                       # uint8 (T, 3, r, r), before the photometric
            columns = clip_.float().mean((0, 1, 2))                 # (r,): brightness across the width
            falls.append(bool(columns[:8].mean() > columns[-8:].mean()))
        mirrored[name] = falls
    assert any(mirrored["recipe"]) and not all(mirrored["recipe"])  # flipped with p 0.5
    assert not any(mirrored["default"])


def test_colour_jitter_per_frame_under_the_recipe_per_clip_by_default(tmp_path, monkeypatch):
    """Two frames of one clip: a different jitter each under the recipe (ViFi-CLIP's per-frame ColorJitter), the
    same by default; grayscale and the jitter's on/off coin stay one draw per clip."""
    from torchvision import tv_tensors
    gradient_video(str(tmp_path / "data" / "v.avi"))
    argv, c = paper_inputs(tmp_path, monkeypatch, dict(protocol="few-shot", dataset="hmdb51", shots=2, split=1),
                           ["brush hair", "cartwheel"], [f"v.avi {i // 2}" for i in range(4)])
    default = ["--dataset", "hmdb51", "--data-root", c["data_root"], "--train-list", c["train_list"],
               "--test-list", c["test_list"], "--labels-csv", c["labels_csv"]]
    frame = torch.arange(3 * 32 * 32, dtype=torch.float32).remainder(251).to(torch.uint8).view(3, 32, 32)
    video = tv_tensors.Video(frame.expand(4, 3, 32, 32).clone())     # 4 identical frames (T, 3, H, W)
    for args, per_frame in ((train.parse_args(argv), True), (train.parse_args(default), False)):
        transform = training_set(args).transform
        jittered = 0
        for seed in range(6):
            batches.seed_everything(seed)
            clip_, params = transform(video)
            out = transforms.photometric(clip_[None], params[None])[0]      # (T, 3, r, r)
            same = [torch.equal(out[0], out[t]) for t in range(1, 4)]
            on = bool(params[..., 0].max() > 0)
            assert (params[..., 0] == params.reshape(-1, params.shape[-1])[0, 0]).all()  # one coin per clip
            if on and not bool(params[..., 9].max() > 0):
                jittered += 1
                assert (not any(same)) if per_frame else all(same)
            elif not on:
                assert all(same)
        assert jittered > 0


def test_ssv2_two_shot_steps_per_epoch_on_348_videos(tmp_path, monkeypatch):
    """The logged SSv2 2-shot run: 348 videos, 11 steps an epoch (8 processes' DistributedSampler padding to 352,
    batches of 4 per process with drop_last); the recipe gives 11 on 1 process and on 8, the default 10."""
    argv, c = paper_inputs(tmp_path, monkeypatch, dict(protocol="few-shot", dataset="ssv2", shots=2, split=1),
                           [f"class {i}" for i in range(174)], [f"v{i}.avi {i // 2}" for i in range(348)])
    for i in range(348):
        (tmp_path / "data" / f"v{i}.avi").parent.mkdir(exist_ok=True)
        (tmp_path / "data" / f"v{i}.avi").write_bytes(b"")  # listed, found; never decoded here
    default = ["--dataset", "ssv2", "--data-root", c["data_root"], "--train-list", c["train_list"],
               "--test-list", c["test_list"], "--labels-csv", c["labels_csv"]]
    for args, steps in ((train.parse_args(argv), 11), (train.parse_args(default), 10)):
        train_set = training_set(args)
        assert len(train_set) == 348
        for world in (1, 8):
            sampler, _ = batches.loader(train_set, args.batch_size, args.seed, 0, 0, world, pin_memory=False,
                                        padding=args.epoch_padding)
            assert len(sampler) == len(list(sampler)) == steps
            assert all(len(b) == 32 // world for b in sampler)
    # The padded epoch repeats its own first videos: every video at least once, 4 twice.
    sampler = batches.GlobalBatches(348, 32, 2048, padding=8)
    seen = [i for b in sampler for _, i in b]
    assert len(seen) == 352 and set(seen) == set(range(348)) and seen[348:] == seen[:4]


@pytest.mark.slow
def test_one_epoch_under_the_recipe_end_to_end(tmp_path, monkeypatch):
    """train.py under the recipe on a made-up UCF101 list (a tiny random ViCLIP typed over the recipe's): the text
    encoder reads the authors' prompts, the epoch has the padded number of steps, and results.json records the
    settings beside the recipe."""
    gradient_video(str(tmp_path / "data" / "v.avi"))
    names = ["ApplyEyeMakeup", "YoYo", "Archery", "BabyCrawling", "Biking"]
    argv, _ = paper_inputs(tmp_path, monkeypatch, dict(protocol="few-shot", dataset="ucf101", shots=2, split=1),
                           names, [f"v.avi {i // 2}" for i in range(10)])
    read = []
    class_tokens = prompts.class_tokens
    monkeypatch.setattr(prompts, "class_tokens", lambda names_, length, template: (
        read.append(prompts.class_prompts(names_, template)), class_tokens(names_, length, template))[1])
    out = tmp_path / "run"
    train.main(argv + ["--clip", "random-ViCLIP-tiny", "--blocks", "2-4", "--rank", "8", "--epochs", "1",
                       "--batch-size", "4", "--workers", "0", "--clips", "1", "--crops", "1", "--output", str(out)])
    assert read and all(r == [f"a photo of a {n}." for n in names] for r in read)  # training and the test
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["scheduler"]["step"] == 4  # 10 videos padded to 16, batches of 4 (10 // 4 = 2 without)
    record = json.loads((out / "results.json").read_text())
    assert (record["recipe"], record["prompt"], record["class_text"], record["flip"], record["jitter"],
            record["epoch_padding"]) == ("paper", "a photo of a {class}.", "as-written", "on", "frame", 8)
