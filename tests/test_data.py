"""Tests for data.py and video/decode.py: exact sparse decoding, official layouts, protocol splits, broken videos, and
the synthetic motion set. Every video is written here with PyAV; nothing is downloaded. The published ViFi-CLIP class
lists and split files are checked through their counts and digests in tests/fixtures/published_splits.json."""
import hashlib
import json
import logging
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.io import decode_jpeg, encode_jpeg, write_file
from torchvision.transforms import v2

import data
from video import transforms
from video import decode
from conftest import (full_decode, hmdb51_tree, kinetics_tree, place, read_ids, ssv2_tree,
                                  ucf101_id_tree, ucf101_tree, write_video)
from video import layouts
from video import synthetic

RES = 32  # model resolution for the dataset tests: small to stay fast; never 224 by default here

# name -> write_video arguments: B-frames, GOPs, open GOPs, variable frame rate, four containers.
CODECS = {
    "h264_bframes.mp4": dict(codec="libx264", options={"g": "12", "bf": "3", "b-pyramid": "normal"}),
    "h264_opengop.mkv": dict(codec="libx264", options={"g": "10", "bf": "3", "x264-params": "open-gop=1"}),
    "h264_vfr.mp4": dict(codec="libx264", options={"g": "9", "bf": "2"}, vfr=True),
    "mpeg4_bframes.mp4": dict(codec="mpeg4", bframes=2, gop=10),
    "mpeg4_bframes.avi": dict(codec="mpeg4", bframes=2, gop=10),
    "mpeg4.avi": dict(codec="mpeg4", bframes=0, gop=12),
    "mjpeg.avi": dict(codec="mjpeg", pix_fmt="yuvj420p"),
    "vp9.webm": dict(codec="libvpx-vp9", options={"g": "15"}, fps=12),
    "h264_bframes.avi": dict(codec="libx264", options={"g": "12", "bf": "2"}),  # AVI cannot carry B-frame pts
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    top = tmp_path_factory.mktemp("codecs")
    return {name: write_video(str(top / name), n=45, **kw) for name, kw in CODECS.items()}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """One small AVI that the miniature dataset trees copy everywhere."""
    return write_video(str(tmp_path_factory.mktemp("clip") / "clip.avi"), codec="mpeg4", n=24, gop=6, bframes=2)


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", list(CODECS))
def test_frames_equal_full_decode(videos, name, monkeypatch):
    path = videos[name]
    reference = full_decode(path)
    n = len(reference)
    assert decode.video_length(path) == n
    with decode.Video(path) as v:
        assert v.length == n
    # All but H.264-in-AVI (decode-order timestamps) must be served by seeking, never by counting from the start.
    if name != "h264_bframes.avi":
        monkeypatch.setattr(decode.Video, "_read_counting", lambda *a: pytest.fail("fell back to counting"))
    rng = random.Random(name)
    cases = [list(range(n)), [n - 1, 0, n - 1, 0], [n // 2] * 3] + [
        [rng.randrange(n) for _ in range(rng.randint(1, 9))] for _ in range(25)]
    for indices in cases:
        got = decode.read_frames(path, indices)
        assert got.dtype == torch.uint8 and got.shape == (len(indices), 48, 64, 3)
        assert np.array_equal(got.numpy(), np.stack([reference[i] for i in indices])), (name, indices)


def test_out_of_range_and_bad_files(videos, tmp_path):
    path = videos["h264_bframes.mp4"]
    with pytest.raises(decode.VideoError):
        decode.read_frames(path, [45])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"  # moov atom at the end: cut in half, nothing can be read
    truncated.write_bytes(Path(path).read_bytes()[: os.path.getsize(path) // 2])
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(bytes(range(256)) * 20)
    for bad in (empty, truncated, garbage, tmp_path / "absent.mp4"):
        with pytest.raises(decode.VideoError):
            decode.read_frames(str(bad), [0])


def test_sparse_decoding_reads_far_fewer_frames(tmp_path):
    """8 test-time frames of a 300-frame clip (x264, keyframe every 30) against a full decode."""
    path = write_video(str(tmp_path / "long.mp4"), n=300, w=160, h=120, fps=30,
                       options={"g": "30", "bf": "3", "b-pyramid": "normal"})
    indices = decode.sample_indices(300, 8, train=False)
    decode.decoded_frames = 0
    sparse = decode.read_frames(path, indices)
    decoded = decode.decoded_frames
    reference = full_decode(path)
    assert np.array_equal(sparse.numpy(), np.stack([reference[i] for i in indices]))
    # Pictures decoded, not seconds: timing belongs in benchmark.py, and a shared CI machine's clock is noise.
    assert decoded <= 300 // 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29 flags its JPEG codec, still used
def test_frame_folder(tmp_path):
    folder = tmp_path / "v_Clip_g01_c01"
    folder.mkdir()
    images = [torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8) for _ in range(12)]
    for i, img in enumerate(images, 1):
        write_file(str(folder / f"img_{i:05d}.jpg"), encode_jpeg(img, quality=95))
    assert decode.video_length(str(folder)) == 12
    got = decode.read_frames(str(folder), [11, 0, 0, 5])
    expected = [decode_jpeg(encode_jpeg(images[i], quality=95)).permute(1, 2, 0) for i in (11, 0, 0, 5)]
    assert torch.equal(got, torch.stack(expected))


# ---------------------------------------------------------------- sampling and transforms


def test_sample_indices():
    assert decode.sample_indices(80, 8, train=False) == [5, 15, 25, 35, 45, 55, 65, 75]  # segment centres
    assert decode.sample_indices(80, 8, train=False, offset=0.0) == list(range(0, 80, 10))
    assert decode.sample_indices(3, 8, train=False) == [0, 0, 0, 1, 1, 2, 2, 2]  # short videos repeat frames
    for _ in range(50):
        idx = decode.sample_indices(80, 8, train=True)
        assert all(10 * k <= i < 10 * (k + 1) for k, i in enumerate(idx))  # one frame per segment
    assert len({tuple(decode.sample_indices(80, 8, train=True)) for _ in range(20)}) > 1
    with pytest.raises(ValueError):
        decode.sample_indices(0, 8, train=True)


def test_transforms_share_one_draw_per_clip():
    clip = torch.randint(0, 256, (1, 3, 60, 80), dtype=torch.uint8).repeat(8, 1, 1, 1)  # 8 identical frames
    for seed in range(5):
        torch.manual_seed(seed)
        out = transforms.train_transform(48)(tv_tensors.Video(clip))
        assert out.shape == (8, 3, 48, 48) and out.dtype == torch.float32
        assert torch.allclose(out, out[:1].expand_as(out))  # same crop, flip, jitter for every frame
    assert transforms.TestTransform(40)(tv_tensors.Video(clip)).shape == (8, 3, 40, 40)
    three = transforms.TestTransform(40, crops=3)(tv_tensors.Video(clip))
    assert three.shape == (3, 8, 3, 40, 40) and not torch.equal(three[0], three[2])
    steps = transforms.train_transform(48, flip=False).transforms
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in steps)


def test_test_transform_single_crop_resizes_to_256_over_224_then_centre_crops():
    """ViFi-CLIP's single-view test: short side int(256/224 x r), centre r x r crop; three crops: short side r."""
    clip = torch.randint(0, 256, (2, 3, 60, 80), dtype=torch.uint8)  # (T, 3, H, W)
    mean, std = torch.tensor(transforms.CLIP_MEAN)[:, None, None], torch.tensor(transforms.CLIP_STD)[:, None, None]
    normalise = lambda x: (x.float() / 255 - mean) / std  # noqa: E731
    F = v2.functional
    one = transforms.TestTransform(40)(tv_tensors.Video(clip))
    expected = normalise(F.center_crop(F.resize(clip, [45, 60]), [40, 40]))  # int(256 / 224 * 40) = 45
    torch.testing.assert_close(one, expected, atol=1e-5, rtol=0)
    three = transforms.TestTransform(40, crops=3)(tv_tensors.Video(clip))
    small = normalise(F.resize(clip, [40, 53]))  # short side 40: 60 x 80 -> 40 x 53
    torch.testing.assert_close(three, torch.stack([small[..., s:s + 40] for s in (0, 6, 13)]), atol=1e-5, rtol=0)


def test_colour_jitter_is_a_colour_change():
    gray = torch.rand(4, 1, 16, 16).expand(4, 3, 16, 16)
    assert torch.allclose(transforms.ColorJitter(0, 0, 0, 0.5)(gray), gray, atol=1e-5)  # hue leaves gray alone
    clip = torch.rand(4, 3, 16, 16)
    assert torch.allclose(transforms.ColorJitter(0, 0, 0, 0)(clip), clip, atol=1e-5)
    torch.manual_seed(1)  # brightness alone: every pixel times one factor b ~ U(0.6, 1.4) drawn first, then clamped
    b = float(torch.empty(()).uniform_(0.6, 1.4))
    torch.manual_seed(1)
    torch.testing.assert_close(transforms.ColorJitter(0.4, 0, 0, 0)(clip), (clip * b).clamp(0, 1), atol=1e-5, rtol=0)
    assert abs(b - 1) > 0.05  # the seed draws a real change


def test_train_transform_grays_a_fifth_of_the_clips_whole():
    """ViFi-CLIP grays 20% of training clips: 200 strongly coloured clips through train_transform(32) give about
    40 gray ones (binomial sd 5.7), each gray in every frame."""
    mean, std = torch.tensor(transforms.CLIP_MEAN)[:, None, None], torch.tensor(transforms.CLIP_STD)[:, None, None]
    gray = 0
    for i in range(200):
        torch.manual_seed(i)
        clip = torch.zeros(3, 3, 24, 32, dtype=torch.uint8)  # (T, 3, H, W): saturated red, green, blue frames
        clip[0, 0], clip[1, 1], clip[2, 2] = 230, 230, 230
        out = transforms.train_transform(32)(tv_tensors.Video(clip)) * std + mean  # back to [0, 1] pixels
        flat = (out.amax(1) - out.amin(1)).flatten(1).amax(1) < 1e-3  # (T,): R = G = B everywhere in the frame
        assert flat.all() or not flat.any(), i  # one draw per clip: all frames gray, or none
        gray += int(flat.all())
    # The seeds fix the draws: 39 of 200 (counted once with this code at tag `layout`; p = 0.2 gives 40 +- 5.7, so a
    # wrong probability, or a draw per frame, moves it).
    assert gray == 39


# ---------------------------------------------------------------- official layouts and protocols


@pytest.fixture(scope="module")
def ucf(tmp_path_factory, clip):
    root = tmp_path_factory.mktemp("ucf101")
    train, test = ucf101_tree(str(root), clip)
    return str(root), train, test


def test_ucf101_layout_and_full_protocol(ucf):
    root, train, test = ucf
    assert layouts.class_names("ucf101", root) == ["Apply Eye Makeup", "Handstand Pushups", "Yo Yo"]
    full_train = data.build_dataset("ucf101", root, "full", 1, train=True, resolution=RES)
    full_test = data.build_dataset("ucf101", root, "full", 1, train=False, resolution=RES)
    assert (len(full_train), len(full_test)) == (len(train), len(test)) == (36, 12)
    assert full_train.skipped == full_test.skipped == 0  # HandstandPushups found in HandStandPushups/
    assert sorted(label for _, label in full_test.items) == sorted(lab - 1 for _, lab in test)
    x, y = full_train[0]
    assert x.shape == (8, 3, RES, RES) and x.dtype == torch.float32 and y == 0
    multi = data.build_dataset("ucf101", root, "full", 1, train=False, resolution=RES, views=(2, 3))
    assert multi[0][0].shape == (6, 8, 3, RES, RES)


def test_few_shot_draws(ucf):
    root, _, test = ucf
    draw = lambda seed, shots=3: data.build_dataset("ucf101", root, "few-shot", 1, shots=shots, seed=seed,  # noqa
                                                    resolution=RES)
    a, b, c = draw(0), draw(0), draw(1)
    assert a.items == b.items != c.items  # deterministic per seed
    counts = np.bincount([label for _, label in a.items])
    assert counts.tolist() == [3, 3, 3]
    test_names = {os.path.basename(p) for p, _ in test}
    assert not test_names & {os.path.basename(p) for p, _ in a.items + c.items}  # never from the test list
    for shots in (0, -1, 13):  # 13 > the 12 training videos per class
        with pytest.raises(layouts.DatasetError, match="shots"):
            draw(0, shots)
    few_test = data.build_dataset("ucf101", root, "few-shot", 1, shots=3, train=False, resolution=RES)
    assert len(few_test) == 12


@pytest.fixture(scope="module")
def ucf_ids(tmp_path_factory):
    """A UCF101 tree of id videos (conftest.py): 7 classes x 3 groups, split s tests group s."""
    root = str(tmp_path_factory.mktemp("ucf_ids"))
    return root, ucf101_id_tree(root, ["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "Eta"])


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_splits_serve_their_own_videos_labels_and_frames(ucf_ids, split):
    root, table = ucf_ids
    test = data.build_dataset("ucf101", root, "full", split, train=False, resolution=16, num_frames=4)
    served = [(read_ids(x), y) for x, y in (test[i] for i in range(len(test)))]
    # every test video of this split once, with its class's label; 24 frames, T = 4: the segment centres
    assert sorted(vid for (vid, _), _ in served) == sorted(v for v, (c, g) in table.items() if g == split)
    assert all(table[vid] == (y, split) and frames == [3, 9, 15, 21] for (vid, frames), y in served)
    train = data.build_dataset("ucf101", root, "full", split, train=True, resolution=16, num_frames=4)
    groups = {int(os.path.basename(p).split("_g")[1][:2]) for p, _ in train.items}
    assert len(train) == 14 and groups == {1, 2, 3} - {split}
    assert all(train.classnames[y].replace(" ", "") in os.path.basename(p) for p, y in train.items)
    few = [data.build_dataset("ucf101", root, "few-shot", split, shots=1, seed=s, resolution=16).items
           for s in range(4)]
    assert all(sorted(y for _, y in f) == list(range(7)) for f in few)  # one shot per class, right labels
    drawn = {p for f in few for p, _ in f}
    assert drawn <= {p for p, _ in train.items} and len(drawn) > 7  # training videos only; seeds draw differently


def test_few_shot_never_draws_a_listed_test_video(ucf_ids, tmp_path):
    """With list files that overlap (a train list holding every video), the shots still avoid the test list."""
    root, table = ucf_ids
    names = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "Eta"]
    (tmp_path / "labels.csv").write_text("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(names)))
    line = lambda v: f"{names[table[v][0]]}/v_{names[table[v][0]]}_g{table[v][1]:02d}_c01.avi {table[v][0]}\n"  # noqa
    (tmp_path / "train.txt").write_text("".join(line(v) for v in table))
    (tmp_path / "test.txt").write_text("".join(line(v) for v in table if table[v][1] == 1))
    for seed in range(3):
        few = data.build_dataset("list", root, "few-shot", 1, shots=2, seed=seed, resolution=16,
                                 train_list=str(tmp_path / "train.txt"), test_list=str(tmp_path / "test.txt"),
                                 labels_csv=str(tmp_path / "labels.csv"))
        assert sorted(y for _, y in few.items) == sorted(list(range(7)) * 2)
        assert all("_g01_" not in os.path.basename(p) for p, _ in few.items), seed


def test_missing_or_malformed_root_fails_with_one_clear_message(tmp_path, ucf):
    for name, where in (("ucf101", "crcv.ucf.edu"), ("hmdb51", "serre-lab"), ("kinetics400", "cvdfoundation"),
                        ("ssv2", "something-something")):
        with pytest.raises(layouts.DatasetError) as e:
            data.build_dataset(name, str(tmp_path / "nowhere"), "full", 1)
        assert where in str(e.value) and "Expected" in str(e.value) and "\n" not in str(e.value)
    os.makedirs(tmp_path / "ucf_no_lists" / "UCF-101")
    with pytest.raises(layouts.DatasetError, match="ucfTrainTestlist"):
        data.build_dataset("ucf101", str(tmp_path / "ucf_no_lists"), "full", 1)
    with pytest.raises(layouts.DatasetError):
        data.build_dataset("ucf101", ucf[0], "full", 4)  # no split 4
    with pytest.raises(layouts.DatasetError):
        data.build_dataset("ucf101", ucf[0], "sideways", 1)
    assert issubclass(layouts.DatasetError, ValueError)


def test_hmdb51_layout_and_zero_shot_splits(tmp_path, clip):
    classes = ["sword", "kick", "brush_hair", "kick_ball", "sword_exercise"]
    tags = hmdb51_tree(str(tmp_path), clip, classes, per_class=(4, 2, 1))
    # The published order (hmdb_51_labels.csv, which the authors' description files index), not sorted names:
    # "kick ball" before "kick", "sword exercise" before "sword".
    assert layouts.class_names("hmdb51", str(tmp_path)) == ["brush hair", "kick ball", "kick", "sword exercise",
                                                         "sword"]
    for split in (1, 2, 3):
        train = data.build_dataset("hmdb51", str(tmp_path), "full", split, train=True, resolution=RES)
        test = data.build_dataset("hmdb51", str(tmp_path), "zero-shot", split, train=False, resolution=RES)
        assert (len(train), len(test)) == (20, 10)  # tag 0 (unused) videos are in neither
        assert not {p for p, _ in train.items} & {p for p, _ in test.items}
        # exactly the videos this split's files tag 1 (train) and 2 (test); the splits' test sets differ
        assert {os.path.basename(p) for p, _ in train.items} == {v for v, t in tags[split].items() if t == "1"}
        assert {os.path.basename(p) for p, _ in test.items} == {v for v, t in tags[split].items() if t == "2"}
        for p, label in test.items:  # the label is the class whose split file lists the video
            assert os.path.basename(os.path.dirname(p)).replace("_", " ") == test.classnames[label]


def test_kinetics_layouts(tmp_path, clip):
    k400 = layouts.class_names("kinetics400")
    assert len(k400) == 400 and k400 == sorted(k400) and "petting animal (not cat)" in k400
    # Folder names with underscores, and without parentheses, as some downloaders write them.
    root = tmp_path / "k400"
    kinetics_tree(str(root), clip, [("train", "abseiling", "aaa"), ("train", "petting_animal_not_cat", "bbb"),
                                    ("train", "air drumming", "ccc"), ("val", "abseiling", "ddd")])
    train = data.build_dataset("k400", str(root), "zero-shot", 1, train=True, resolution=RES)
    assert train.classnames == k400
    assert sorted(k400[label] for _, label in train.items) == ["abseiling", "air drumming",
                                                              "petting animal (not cat)"]
    # With the official CSVs: labels come from them, and videos missing from the download are counted.
    kinetics_tree(str(root), clip, [], {"train": [("abseiling", "aaa"), ("petting animal (not cat)", "bbb"),
                                                  ("air drumming", "ccc"), ("air drumming", "gone1"),
                                                  ("abseiling", "gone2")]})
    with_csv = data.build_dataset("kinetics400", str(root), "full", 1, train=True, resolution=RES)
    assert len(with_csv) == 3 and with_csv.skipped == 2
    assert with_csv[1][0].shape == (8, 3, RES, RES)


def test_kinetics600_zero_shot_split(tmp_path, clip):
    """The published test sets (14,084 / 13,978 / 14,136 videos), found in a download laid out flat, in class
    folders, or under the list's own part; an unlisted video of a zero-shot class is not served, and what the
    download lacks is counted as missing."""
    from video import kinetics600
    lists = kinetics600.published()
    assert [len(lists[s]) for s in (1, 2, 3)] == [14084, 13978, 14136]
    facts = layouts.protocol_facts()["kinetics600"]["zero_shot"]
    assert all(0 <= label < 160 == len(facts[s - 1]) for s in (1, 2, 3) for _, label in lists[s])
    picked = [lists[1][0], lists[1][5000], lists[1][-1]]  # from train/, and wherever the others lie
    for n, (stem, label) in enumerate(picked):
        part, name = stem.split("/")
        where = [os.path.join(part, name), os.path.join(part, facts[0][label], name),
                 os.path.join("val" if part != "val" else "test", name)][n]  # the last one moved to another part
        place(clip, os.path.join(str(tmp_path), where + ".mp4"))
    place(clip, os.path.join(str(tmp_path), "val", facts[0][0], "notlisted_000001_000011.mp4"))
    test = data.build_dataset("k600", str(tmp_path), "zero-shot", 1, train=False, resolution=RES)
    assert test.classnames == facts[0] and len(test.classnames) == 160
    assert sorted((os.path.basename(p)[:-4], label) for p, label in test.items) == sorted(
        (stem.split("/")[1], label) for stem, label in picked)
    assert test.skipped == 14084 - 3
    test2 = data.build_dataset("k600", str(tmp_path), "zero-shot", 2, train=False, resolution=RES)
    assert test2.classnames == facts[1] != facts[0] and test2.skipped == 13978 - len(test2)
    # The original list file (evaluate.py --test-list) resolves the same videos in the same tree.
    (tmp_path / "ZS_split1_K600_eval.txt").write_text("".join(f"{stem}.mp4 {label}\n" for stem, label in lists[1]))
    (tmp_path / "ZS_split1_K600.csv").write_text("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(facts[0])))
    listed = data.build_dataset("list", str(tmp_path), "full", 1, train=False, resolution=RES,
                                test_list=str(tmp_path / "ZS_split1_K600_eval.txt"),
                                labels_csv=str(tmp_path / "ZS_split1_K600.csv"))
    assert sorted(listed.items) == sorted(test.items) and listed.skipped == 14084 - 3


def test_ssv2_templates(tmp_path, videos):
    templates = ["Approaching [something] with your camera", "Moving [something] from left to right",
                 "Pushing [something] so that it slightly moves"]
    ssv2_tree(str(tmp_path), videos["vp9.webm"], templates, train=[(1, 0), (2, 1), (3, 2), (4, 2)],
              validation=[(5, 1), (6, 0)])
    names = ["Approaching something with your camera", "Moving something from left to right",
             "Pushing something so that it slightly moves"]
    assert layouts.class_names("ssv2", str(tmp_path)) == names
    train = data.build_dataset("ssv2", str(tmp_path), "full", 1, train=True, resolution=RES)
    val = data.build_dataset("ssv2", str(tmp_path), "full", 1, train=False, resolution=RES)
    assert [label for _, label in train.items] == [0, 1, 2, 2] and [label for _, label in val.items] == [1, 0]
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in train.transform.transforms)  # left/right matters
    assert train[0][0].shape == (8, 3, RES, RES)


def test_vifi_clip_lists(ucf, tmp_path):
    """ViFi-CLIP's flat lists ('<file name> <label>') resolve inside the official UCF tree."""
    root, train, test = ucf
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,ApplyEyeMakeup\n1,HandstandPushups\n2,YoYo\n")
    listing = tmp_path / "val.txt"
    listing.write_text("".join(f"{os.path.basename(p)} {lab - 1}\n" for p, lab in test))
    ds = data.build_dataset("list", root, "full", train=False, resolution=RES, test_list=str(listing),
                            labels_csv=str(labels))
    assert ds.classnames == ["Apply Eye Makeup", "Handstand Pushups", "Yo Yo"]
    assert layouts.class_names("list", root, labels_csv=str(labels)) == ds.classnames
    assert len(ds) == 12 and ds.skipped == 0 and ds[5][0].shape == (8, 3, RES, RES)
    assert sorted(label for _, label in ds.items) == sorted(lab - 1 for _, lab in test)


# ---------------------------------------------------------------- broken videos


@pytest.mark.parametrize("workers", [0, 2])
def test_broken_videos_are_skipped_and_counted(tmp_path, clip, videos, workers, caplog):
    good = [str(tmp_path / f"good{i}.avi") for i in range(6)]
    for p in good:
        place(clip, p)
    empty, truncated = tmp_path / "empty.avi", tmp_path / "truncated.mp4"
    empty.write_bytes(b"")
    src = videos["h264_bframes.mp4"]
    truncated.write_bytes(Path(src).read_bytes()[: os.path.getsize(src) // 2])
    items = [(good[0], 0), (str(empty), 0), (good[1], 0), (good[2], 1), (str(truncated), 1), (good[3], 1),
             (good[4], 0), (good[5], 1)]
    ds = data.VideoDataset("test", items, ["a", "b"], num_frames=4, train=True, resolution=RES)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, shuffle=True)
    with caplog.at_level(logging.WARNING, logger="data"):
        for epoch in range(2):
            labels = []
            for x, y in loader:
                assert x.shape[1:] == (4, 3, RES, RES)
                labels += y.tolist()
            assert sorted(labels) == sorted(label for _, label in items)  # stand-ins keep their class
            assert ds.skipped == 2  # distinct broken videos, counted once across workers and epochs
    if workers == 0:
        assert len([r for r in caplog.records if "cannot be decoded" in r.message]) == 2  # logged once each


def test_container_overcounting_frames_resamples(monkeypatch):
    """A container that claims 10 frames of which 6 decode: the item is sampled again from the 6."""
    class Short:
        length = 10

        def read(self, indices):
            if max(indices) >= 6:
                raise decode.VideoError("short", available=6)
            return torch.full((len(indices), 20, 20, 3), 7, dtype=torch.uint8)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass
    monkeypatch.setattr(data, "open_video", lambda path: Short())
    ds = data.VideoDataset("fake", [("x.mp4", 0)], ["a"], num_frames=8, train=False, resolution=16)
    assert ds[0][0].shape == (8, 3, 16, 16) and ds.skipped == 0


# ---------------------------------------------------------------- synthetic motion


def test_synthetic_is_deterministic_per_seed():
    a = data.build_dataset("synthetic", None, "full", 1, seed=3, resolution=RES, num_frames=6)
    b = data.build_dataset("synthetic", None, "full", 1, seed=3, resolution=RES, num_frames=6)
    c = data.build_dataset("synthetic", None, "full", 1, seed=4, resolution=RES, num_frames=6)
    assert a.classnames == list(synthetic.SYNTHETIC_CLASSES) and a.skipped == 0
    x, y = a[5]
    assert x.shape == (6, 3, RES, RES) and x.dtype == torch.float32 and y == 5
    assert torch.equal(x, b[5][0]) and not torch.equal(x, c[5][0])
    test = data.build_dataset("synthetic", None, "full", 1, seed=3, train=False, resolution=RES, views=(1, 3))
    assert test[0][0].shape == (3, 8, 3, RES, RES)
    assert len(data.build_dataset("synthetic", None, "few-shot", 1, shots=2)) == 16
    novel = data.build_dataset("synthetic", None, "base2novel", 1, subset="novel", train=False, resolution=RES)
    assert novel.classnames == list(synthetic.SYNTHETIC_CLASSES[0::2])
    base = data.build_dataset("synthetic", None, "base2novel", 1, train=True, resolution=RES)  # subset "base"
    assert base.classnames == list(synthetic.SYNTHETIC_CLASSES[1::2]) and len(base) == 16 * 4


def _square_track(clip):
    """Per-frame (x, y, area) of the pixels far from the frame's median colour: (T, 3)."""
    clip = clip.float()  # (T, 3, r, r)
    mask = (clip - clip.flatten(2).median(-1).values[..., None, None]).abs().sum(1) > 60  # (T, r, r)
    r = clip.shape[-1]
    grid = torch.arange(r, dtype=torch.float32)
    area = mask.sum((1, 2)).clamp(min=1)
    return torch.stack([(mask * grid).sum((1, 2)) / area, (mask * grid[:, None]).sum((1, 2)) / area, area], 1)


def test_synthetic_twins_need_frame_order():
    """Twin classes (a motion and its replay backwards) cannot be told apart from the unordered set of frames, and
    are told apart perfectly once order is used."""
    for pair in range(3):  # left/right, up/down, shrinking/growing (rotation has no orientation-free track)
        feats = {"blind": [], "ordered": []}
        labels = []
        for i in range(120):
            label = 2 * pair + i % 2
            g = torch.Generator().manual_seed(1000 + i)
            track = _square_track(synthetic.synthetic_clip(label, g, 8, 32, train=True))  # (T, 3)
            feats["blind"].append(track.sort(0).values.flatten())  # order-blind: the multiset of frames
            feats["ordered"].append(track[-1] - track[0])
            labels.append(i % 2)
        labels = torch.tensor(labels)
        acc = {}
        for kind, f in feats.items():
            f = torch.stack(f)
            f = (f - f.mean(0)) / (f.std(0) + 1e-6)
            means = torch.stack([f[:60][labels[:60] == c].mean(0) for c in (0, 1)])  # nearest class mean,
            pred = torch.cdist(f[60:], means).argmin(1)  # fitted on the first half, scored on the second
            acc[kind] = (pred == labels[60:]).float().mean().item()
        assert acc["ordered"] > 0.95 and acc["blind"] < 0.7, (pair, acc)


def test_synthetic_twin_is_the_clip_played_backwards():
    for pair in range(4):
        clips = [synthetic.synthetic_clip(2 * pair + k, torch.Generator().manual_seed(7), 8, 40, train=False).float()
                 for k in (0, 1)]
        differs = ((clips[0] - clips[1].flip(0)).abs() > 60).float().mean()  # noise is sigma 8 per clip
        assert differs < 1e-3 and ((clips[0] - clips[1]).abs() > 60).float().mean() > 1e-2


# ---------------------------------------------------------------- published protocol facts
# ViFi-CLIP's label CSVs and split files, carried as counts and digests in tests/fixtures/published_splits.json (made
# by tests/fixtures/published_splits.py from the published files, which the project does not copy).
with open(Path(__file__).parent / "fixtures" / "published_splits.json") as f:
    PUBLISHED = json.load(f)


def digest(lines):
    """sha256 of lines joined by newlines: how published_splits.json states a list."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_protocols_json_equals_published_class_sets():
    facts = layouts.protocol_facts()
    for name, want in PUBLISHED["base_classes"].items():  # sorted, in data.py's class-name text
        assert (len(facts[name]["base"]), digest(facts[name]["base"])) == (want["count"], want["sha256_sorted"]), name
    for name in ("kinetics400", "kinetics600"):
        assert digest(facts[name]["classes"]) == PUBLISHED["sorted_full_lists"][name], name
    for s in (1, 2, 3):
        want = PUBLISHED["kinetics600_zero_shot"][str(s)]
        split = facts["kinetics600"]["zero_shot"][s - 1]
        assert (len(split), digest(split)) == (want["count"], want["sha256_sorted"]), s


def _tree_from_published_lists(root, src, name):
    """An official-layout tree whose split-1 test set is the published one: UCF101's val1.txt rebuilt exactly from
    its clip counts; for HMDB51 (whose names no counts rebuild) made-up names, as many per class as the published
    base_val/novel_val hold, tagged 2 (test), and as many base-class training videos as base_train.txt holds (the
    novel classes get as many), tagged 1; one unused video (tag 0) per class."""
    os.makedirs(root, exist_ok=True)

    def link(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.link(src, dst)
    classes = layouts.protocol_facts()[name]["classes"]  # the published order, in our text
    if name == "ucf101":
        camel = {c.replace(" ", "").lower(): c.replace(" ", "") for c in classes}  # classInd's spelling
        os.makedirs(os.path.join(root, "ucfTrainTestlist"))
        Path(root, "ucfTrainTestlist", "classInd.txt").write_text("".join(f"{i} {c.replace(' ', '')}\r\n"
                                                                          for i, c in enumerate(classes, 1)))
        Path(root, "ucfTrainTestlist", "trainlist01.txt").write_text("")
        videos = [(camel[disk.lower()], f"v_{disk}_g{g:02d}_c{c:02d}.avi")
                  for disk, counts in PUBLISHED["ucf101_val1"].items() for g, n in enumerate(counts, 1)
                  for c in range(1, n + 1)]
        assert digest(sorted(v for _, v in videos)) == PUBLISHED["ucf101_val1_sha256"]  # the published val1.txt
        Path(root, "ucfTrainTestlist", "testlist01.txt").write_text("".join(f"{c}/{v}\r\n" for c, v in videos))
        for c, v in videos:
            link(os.path.join(root, "UCF-101", c, v))
        return
    facts = PUBLISHED["base2novel"][name]
    tested = {**facts["base"]["per_class"], **facts["novel"]["per_class"]}
    trained = facts["base_train_per_class"]
    os.makedirs(os.path.join(root, "testTrainMulti_7030_splits"))
    for c in classes:
        folder = c.replace(" ", "_")
        rows = ([(f"{folder}_test_{i}.avi", 2) for i in range(tested[c])]
                + [(f"{folder}_train_{i}.avi", 1) for i in range(trained.get(c, max(trained.values())))]
                + [(f"{folder}_unused_0.avi", 0)])
        for video, _ in rows:
            link(os.path.join(root, folder, video))
        Path(root, "testTrainMulti_7030_splits", f"{folder}_test_split1.txt").write_text(
            "".join(f"{v} {tag} \n" for v, tag in rows))


@pytest.mark.parametrize("name", ["ucf101", "hmdb51"])
def test_base_and_novel_test_sets_equal_published(tmp_path, clip, name):
    """Base-to-novel's test sets against ViFi-CLIP's base_val.txt / novel_val.txt: for UCF101 the very videos and
    classes (their digest), for HMDB51 the classes and videos per class; base-class training draws 16 shots."""
    root = str(tmp_path / name)
    _tree_from_published_lists(root, clip, name)
    for half in ("base", "novel"):
        want = PUBLISHED["base2novel"][name][half]
        ds = data.build_dataset(name, root, "base2novel", 1, subset=half, train=False, resolution=RES)
        ours = sorted(f"{os.path.basename(p)} {ds.classnames[label]}" for p, label in ds.items)
        assert len(ours) == want["count"] and sorted(ds.classnames) == sorted(want["per_class"])
        assert Counter(ds.classnames[label] for _, label in ds.items) == want["per_class"]
        if name == "ucf101":
            assert digest(ours) == want["sha256"]
        for p, label in ds.items:  # each video under its own class's folder: labels renumbered, not shifted
            folder = os.path.basename(os.path.dirname(p)).replace("_", " ").lower()
            assert folder.replace(" ", "") == ds.classnames[label].replace(" ", "").lower(), p
        assert sorted({label for _, label in ds.items}) == list(range(len(ds.classnames)))  # renumbered
    if name == "hmdb51":  # 16 shots per base class, drawn from the base classes' split-1 training videos
        train = [data.build_dataset(name, root, "base2novel", 1, seed=s, resolution=RES) for s in (0, 0, 1)]
        assert train[0].items == train[1].items != train[2].items and len(train[0]) == 26 * 16
        assert all("_train_" in os.path.basename(p) for p, _ in train[0].items)
        assert Counter(train[0].classnames[label] for _, label in train[0].items) == {
            c: 16 for c in PUBLISHED["base2novel"]["hmdb51"]["base_train_per_class"]}
        assert sorted(train[0].classnames) == sorted(layouts.protocol_facts()["hmdb51"]["base"])


def test_interfaces_class_name_order():
    """INTERFACES.md: the published base-class counts per dataset."""
    facts = layouts.protocol_facts()
    assert len(facts["ucf101"]["base"]) == 51 and len(facts["hmdb51"]["base"]) == 26
    assert len(facts["kinetics400"]["base"]) == 200 and len(facts["ssv2"]["base"]) == 87
