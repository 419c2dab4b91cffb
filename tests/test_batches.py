"""What each training step sees (video/batches.py, as train.py builds its loader): every item's augmentation is drawn
from (seed, epoch, index), so the same video is augmented afresh every epoch, and identically whenever the same
epoch is read again (which is what makes --resume exact and N processes equal one)."""
import pytest
import torch

import train
from harness import settings
from video import batches, transforms
from conftest import write_video

CLASSES = ("archery", "bowling", "juggling")


def tree_args(tmp_path):
    """train.py's arguments for a folder tree of 6 training (and 6 test) videos, on random-tiny."""
    root = tmp_path / "videos"
    for c, name in enumerate(CLASSES):
        for i in range(2):
            write_video(str(root / "train" / name / f"clip{i}.mp4"), n=24, w=48, h=40, seed=10 * c + i)
            write_video(str(root / "test" / name / f"clip{i}.mp4"), n=24, w=48, h=40, seed=10 * c + i + 5)
    return ["--dataset", "folder", "--data-root", str(root), "--clip", "random-tiny", "--frames", "4",
            "--rank", "8", "--blocks", "1-1", "--batch-size", "2", "--workers", "0", "--output", str(tmp_path / "run")]


def loader_of(tmp_path):
    """(sampler, loader) of the tree, built the way train.main builds them."""
    args = train.parse_args(tree_args(tmp_path))
    reader, lists = settings.data_source(args)
    train_set = train.training_set(args.dataset, reader, args.data_root, lists, args.protocol, args.split, args.shots,
                                   args.seed, args.frames, 32,  # random-tiny's resolution; CLIP's mean and std
                                   transforms.CLIP_MEAN, transforms.CLIP_STD)
    return batches.loader(train_set, args.batch_size, args.seed, args.workers, 0, 1, pin_memory=False)


def epoch_items(sampler, loader, epoch):
    """{video index: (uint8 clip (T, 3, r, r), its photometric draws)} of one epoch, read through the loader."""
    sampler.epoch = epoch
    items = {}
    for keys, ((clips, draws), _) in zip(sampler, loader):  # the sampler's keys, then the batch they made
        for (key_epoch, index), clip, draw in zip(keys, clips, draws):
            assert key_epoch == epoch
            items[index] = (clip, draw)
    return items


def same(a, b):
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_each_epoch_augments_every_video_afresh(tmp_path):
    sampler, loader = loader_of(tmp_path)
    first, again, second = (epoch_items(sampler, loader, e) for e in (0, 0, 1))
    assert len(first) == len(second) == 6  # 3 global batches of 2: every video once per epoch
    # Reading an epoch again gives the very same items: the draws come from the seed, not from the loader's state.
    assert first.keys() == again.keys() and all(same(first[i], again[i]) for i in first)
    # The next epoch draws anew for every video: frames, crop, flip, jitter.
    assert not any(same(first[i], second[i]) for i in first)


@pytest.mark.slow
def test_train_py_gives_each_epoch_its_own_draws(tmp_path, monkeypatch):
    """The same through a real two-epoch train.py run: the keys it hands its items carry the epoch, and every
    video's second-epoch clip differs from its first."""
    seen, getitem = {}, batches.SeededItems.__getitem__

    def recording(self, key):
        item = getitem(self, key)
        seen[key] = item[0]  # (uint8 clip, photometric draws)
        return item
    monkeypatch.setattr(batches.SeededItems, "__getitem__", recording)
    train.main(tree_args(tmp_path) + ["--epochs", "2", "--eval-every", "0"])
    assert sorted(seen) == [(e, i) for e in (0, 1) for i in range(6)]
    assert not any(same(seen[0, i], seen[1, i]) for i in range(6))
