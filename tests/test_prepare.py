"""prepare.py and the split augmentation (issue 13): a fake UCF101 tree with a truncated and an empty video is
copied with broken sources reported and skipped, a second run converts nothing, the copy's readers find every
converted video by the lists' .avi names, a prepared video's sparse reads equal its full decode, a model tests
the same on the original and the prepared copy, and the worker/device split of the augmentation equals the
one-clip pipeline exactly."""
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

import data
import prepare
import train
from video import transforms
from video import decode
from conftest import full_decode, ucf101_tree, write_video
from video import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    """A miniature UCF101 (3 classes x 8 groups x 2 clips of 24 frames, MPEG-4 in AVI) where one training video
    is truncated and one test video is empty."""
    d = tmp_path_factory.mktemp("prep")
    src = write_video(str(d / "src.avi"), codec="mpeg4", n=24, w=64, h=48)
    train_list, test_list = ucf101_tree(str(d / "ucf101"), src)
    broken = {"truncated": train_list[0][0], "empty": test_list[0][0]}
    for kind, rel in broken.items():
        path = d / "ucf101" / "UCF-101" / rel.replace("HandstandPushups", "HandStandPushups")
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2] if kind == "truncated" else b"")
    return str(d / "ucf101"), broken, len(train_list) + len(test_list)


@pytest.mark.slow
def test_prepare_copies_the_layout_skips_broken_and_resumes(ucf, tmp_path):
    root, broken, total = ucf
    out = tmp_path / "ucf101-256"
    first = run("prepare.py", "--dataset", "ucf101", "--data-root", root, "--output", str(out), "--workers", "2")
    assert first.returncode == 0, first.stderr
    assert f"converted {total - 2}, skipped 0 (already done), failed 2" in first.stdout
    for rel in broken.values():  # each broken source is listed by name
        assert os.path.basename(rel) in first.stdout
    # Same layout: the lists are byte-identical copies, the videos are H.264 MP4s named as the sources.
    for name in ("classInd.txt", "trainlist01.txt", "testlist03.txt"):
        assert (out / "ucfTrainTestlist" / name).read_bytes() == open(f"{root}/ucfTrainTestlist/{name}", "rb").read()
    copy = out / "UCF-101" / "YoYo" / "v_YoYo_g03_c01.mp4"
    with av.open(str(copy)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and not c.streams.audio
        keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
    assert len(keys) == 24 and [i for i, k in enumerate(keys) if k] == list(range(0, 24, prepare.GOP))
    assert not (out / prepare.TMP).exists()
    # Every reader finds the copies by the lists' .avi names; the broken ones count as missing.
    original = data.build_dataset("ucf101", root, "full", train=True, resolution=32, num_frames=4)
    copied = data.build_dataset("ucf101", str(out), "full", train=True, resolution=32, num_frames=4)
    assert len(copied) == len(original) - 1 and copied.missing == 1
    assert all(p.endswith(".mp4") for p, _ in copied.items)
    assert [label for _, label in copied.items] == [label for p, label in original.items
                                                    if not p.endswith(os.path.basename(broken["truncated"]))]
    # A second run converts nothing and lists the broken sources again.
    second = run("prepare.py", "--dataset", "ucf101", "--data-root", root, "--output", str(out))
    assert second.returncode == 0, second.stderr
    assert f"converted 0, skipped {total - 2} (already done), failed 2" in second.stdout


def test_prepare_user_errors_are_one_line(ucf, tmp_path, capsys):
    root = ucf[0]
    for args in (["--dataset", "ucf101", "--data-root", str(tmp_path / "absent"), "--output", str(tmp_path / "o")],
                 ["--dataset", "ucf101", "--data-root", root, "--output", os.path.join(root, "copy")],
                 ["--dataset", "hmdb51", "--data-root", root, "--output", str(tmp_path / "o")],
                 ["--dataset", "ucf101", "--data-root", root],
                 ["--dataset", "nope", "--data-root", root, "--output", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as exit_status:
            prepare.main(args)
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exit_status.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args, lines)
    assert not os.path.exists(os.path.join(root, "copy")) and not os.path.exists(tmp_path / "o")


def test_frame_folders_are_read_where_videos_were(ucf, tmp_path):
    root = ucf[0]
    result = prepare.prepare("ucf101", root, str(tmp_path / "frames"), frames=True, workers=1, log=lambda m: None)
    assert len(result["failed"]) == 2
    folder = tmp_path / "frames" / "UCF-101" / "YoYo" / "v_YoYo_g03_c01"
    assert sorted(os.listdir(folder))[:2] == ["img_00001.jpg", "img_00002.jpg"] and len(os.listdir(folder)) == 24
    ds = data.build_dataset("ucf101", str(tmp_path / "frames"), "full", train=False, resolution=32, num_frames=4)
    assert all(os.path.isdir(p) for p, _ in ds.items) and ds[0][0].shape == (4, 3, 32, 32)


def test_prepared_sparse_read_equals_full_decode(tmp_path):
    """A 300-frame 160x120 source (larger than the short side 96 asked here, so it is resized): the copy has the
    source's frame count, exact sparse reads, and decodes far fewer pictures for 8 TSN frames than the source."""
    src = write_video(str(tmp_path / "src.mp4"), n=300, w=160, h=120, fps=30)
    dst = str(tmp_path / "copy.mp4")
    assert prepare.encode_mp4(src, dst, 96, prepare.GOP, prepare.CRF) == 300
    reference = full_decode(dst)
    assert len(reference) == 300 and reference[0].shape == (96, 128, 3)
    for _ in range(10):
        indices = decode.sample_indices(300, 8, train=True) if _ else [299, 0, 150, 150]
        got = decode.read_frames(dst, indices)
        assert np.array_equal(got.numpy(), np.stack([reference[i] for i in indices]))
    indices = decode.sample_indices(300, 8, train=False)
    counts = []
    for path in (src, dst):
        before = decode.decoded_frames
        decode.read_frames(path, indices)
        counts.append(decode.decoded_frames - before)
    assert counts[1] * 4 <= counts[0], counts


def test_split_augmentation_equals_the_one_clip_pipeline():
    """Geometry in the worker + the batched photometric half == train_transform clip by clip, bit for bit, for
    the same seeds; grayscale really grays about a fifth of the clips."""
    clips = [torch.randint(0, 256, (8, 3, 60 + 4 * i, 80), dtype=torch.uint8) for i in range(6)]
    worker = transforms.WorkerTransform(48)
    one, parts = [], []
    for seed, clip in enumerate(clips):
        torch.manual_seed(seed)
        one.append(transforms.train_transform(48)(tv_tensors.Video(clip)))
        torch.manual_seed(seed)
        parts.append(worker(tv_tensors.Video(clip)))
    batched = transforms.photometric(torch.stack([c for c, _ in parts]), torch.stack([p for _, p in parts]))
    assert all(c.dtype == torch.uint8 and c.shape == (8, 3, 48, 48) for c, _ in parts)
    for a, b in zip(one, batched):
        assert torch.equal(a, b)
    # The draws are those of the one-clip pipeline: jitter on in ~80%, grayscale in ~20% of 400 seeds.
    mean, std = torch.tensor(transforms.CLIP_MEAN).view(3, 1, 1), torch.tensor(transforms.CLIP_STD).view(3, 1, 1)
    gray = jitter = 0
    for seed in range(400):
        torch.manual_seed(seed)
        x = transforms.train_transform(32)(tv_tensors.Video(clips[0])) * std + mean
        gray += bool(torch.allclose(x[:, 0], x[:, 1], atol=1e-5) and torch.allclose(x[:, 1], x[:, 2], atol=1e-5))
        torch.manual_seed(seed)
        jitter += bool(worker(tv_tensors.Video(clips[0]))[1][0])
    assert 50 <= gray <= 110 and 290 <= jitter <= 350, (gray, jitter)


# ---------------------------------------------------------------- the same accuracy on the prepared copy

# Four real UCF101 class names (the description files are keyed by them) standing for four synthetic motions
# that a horizontal flip (UCF101 training flips) leaves alone: up, down, shrinking, growing.
MOTIONS = {"ApplyEyeMakeup": 2, "Archery": 3, "Basketball": 4, "Biking": 5}


def synthetic_ucf101(root, train_groups=16, test_groups=8, frames=16, size=64):
    """synthetic.synthetic_clip clips written as real MPEG-4 AVIs in UCF101's layout: one clip per group and class;
    groups 1..test_groups are the split's test set."""
    lists, train_lines, test_lines = os.path.join(root, "ucfTrainTestlist"), [], []
    os.makedirs(lists)
    for label, (cls, motion) in enumerate(MOTIONS.items(), 1):
        os.makedirs(os.path.join(root, "UCF-101", cls))
        for g in range(1, train_groups + test_groups + 1):
            gen = torch.Generator().manual_seed(1000 * label + g)
            clip = synthetic.synthetic_clip(motion, gen, frames, size, train=False)  # (T, 3, 64, 64)
            name = f"v_{cls}_g{g:02d}_c01.avi"
            with av.open(os.path.join(root, "UCF-101", cls, name), "w") as out:
                stream = out.add_stream("mpeg4", rate=25)
                stream.width = stream.height = size
                stream.pix_fmt, stream.bit_rate = "yuv420p", 4_000_000
                for img in clip.permute(0, 2, 3, 1).numpy():  # (T, 3, H, W) -> (T, H, W, 3)
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
                out.mux(stream.encode())
            (test_lines if g <= test_groups else train_lines).append(f"{cls}/{name} {label}\r\n")
    with open(os.path.join(lists, "classInd.txt"), "w", newline="") as f:
        f.writelines(f"{i} {c}\r\n" for i, c in enumerate(MOTIONS, 1))
    with open(os.path.join(lists, "trainlist01.txt"), "w", newline="") as f:
        f.writelines(train_lines)
    with open(os.path.join(lists, "testlist01.txt"), "w", newline="") as f:
        f.writelines(line.split()[0] + "\r\n" for line in test_lines)


def motion_features(dataset):
    """(N, (T-1) r^2) frame differences of the mean of the colour channels, and (N,) labels, of every item."""
    feats, labels = [], []
    for i in range(len(dataset)):
        clip, label = dataset[i]                                    # (T, 3, r, r)
        gray = clip.mean(1)                                         # (T, r, r)
        feats.append((gray[1:] - gray[:-1]).flatten())
        labels.append(label)
    return torch.stack(feats), torch.tensor(labels)


@pytest.mark.slow
def test_accuracy_is_the_same_on_the_prepared_copy(tmp_path):
    """A nearest-class-mean classifier of frame differences, fitted on the prepared copy's training videos, tests
    the same on the original test videos as on their prepared copies. (An MSTA on the random-tiny backbone needs
    thousands of steps, minutes, to learn these motions through the training augmentation; this model learns
    them in one pass and sees every pixel that changed.)"""
    original, copy = str(tmp_path / "ucf101"), str(tmp_path / "ucf101-256")
    synthetic_ucf101(original)
    result = prepare.prepare("ucf101", original, copy, workers=1, log=lambda m: None)
    assert len(result["converted"]) == 4 * 24 and not result["failed"]
    fit = data.build_dataset("ucf101", copy, "full", train=True, resolution=32, num_frames=8)
    fit = data.VideoDataset("ucf101", fit.items, fit.classnames, num_frames=8, train=False, resolution=32)
    x, y = motion_features(fit)
    means = torch.nn.functional.normalize(torch.stack([x[y == c].mean(0) for c in range(len(MOTIONS))]), dim=1)
    top1 = {}
    for name, root in (("prepared", copy), ("original", original)):
        x, y = motion_features(data.build_dataset("ucf101", root, "full", train=False, resolution=32, num_frames=8))
        top1[name] = 100 * ((torch.nn.functional.normalize(x, dim=1) @ means.T).argmax(1) == y).float().mean().item()
    print(f"\ntop-1 on 32 test videos: prepared copy {top1['prepared']:.1f}, original {top1['original']:.1f}")
    assert top1["prepared"] >= 60, top1  # it learnt the motions (chance: 25%)
    assert abs(top1["original"] - top1["prepared"]) <= 100 * 2 / 32, top1  # at most 2 of the 32 videos differ


@pytest.mark.slow
def test_persistent_workers_train_exactly_as_one_process(ucf, tmp_path):
    """Two persistent loader workers (uint8 clips, photometric half in the main process) give bit-identical
    adapters to loading in the main process: every epoch's draws reach the workers with the indices. One torch
    thread in both: the default thread count depends on --workers, and another count sums floats in another order."""
    weights = []
    for workers in ("0", "2"):
        out = tmp_path / f"workers{workers}"
        train.main(["--dataset", "ucf101", "--data-root", ucf[0], "--shots", "2", "--clip", "random-tiny",
                    "--blocks", "1-2", "--rank", "8", "--frames", "4", "--batch-size", "2", "--epochs", "3",
                    "--eval-every", "0", "--clips", "1", "--crops", "1", "--workers", workers, "--threads", "1", "--output", str(out)])
        weights.append(torch.load(out / "checkpoint.pt", weights_only=True)["adapters"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
