"""The GPU path, checked on a CPU by simulation (no GPU has been lent to this project; docs/performance.md says what
awaits one): the precision chosen for simulated cards of each capability, TF32, host-device synchronisations and
collectives counted per training step (tests/step_counts.py), the final test's loader within its host-memory and
shared-memory budget, --micro-batch auto against free memory, evaluate.py under a two-process torchrun, --resume
with the checkpoint on rank 0 only, and a failing rank's one line (tests/ddp_checks.py under torchrun)."""
import json
import os
import socket
import subprocess
import sys
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import data
import evaluate
import models
import train
from bench import measure as bench_measure
from harness import memory, precision, recipe, runs
from video import batches, transforms
from step_counts import StepCounts, syncs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "synthetic", "--clip", "random-tiny", "--shots", "4", "--batch-size", "8", "--workers", "0"]


# ------------------------------------------------------------------------------------ simulated cards
CARDS = {"T4": (7, 5), "V100": (7, 0), "RTX 2080": (7, 5), "A100": (8, 0), "RTX 4090": (8, 9), "H100": (9, 0)}


def simulate(monkeypatch, name):
    """torch.cuda as on a card of compute capability CARDS[name]: is_bf16_supported as torch 2.14 computes it
    (torch/cuda/__init__.py: True from major 8; below, True only including emulation, where a bf16 tensor can be
    made, which it can on every CUDA card)."""
    major, minor = CARDS[name]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: types.SimpleNamespace(name=name, major=major, minor=minor))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: major >= 8 or
                        including_emulation)
    monkeypatch.setattr(torch.cuda, "is_tf32_supported", lambda: major >= 8)


@pytest.mark.parametrize("name", CARDS)
def test_precision_follows_what_the_card_computes(monkeypatch, capsys, name):
    simulate(monkeypatch, name)
    native = CARDS[name][0] >= 8
    want = "bf16" if native else "fp16"
    assert precision.choose(None, cuda=True) == want
    assert precision.choose("fp32", cuda=True) == "fp32" and precision.choose("fp16", cuda=True) == "fp16"
    if native:
        assert precision.choose("bf16", cuda=True) == "bf16"
    else:
        with pytest.raises(precision.PrecisionError, match="no native bf16.*--precision fp16"):
            precision.choose("bf16", cuda=True)
    # train.py's --print-config shows the precision and TF32 the run would use on this card.
    assert train.main(TINY + ["--print-config"]) is None
    config = json.loads(capsys.readouterr().out)
    assert (config["precision"], config["tf32"]) == (want, "on")
    assert train.parse_args(TINY + ["--tf32", "off"]).tf32 == "off"
    # evaluate.py's default, the advice when memory runs out, and the benchmark's label follow the same rule.
    a = evaluate.parse_args(["--zero-shot-clip"])
    assert evaluate.run_args(a, dict(dataset="synthetic", protocol="full", split=1), torch.device("cuda")
                             ).precision == want
    advice = memory.out_of_memory_advice(8, 8, "fp32", False, precision.half())
    assert f"--precision {want}" in advice and ("--precision bf16" in advice) == native
    assert bench_measure.native_bf16(torch.device("cuda"))[0] == native
    assert "has TF32" in precision.describe(want, "on", True) if native else "no TF32" in precision.describe(
        want, "on", True)


def test_cpu_runs_fp32_and_bf16_on_an_emulating_card_is_one_line(monkeypatch, capsys):
    assert precision.choose(None, cuda=False) == "fp32"
    simulate(monkeypatch, "T4")
    with pytest.raises(SystemExit) as e:
        train.run(TINY + ["--precision", "bf16", "--print-config"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "T4 (sm75)" in err[0] and "--precision fp16" in err[0]


def test_tf32_switch_and_the_paper_recipe(monkeypatch):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        precision.set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        precision.set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    # The authors' torch 1.11 allowed TF32 in matmuls and convolutions: the recipe says so, as fp32 (apex O0).
    values = recipe.table("paper")["all"]
    assert (values["precision"], values["tf32"]) == ("fp32", "on")


# ------------------------------------------------------------------------------- syncs in a training step
@pytest.mark.slow
def test_a_training_step_makes_at_most_two_host_device_syncs(monkeypatch, tmp_path):
    """Every step of a real train.py run (3 epochs of 4 steps, meter read at each epoch's 2nd step and every 3
    steps) counted on the CPU: the first step reads the new class tokens once (the text prefix cache, clip.py's
    trim), a step that reads the meter makes one read, every other step none."""
    counts = StepCounts()
    counts.patch(monkeypatch.setattr)
    monkeypatch.setattr(runs, "METER_EVERY", 3)
    train.main(TINY + ["--epochs", "3", "--eval-every", "0", "--clips", "1", "--crops", "1",
                       "--output", str(tmp_path / "run")])
    steps = counts.steps
    assert len(steps) == 12
    per_step = [syncs(s) for s in steps]
    assert max(per_step) <= 2, steps
    for i, s in enumerate(steps):
        reads_meter = i % 4 + 1 == 2 or (i % 4 + 1) % 3 == 0
        expected = (2 if i == 0 else 0) + (1 if reads_meter else 0)
        assert syncs(s) == expected, (i, s)
        assert not {k for k in s if "copy" in k or "shape" in k}, (i, s)


def test_photometric_sends_the_draws_in_one_non_blocking_copy():
    """On the meta device (a device apart from the host, whose tensors cannot be read: a read would raise) the
    augmentation of a batch of 32 copies host data to it exactly once, non-blocking."""
    params = torch.stack([transforms.Photometric().draw() for _ in range(32)])
    copies = []

    class Copies(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if str(func).startswith("aten._to_copy") and kwargs.get("device") == torch.device("meta") \
                    and args[0].device.type == "cpu":
                copies.append(kwargs.get("non_blocking", False))
            return func(*args, **kwargs)
    clips = torch.zeros(32, 4, 3, 16, 16, dtype=torch.uint8, device="meta")
    with Copies():
        out = transforms.photometric(clips, params)
    assert out.shape == (32, 4, 3, 16, 16) and out.dtype == torch.float32
    assert copies == [True]


# ---------------------------------------------------------------------- the final test's host memory
def test_final_test_bytes_in_flight_on_a_96_core_host(monkeypatch):
    """HMDB51's 10 x 3 views of 8 frames at 224 px, batches of 8, on a simulated 96-core host: the workers hand
    over uint8 views, and the batches on the host at once stay within batches.TEST_BUDGET and /dev/shm."""
    monkeypatch.setattr(batches, "usable_cores", lambda: 96)
    workers = batches.default_workers()
    assert workers == 96
    test_set = data.build_dataset("synthetic", None, "full", 1, train=False, resolution=224, views=(10, 3),
                                  defer_photometric=True)
    video, _ = test_set[0]
    assert video.dtype == torch.uint8 and video.shape == (30, 8, 3, 224, 224)
    assert test_set.item_bytes == video.numel()
    made = []

    class Capture(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

        def __iter__(self):
            return iter(())
    monkeypatch.setattr(torch.utils.data, "DataLoader", Capture)
    for shm in (64 * 2**30, 2 * 2**30):
        monkeypatch.setattr(batches, "shm_free", lambda shm=shm: shm)
        model = evaluate.FrozenCLIP(models.load_backbone("random-tiny"))
        evaluate.evaluate(model, test_set, torch.device("cpu"), batch_size=8, workers=workers)
        k = made[-1]
        batch_bytes = k["batch_size"] * test_set.item_bytes
        in_flight = (k["num_workers"] * k["prefetch_factor"] + 2) * batch_bytes
        assert 1 <= k["num_workers"] < workers and in_flight <= batches.TEST_BUDGET, k
        assert (k["num_workers"] * k["prefetch_factor"] + 1) * batch_bytes <= batches.SHM_SHARE * shm
    # Docker's default 64 MB of /dev/shm cannot hold one 34.5 MiB video twice over: one line naming --shm-size.
    monkeypatch.setattr(batches, "shm_free", lambda: 64 * 10**6)
    with pytest.raises(batches.SharedMemoryError, match="--shm-size"):
        evaluate.evaluate(model, test_set, torch.device("cpu"), batch_size=8, workers=workers)
    assert batches.test_loader_plan(test_set.item_bytes, 8, 0) == (8, 0, None)  # --workers 0 needs none


def test_training_loader_stays_within_shared_memory(monkeypatch):
    """The training loader's batches ahead (workers x prefetch + the one being read) fit half of /dev/shm: fewer
    batches ahead, then fewer workers; one line naming --shm-size when not even one fits."""
    train_set = data.build_dataset("synthetic", None, "few-shot", 1, shots=4, train=True, resolution=224,
                                   defer_photometric=True)
    batch_bytes = 8 * train_set.item_bytes  # 8 uint8 clips of 8 x 3 x 224 x 224: 9.2 MiB
    monkeypatch.setattr(batches, "shm_free", lambda: 64 * 10**6)  # Docker's default
    _, loader = batches.loader(train_set, 8, 0, 96, 0, 1, False)
    assert (loader.num_workers * loader.prefetch_factor + 1) * batch_bytes <= 32 * 10**6
    assert loader.num_workers == 2 and loader.prefetch_factor == 1
    monkeypatch.setattr(batches, "shm_free", lambda: 10 * 10**6)
    with pytest.raises(batches.SharedMemoryError, match="--shm-size"):
        batches.loader(train_set, 8, 0, 96, 0, 1, False)
    monkeypatch.setattr(batches, "shm_free", lambda: 64 * 2**30)
    _, loader = batches.loader(train_set, 8, 0, 96, 0, 1, False)
    assert (loader.num_workers, loader.prefetch_factor) == (96, batches.PREFETCH)


def test_uint8_views_normalised_on_the_device_score_as_before():
    """The deferred test path (uint8 views, transforms.normalize on the device) gives the very numbers the
    float path gives, with the loader's workers sized by the plan."""
    model = evaluate.FrozenCLIP(models.load_backbone("random-tiny"))
    got = {}
    for defer in (False, True):
        test_set = data.build_dataset("synthetic", None, "full", 1, train=False, resolution=32, views=(2, 3),
                                      num_frames=4, defer_photometric=defer)
        got[defer] = evaluate.evaluate(model, test_set, torch.device("cpu"), batch_size=16, workers=2, keep=True)
    assert got[False]["top1"] == got[True]["top1"] and got[False]["videos"] == got[True]["videos"] == 128
    a, b = got[False]["predictions"], got[True]["predictions"]
    assert a["index"] == b["index"] and torch.equal(a["probs"], b["probs"]) and torch.equal(a["top"], b["top"])


# ------------------------------------------------------------------------------ --micro-batch auto
def test_auto_micro_batch_is_measured_against_free_memory(monkeypatch):
    """trial_fits on the CPU with torch.cuda's memory queries simulated: a 24 GB card with 6 GB free, whose step
    peaks at what the trial allocates; the answer follows the free memory, and the trial holds the whole batch's
    uint8 clips and its augmented float copy, not only the micro-batch."""
    args = train.parse_args(TINY)
    model = models.build_msta(args.clip, torch.device("cpu"), args.frames, args.rank, args.blocks, args.scale,
                              args.temporal, args.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    allocated = {"now": 0, "peak": 0}
    sizes = []

    class Track(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    sizes.append(t.numel() * t.element_size())
            return out
    free = {"bytes": 6 * 2**30}
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: sizes.clear())
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: sum(sizes))  # an upper bound
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 24 * 2**30))
    tokens = torch.zeros(3, 77, dtype=torch.long)
    tokens[:, 0], tokens[:, 1] = 49406, 49407
    shape = (4, 3, 32, 32)
    fits = memory.trial_fits(train.TrainStep(model), model, optimizer, shape, tokens, runs.autocast_for(
        torch.device("cpu"), "fp32"), torch.device("cpu"), local=8)
    with Track():
        assert fits(1)
    need = sum(sizes)
    clip_bytes = 8 * 4 * 3 * 32 * 32  # the whole local batch of 8, though the micro-batch is 1
    assert need > clip_bytes * (1 + 4)  # the uint8 batch and its float copy are in the trial
    free["bytes"] = need // 2  # total memory is unchanged: only the free memory says no
    with Track():
        assert not fits(1)


# ------------------------------------------------------------------------------ torchrun, two processes
def free_port():
    """A port nobody listens on now (fixed ports collide with other test runs on the same machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, port=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={port or free_port()}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch synthetic run (in this process)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train.main(TINY + ["--epochs", "1", "--eval-every", "0", "--output", str(out)])
    return out


@pytest.mark.slow
def test_evaluate_under_torchrun_shards_gathers_and_rank0_writes(trained, tmp_path, monkeypatch, capsys):
    one = evaluate.main(["--checkpoint", str(trained), "--workers", "0", "--output", str(tmp_path / "one")])
    two = torchrun(["evaluate.py", "--checkpoint", str(trained), "--workers", "0", "--output",
                    str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    got = json.loads((tmp_path / "two" / "results.json").read_text())
    assert got["top1"] == pytest.approx(one["summary"]["top1"]) and got["rows"][0]["videos"] == 128
    assert two.stdout.count("evaluate.py: 1 run(s)") == 1 and "x 2 processes" in two.stdout  # rank 0 alone logs
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun starts it: --video is refused before any process group
    with pytest.raises(SystemExit) as e:
        evaluate.run(["--checkpoint", str(trained), "--video", "x.mp4"])
    assert e.value.code == 2 and "runs in one process" in capsys.readouterr().err


def ddp_check(mode, tmp_path, *argv):
    return torchrun([os.path.join(ROOT, "tests", "ddp_checks.py"), mode, str(tmp_path), *argv],
                    env={"PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
                         "TMPDIR": str(tmp_path)})


@pytest.mark.slow
def test_two_processes_count_collectives_per_step(tmp_path):
    """With micro-batches of 2 (two passes per step on each process): no buffer broadcast, one gradient all-reduce
    per DDP bucket in the step's last backward only, and the meter's all-reduce only on the steps that read it (each
    epoch's 2nd, and every 3rd here)."""
    out = ddp_check("count", tmp_path, *TINY, "--epochs", "2", "--eval-every", "0", "--micro-batch", "2",
                    "--clips", "1", "--crops", "1", "--output", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-3000:]
    for rank in (0, 1):
        steps = json.loads((tmp_path / f"steps{rank}.json").read_text())
        assert len(steps) == 8
        buckets = {s.get("ddp bucket all_reduce", 0) for s in steps}
        assert len(buckets) == 1 and buckets.pop() >= 1  # the same number every step: once per bucket
        for i, s in enumerate(steps):
            assert "_broadcast_coalesced" not in s and "broadcast" not in s, (i, s)
            assert s.get("all_reduce", 0) == (1 if i % 4 + 1 == 2 or (i % 4 + 1) % 3 == 0 else 0), (i, s)
            assert syncs(s) <= 2, (i, s)


@pytest.mark.slow
def test_resume_reads_the_checkpoint_on_rank_0_only(tmp_path):
    """Rank 1 cannot read checkpoints (as on a machine without the run folder): --resume still continues, and
    ends where an uninterrupted two-process run ends."""
    common = [*TINY, "--epochs", "2", "--eval-every", "0", "--clips", "1", "--crops", "1"]
    whole = torchrun(["train.py", *common, "--output", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut = ddp_check("train", tmp_path, *common, "--max-steps", "6", "--output", str(tmp_path / "cut"))
    assert cut.returncode == 0, cut.stderr[-3000:]
    resumed = ddp_check("resume", tmp_path, *common, "--resume", "--output", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["adapters"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["adapters"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.slow
def test_a_failing_rank_prints_one_line_and_the_other_stops(tmp_path):
    out = ddp_check("fail", tmp_path, *TINY, "--epochs", "2", "--eval-every", "0",
                    "--output", str(tmp_path / "run"))
    assert out.returncode != 0
    err = {r: (tmp_path / f"stderr{r}.txt").read_text().strip().splitlines() for r in (0, 1)}
    assert len(err[1]) == 1 and err[1][0].startswith("error: rank 1: RuntimeError: cuBLAS failed (simulated)"), err
    assert "traceback: " in err[1][0] and "Traceback" not in "\n".join(err[0] + err[1])
    assert len(err[0]) <= 1 and (not err[0] or "rank 1 failed" in err[0][0]), err  # or stopped by torchrun
