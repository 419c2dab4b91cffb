"""evaluate.py pinned with a stub model of known logits: the multi-view sum of per-view softmaxes, top-1 and top-5
against hand-computed values, the right split's videos and frames, the protocol aggregates (zero-shot mean and
population std over splits that differ, base-to-novel HM of the seed-averaged accuracies), and a checkpoint's
adapters really loaded by `evaluate.py --checkpoint`.

The stub reads back which video and which frames it was served (conftest.py's id videos carry both in
their colours), and answers logits from a table the test writes by hand. Shape legend: B videos, V views, T frames,
C classes, E embedding.
"""
import argparse
import json

import pytest
import torch
import torch.nn.functional as F

import adapters
import clip
import data
import evaluate
import models
import prompts
from harness import runs
from harness import settings
import train
from conftest import CLASSES, TABLE, Items, Stub, run_protocol, table_answer, ucf101_id_tree
from video import synthetic

@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_multi_view_scores_top1_top5_against_hand_values(batch_size):
    labels = [row[0] for row in TABLE]
    stub = Stub(table_answer)
    result = evaluate.evaluate(stub, Items(labels, views=2), torch.device("cpu"), batch_size=batch_size)
    assert result["top1"] == pytest.approx(100 * 3 / 6)
    assert result["top5"] == pytest.approx(100 * 5 / 6)
    assert result["videos"] == 6 and result["skipped"] == 0
    # every view of every video was scored exactly once, and the class texts were encoded once
    assert sorted((vid, frames[0]) for vid, frames in stub.served) == [(i, v) for i in range(6) for v in (0, 1)]
    assert stub.text_sizes == [len(CLASSES)]


def test_single_view_items_are_scored_as_one_view():
    labels = [row[0] for row in TABLE]
    result = evaluate.evaluate(Stub(table_answer), Items(labels, views=1), torch.device("cpu"), batch_size=4)
    # view 0 alone: video 0 -> class 0 (hit); 1, 2, 3 as before; 4 and 5 hits
    assert (result["top1"], result["top5"]) == (pytest.approx(100 * 3 / 6), pytest.approx(100 * 5 / 6))


def test_probabilities_summed_over_views_not_logits_nor_a_vote():
    """Three views: two that weakly prefer class 1 (0.55 vs 0.45) and one sure of class 0. Summed probabilities
    pick 0 (1.9 vs 1.1); a majority vote of the views would pick 1."""
    answers = {0: [0.0, 0.2] + [-9.0] * 5, 1: [0.0, 0.2] + [-9.0] * 5, 2: [9.0, -30.0] + [0.0] * 5}
    stub = Stub(lambda vid, view, C: torch.tensor(answers[view]))
    result = evaluate.evaluate(stub, Items([0, 0], views=3), torch.device("cpu"), batch_size=2)
    assert result["top1"] == 100.0


# ---------------------------------------------------------------------------------------- the protocol level
@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    """(root, {vid: (class index, group)}): 7 classes x 3 groups of id videos; split s tests group s."""
    root = str(tmp_path_factory.mktemp("ucf_ids"))
    return root, ucf101_id_tree(root, CLASSES)


# The stub's rule on the id tree: right on a video of class c and group g iff c < RIGHT[g], else it answers the
# next class (then the right one). So split 1 (group 1) scores 7/7, split 2 3/7 and split 3 1/7 top-1; top-5 is
# 100 everywhere.
RIGHT = {1: 7, 2: 3, 3: 1}
SPLIT_TOP1 = {1: 100.0, 2: 300 / 7, 3: 100 / 7}


def rule(table):
    def answer(vid, frame, C):
        c, g = table[vid]
        logits = -torch.arange(C, dtype=torch.float32)  # no ties: the rest ranked by class index
        logits[c], logits[(c + 1) % C] = (5.0, 4.0) if c < RIGHT[g] else (4.0, 5.0)
        return logits
    return answer


def protocol_args(root, **kw):
    base = dict(dataset="ucf101", data_root=root, protocol="full", split=1, seed=0, shots=None, frames=4,
                precision="fp32", workers=0, eval_batch_size=3, clips=None, crops=None, epochs=0)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("split", [1, 2, 3])
def test_run_protocol_tests_the_split_asked_for_with_its_views(ids, split):
    root, table = ids
    stub = Stub(rule(table))
    out = run_protocol(stub, protocol_args(root, split=split, clips=2, crops=1), torch.device("cpu"))
    (row,) = out["rows"]
    assert (row["split"], row["videos"], row["classes"]) == (split, 7, 7)
    assert row["top1"] == pytest.approx(SPLIT_TOP1[split]) and row["top5"] == 100.0
    assert sorted({vid for vid, _ in stub.served}) == sorted(v for v, (c, g) in table.items() if g == split)
    # 24-frame videos, T = 4, two temporal views at offsets 1/4 and 3/4 of each 6-frame segment
    assert {tuple(frames) for _, frames in stub.served} == {(1, 7, 13, 19), (4, 10, 16, 22)}
    assert out["views"] == "2x1"


def test_published_list_files_are_what_is_tested(ids, tmp_path):
    """--test-list (ViFi-CLIP's '<path> <label>' lines) decides the test videos, whatever the official split."""
    root, table = ids
    (tmp_path / "labels.csv").write_text("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(CLASSES)))
    listed = [v for v, (c, g) in table.items() if g == 3]
    (tmp_path / "test.txt").write_text("".join(f"{CLASSES[table[v][0]]}/v_{CLASSES[table[v][0]]}_g03_c01.avi "
                                               f"{table[v][0]}\n" for v in listed))
    stub = Stub(rule(table))
    args = protocol_args(root, split=1, clips=1, crops=1, train_list=None, test_list=str(tmp_path / "test.txt"),
                         labels_csv=str(tmp_path / "labels.csv"))
    out = run_protocol(stub, args, torch.device("cpu"))
    assert [r["row"] for r in out["rows"]] == ["test"] and out["rows"][0]["top1"] == pytest.approx(100 / 7)
    assert sorted(vid for vid, _ in stub.served) == sorted(listed)


def test_single_clip_test_takes_segment_centres(ids):
    root, table = ids
    stub = Stub(rule(table))
    run_protocol(stub, protocol_args(root, clips=1, crops=3), torch.device("cpu"))
    assert len(stub.served) == 7 * 3 and {tuple(f) for _, f in stub.served} == {(3, 9, 15, 21)}


def test_zero_shot_mean_and_std_over_the_three_splits(ids):
    root, table = ids
    out = run_protocol(Stub(rule(table)), protocol_args(root, protocol="zero-shot", clips=1, crops=1),
                                torch.device("cpu"))
    assert [(r["split"], round(r["top1"], 3)) for r in out["rows"]] == [(1, 100.0), (2, 42.857), (3, 14.286)]
    s = out["summary"]
    assert s["top1"] == pytest.approx(52.38095238)  # (100 + 300/7 + 100/7) / 3
    assert s["top1_std"] == pytest.approx(35.63483225)  # population std of the three
    assert s["runs"] == 3


def test_base_to_novel_summary_is_hm_of_seed_means():
    rows = [dict(row="base", top1=80.0, top5=90.0), dict(row="novel", top1=20.0, top5=50.0),
            dict(row="base", top1=60.0, top5=70.0), dict(row="novel", top1=40.0, top5=60.0)]
    s = evaluate.summarize("base2novel", rows)
    # base 70, novel 30: HM 2*70*30/100 = 42 (the mean of the per-seed HMs, 32 and 48, would be 40)
    assert (s["base"], s["novel"], s["hm"], s["runs"]) == (70.0, 30.0, pytest.approx(42.0), 2)
    assert evaluate.harmonic_mean(0.0, 0.0) == 0.0
    few = evaluate.summarize("few-shot", [dict(row="split1", top1=50.0, top5=80.0),
                                          dict(row="split1", top1=70.0, top5=90.0)])
    assert (few["top1"], few["top5"], few["runs"]) == (60.0, 85.0, 2) and "top1_std" not in few


def test_base_to_novel_rows_test_each_half_against_its_own_classes():
    stub = Stub(lambda vid, view, C: torch.zeros(C), read=False)
    out = run_protocol(stub, protocol_args(None, dataset="synthetic", protocol="base2novel"),
                                torch.device("cpu"))
    assert [(r["row"], r["subset"], r["classes"], r["videos"]) for r in out["rows"]] == [
        ("base", "base", 4, 64), ("novel", "novel", 4, 64)]
    base, novel = synthetic.SYNTHETIC_CLASSES[1::2], synthetic.SYNTHETIC_CLASSES[0::2]  # odd classes are the base half
    assert len(stub.texts) == 2
    assert torch.equal(stub.texts[0], clip.tokenize([f"a video of {c}." for c in base]))
    assert torch.equal(stub.texts[1], clip.tokenize([f"a video of {c}." for c in novel]))


def fake_checkpoint(path, **args):
    """A checkpoint file in train.py's format whose adapters the stub 'loads'."""
    base = dict(dataset="ucf101", data_root=None, protocol="few-shot", split=1, seed=0, shots=2, frames=4,
                clip="random-tiny", epochs=1, output=str(path), rank=8, blocks=[1, 4], scale=0.005,
                temporal="attn")
    torch.save(dict(adapters={"adapters.0.w": torch.ones(2)}, args={**base, **args}), path)
    return str(path)


@pytest.mark.parametrize("split", [2, 3])
def test_evaluate_main_split_and_protocol_arguments(ids, tmp_path, monkeypatch, split):
    root, table = ids
    stubs = []
    monkeypatch.setattr(models, "build_msta", lambda *args, **kwargs: stubs.append(Stub(rule(table))) or stubs[-1])
    monkeypatch.setattr(adapters, "parameter_counts", lambda model: (0, 1))  # the stub has no CLIP to count
    ckpt = fake_checkpoint(tmp_path / "run.pt", data_root=root)
    evaluate.main(["--checkpoint", ckpt, "--split", str(split), "--clips", "1", "--crops", "1", "--workers", "0",
                   "--output", str(tmp_path / "one")])
    r = json.loads((tmp_path / "one" / "results.json").read_text())
    assert r["split"] == split and r["top1"] == pytest.approx(SPLIT_TOP1[split])
    assert torch.equal(stubs[0].loaded["adapters.0.w"], torch.ones(2))  # the checkpoint's adapters were loaded
    evaluate.main(["--checkpoint", ckpt, "--protocol", "zero-shot", "--clips", "1", "--crops", "1", "--workers",
                   "0", "--output", str(tmp_path / "zs")])
    zs = json.loads((tmp_path / "zs" / "results.json").read_text())
    assert zs["top1"] == pytest.approx(52.38095238) and zs["top1_std"] == pytest.approx(35.63483225)
    assert "+- 35.63" in (tmp_path / "zs" / "results.md").read_text()
    # Several checkpoints (e.g. seeds) are averaged: here two runs that test splits 1 and 3.
    other = fake_checkpoint(tmp_path / "run3.pt", data_root=root, split=3)
    evaluate.main(["--checkpoint", fake_checkpoint(tmp_path / "run1.pt", data_root=root), other, "--clips", "1",
                   "--crops", "1", "--workers", "0", "--output", str(tmp_path / "two")])
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["runs"] == 2 and two["top1"] == pytest.approx((100 + 100 / 7) / 2)


# ------------------------------------------------------------------------------ a real checkpoint, real model
@pytest.mark.slow
def test_checkpoint_adapters_are_loaded_by_evaluate_main(tmp_path, monkeypatch):
    """The model evaluate.py --checkpoint builds gives the trained model's logits (not the frozen CLIP's, nor
    freshly initialised adapters'), and the same test accuracy as the training process's own final test."""
    built = []
    original = evaluate.run_protocol

    def recording(model, *args, **kwargs):
        built.append(model)
        return original(model, *args, **kwargs)
    monkeypatch.setattr(evaluate, "run_protocol", recording)
    out = tmp_path / "run"
    trained = train.main(["--dataset", "synthetic", "--shots", "1", "--epochs", "2", "--batch-size", "4",
                          "--eval-every", "0", "--workers", "0", "--output", str(out)])
    evaluate.main(["--checkpoint", str(out), "--workers", "0", "--output", str(tmp_path / "eval")])
    assert len(built) == 2
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["top1"] == pytest.approx(trained["summary"]["top1"])
    assert again["rows"][0]["videos"] == trained["rows"][0]["videos"] == 128
    videos = torch.randn(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (B, T, 3, H, W)
    tokens = prompts.class_tokens(synthetic.SYNTHETIC_CLASSES)
    with torch.no_grad():
        ours, theirs = (m(videos, tokens) for m in built)
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
        frozen = evaluate.FrozenCLIP(built[1].clip)
        a = train.parse_args(["--dataset", "synthetic", "--shots", "1"])
        fresh = models.build_msta(a.clip, torch.device("cpu"), a.frames, a.rank, a.blocks, a.scale, a.temporal,
                                  a.seed)(videos, tokens)
        for other in (frozen.logits(frozen.encode_video(videos), frozen.encode_text(tokens)), fresh):
            assert (other - ours).abs().max() > 1e-2


def test_frozen_clip_baseline_is_frame_mean_cosine_times_temperature():
    """--zero-shot-clip: the mean over frames of CLIP's image features, cosine with the class texts, times
    exp(logit_scale) (1 / 0.07 in a freshly built CLIP, CLIP paper sec. 2.5)."""
    model = clip.build_random("random-tiny")
    frozen = evaluate.FrozenCLIP(model)
    videos = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (B, T, 3, H, W)
    tokens = prompts.class_tokens(["yo yo", "kick ball", "sword"])
    with torch.no_grad():
        frames = [model.encode_image(v) for v in videos]  # B x (T, E), one video at a time
        v = F.normalize(torch.stack([f.mean(0) for f in frames]), dim=-1)
        w = F.normalize(model.encode_text(tokens), dim=-1)
        expected = v @ w.T / 0.07
        got = frozen.logits(frozen.encode_video(videos), frozen.encode_text(tokens))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
