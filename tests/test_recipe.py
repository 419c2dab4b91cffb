"""`train.py --recipe paper --print-config` against every run the authors logged (tests/fixtures/paper_logs.json,
read from their released logs), the precedence of typed flags, the refusal when the inputs are absent, and the run
folder names docs/reproducing.md gives."""
import json
import os
import re

import pytest

import prompts
import train

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
