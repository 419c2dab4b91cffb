"""`python data.py verify`: a tree with a missing, a truncated and an empty video reports each and exits 1; a
complete tree exits 0, and a second run decodes nothing again (the cache)."""
import os
import subprocess
import sys

import pytest

from video import verify
from conftest import ucf101_tree, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def tree(tmp_path):
    clip = write_video(str(tmp_path / "clip.avi"), codec="mpeg4", n=24, gop=6)
    root = tmp_path / "ucf101"
    ucf101_tree(str(root), clip, classes=("ApplyEyeMakeup", "YoYo"), groups=2, clips=2, test_groups=1)
    return root


def run(root, tmp_path, *extra):
    argv = [sys.executable, os.path.join(ROOT, "data.py"), "verify", "--dataset", "ucf101", "--data-root",
            str(root), "--workers", "2", "--cache", str(tmp_path / "cache.json"), "--report",
            str(tmp_path / "report.txt"), *extra]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=str(tmp_path))
    return p.returncode, (tmp_path / "report.txt").read_text() if (tmp_path / "report.txt").exists() else ""


@pytest.mark.slow
def test_complete_tree_passes_and_second_run_uses_the_cache(tree, tmp_path):
    code, report = run(tree, tmp_path)
    assert code == 0, report
    assert "train split 1: expected 4, found 4, missing 0, undecodable 0" in report
    calls = []
    original = verify.check
    verify.check = lambda p: calls.append(p) or original(p)  # in-process: counts the decodes a second run does
    try:
        status, _ = verify.verify("ucf101", str(tree), split=1, workers=1, cache=str(tmp_path / "cache.json"),
                                  log=lambda *a: None)
    finally:
        verify.check = original
    assert status == 0 and calls == []


@pytest.mark.slow
def test_missing_truncated_and_empty_videos_are_each_reported(tree, tmp_path):
    videos = tree / "UCF-101"
    (videos / "YoYo" / "v_YoYo_g02_c01.avi").unlink()  # missing (a training video of every split)
    truncated = videos / "YoYo" / "v_YoYo_g02_c02.avi"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    empty = videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi"
    empty.write_bytes(b"")
    code, report = run(tree, tmp_path, "--split", "1")
    assert code == 1
    assert "train split 1: expected 4, found 3, missing 1, undecodable 1" in report
    assert "test split 1: expected 4, found 4, missing 0, undecodable 1" in report
    assert f"{truncated}: " in report and f"{empty}: empty file" in report
    assert "missing (1; list: video" in report and "train split 1: entry " in report
