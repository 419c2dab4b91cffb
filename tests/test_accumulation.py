"""Gradient accumulation and activation checkpointing (train.accumulate_step, --micro-batch,
--grad-checkpointing): one optimiser step over micro-batches, or with the frozen blocks recomputed, leaves the
same gradients and adapters as one pass over the whole batch, on CLIP's and ViCLIP's token layouts, for attn and
conv, through train.py, under a two-process torchrun and across --resume; and a CUDA out-of-memory stop is one
line that names the options, with the run's files intact."""
import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch

import adapters
import clip
import losses
from harness import memory, precision
import train
import viclip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONES = {"clip": lambda name="random-tiny": clip.build_random(name),
             "viclip": lambda name="random-ViCLIP-tiny": viclip.build_random(name)}


def one_step(backbone, temporal, micro, batch=8, frames=4, checkpointing=False, name=None, rank=8, blocks=(2, 4)):
    """A fresh model (seed 0), one accumulate_step over a fixed batch of `batch` videos in micro-batches of
    `micro`, L_CC on; returns (loss, gradients, adapters after one AdamW step)."""
    model = BACKBONES[backbone](*([name] if name else []))
    torch.manual_seed(0)
    msta = adapters.MSTA(model, num_frames=frames, rank=rank, blocks=blocks, temporal=temporal)
    msta.checkpoint_blocks = checkpointing
    g = torch.Generator().manual_seed(1)
    R, C = model.visual.input_resolution, 5
    videos = torch.randn(batch, frames, 3, R, R, generator=g)                 # (B, T, 3, H, W)
    labels = torch.randint(0, C, (batch,), generator=g)
    tokens = clip.tokenize([f"a video of class {c}." for c in range(C)], model.context_length)  # (C, L)
    E = model.visual.output_dim
    spatial, temporal_feats = torch.randn(C, E, generator=g), torch.randn(C, E, generator=g)  # (C, E)
    params = [p for p in msta.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss, logits = train.accumulate_step(train.TrainStep(msta), msta, videos, labels, tokens,
                                         (spatial, temporal_feats), 0.5, micro, contextlib.nullcontext(), scaler)
    grads = {n: p.grad.clone() for n, p in msta.named_parameters() if p.requires_grad}
    optimizer.step()
    assert logits.shape == (batch, C)
    return loss.item(), grads, msta.trainable_state_dict()


def assert_same(a, b, rtol=1e-4, atol=1e-6):
    """Each tensor within rtol of its largest value (+ atol): the same sums in another order, in fp32."""
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() <= rtol * b[k].abs().max() + atol, k


def assert_same_adapters(a, b, lr, steps, grads=None):
    """Adapters after AdamW steps. AdamW's first step moves each element by lr * g / (|g| + eps), about lr * sign(g),
    so an element whose gradient is at the fp32 rounding floor (a true gradient of 0, known only up to rounding)
    may move either way in two sums of a different order. Those elements may differ by up to 2 lr a step; with `grads`
    (one step) they are exactly the ones whose gradient is below 1e-6 of the largest of all, and in all fewer than
    0.5% of the elements; every other element agrees to 1e-5."""
    assert a.keys() == b.keys()
    floor = 1e-6 * max(g.abs().max() for g in grads.values()) if grads is not None else None
    far_count = 0
    for k in a:
        far = (a[k] - b[k]).abs() > 1e-5 * b[k].abs().max() + 1e-6
        assert (a[k] - b[k]).abs().max() <= 2 * lr * steps + 1e-6, k
        if grads is not None:
            assert not (far & (grads[k].abs() > floor)).any(), k
        far_count += far.sum().item()
    assert far_count <= 0.005 * sum(v.numel() for v in a.values())


@pytest.mark.parametrize("backbone", ["clip", "viclip"])
@pytest.mark.parametrize("temporal", ["attn", "conv"])
def test_micro_batches_give_the_one_batch_step(backbone, temporal):
    loss, grads, after = one_step(backbone, temporal, micro=8)
    # Every adapter tensor has a gradient to compare, but one: on ViCLIP the last block's temporal module, which
    # mixes only patch tokens, and the class token (the video feature) never reads them after the last block.
    dead = "adapters.3.temporal." if backbone == "viclip" else "-"
    assert all(g.abs().sum() > 0 for k, g in grads.items() if dead not in k)
    for micro in (2, 4, 3):  # 3: an uneven last micro-batch (3 + 3 + 2), weighted by its share
        got_loss, got_grads, got_after = one_step(backbone, temporal, micro=micro)
        assert got_loss == pytest.approx(loss, rel=1e-5)
        assert_same(got_grads, grads)
        assert_same_adapters(got_after, after, 1e-3, 1, grads)


@pytest.mark.parametrize("backbone", ["clip", "viclip"])
def test_attention_module_same_in_micro_batches(backbone):
    """The temporal attention has no parameter whose true gradient is 0 (no key bias, which softmax cancels), so
    its gradients agree between micro-batches and one pass to 1e-4 of each tensor's largest, and so do its
    parameters after an AdamW step, element by element: no rounding noise for AdamW to turn into lr-sized steps."""
    loss, grads, after = one_step(backbone, "attn", micro=8)
    blocks = ("adapters.1.", "adapters.2.") if backbone == "viclip" else ("adapters.",)  # ViCLIP's last: see above
    names = [k for k in grads if ".temporal." in k and k.startswith(blocks)]
    assert names and not any(k.endswith("key.bias") for k in grads)
    for micro in (2, 3):
        _, got_grads, got_after = one_step(backbone, "attn", micro=micro)
        for k in names:
            assert grads[k].abs().max() > 0, k
            assert (got_grads[k] - grads[k]).abs().max() <= 1e-4 * grads[k].abs().max(), k
            assert (got_after[k] - after[k]).abs().max() <= 1e-5 * after[k].abs().max() + 1e-7, k


@pytest.mark.slow
@pytest.mark.parametrize("backbone, name", [("clip", "random-ViT-B/16"), ("viclip", "random-ViCLIP-B/16")])
def test_micro_batches_on_b16_shapes(backbone, name):
    """The published widths and token counts (2 frames and the last two blocks adapted, to stay seconds)."""
    kwargs = dict(batch=2, frames=2, name=name, rank=16, blocks=(11, 12))
    loss, grads, after = one_step(backbone, "attn", micro=2, **kwargs)
    got_loss, got_grads, got_after = one_step(backbone, "attn", micro=1, **kwargs)
    assert got_loss == pytest.approx(loss, rel=1e-5)
    assert_same(got_grads, grads)
    assert_same_adapters(got_after, after, 1e-3, 1, grads)


@pytest.mark.parametrize("backbone", ["clip", "viclip"])
@pytest.mark.parametrize("temporal", ["attn", "conv"])
def test_checkpointed_blocks_give_the_same_gradients(backbone, temporal):
    loss, grads, after = one_step(backbone, temporal, micro=8)
    got_loss, got_grads, got_after = one_step(backbone, temporal, micro=4, checkpointing=True)
    assert got_loss == pytest.approx(loss, rel=1e-5)
    assert_same(got_grads, grads)
    assert_same_adapters(got_after, after, 1e-3, 1, grads)


def test_checkpointing_keeps_fewer_activations():
    """What the switch is for: the tensors autograd keeps for the backward pass shrink."""
    def saved_bytes(checkpointing):
        model = clip.build_random("random-tiny")
        msta = adapters.MSTA(model, num_frames=4, rank=8, blocks=(1, 4))
        msta.checkpoint_blocks = checkpointing
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            msta.encode_video(torch.randn(2, 4, 3, 32, 32)).sum().backward()
        return sum(kept)
    assert saved_bytes(True) < 0.5 * saved_bytes(False)


def test_ddp_reduces_gradients_once_per_step(tmp_path):
    """Micro-batches before the last run in DDP's no_sync(): a step of 4 micro-batches all-reduces the same
    gradient buckets as a step of one (counted by a communication hook, in a one-process gloo group)."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = clip.build_random("random-tiny")
        msta = adapters.MSTA(model, num_frames=4, rank=8, blocks=(2, 4))
        ddp = torch.nn.parallel.DistributedDataParallel(train.TrainStep(msta))
        reduced = []

        def count(state, bucket):
            reduced.append(bucket.index())
            done = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done
        ddp.register_comm_hook(None, count)
        videos, labels = torch.randn(8, 4, 3, 32, 32), torch.randint(0, 3, (8,))
        tokens = clip.tokenize(["a video of a.", "a video of b.", "a video of c."])
        for micro in (8, 2):
            reduced.clear()
            train.accumulate_step(ddp, msta, videos, labels, tokens, None, 0.0, micro, contextlib.nullcontext(),
                                  torch.amp.GradScaler("cpu", enabled=False))
            if micro == 8:
                once = sorted(reduced)
        assert once and sorted(reduced) == once
    finally:
        dist.destroy_process_group()


def test_bad_micro_batch_is_a_usage_error():
    for value in ("0", "-2", "many"):
        with pytest.raises(train.UsageError, match="--micro-batch"):
            train.parse_args(["--micro-batch", value])


def test_auto_micro_batch_halves_until_it_fits():
    tried = []

    def fits(m):
        tried.append(m)
        return m <= 5
    assert memory.choose_micro_batch("auto", 32, torch.device("cuda"), fits) == 4
    assert tried == [32, 16, 8, 4]
    assert memory.choose_micro_batch("auto", 32, torch.device("cpu"), fits) == 32  # the CPU: one pass
    assert memory.choose_micro_batch("6", 4, torch.device("cpu"), fits) == 4  # never more than the batch
    assert memory.choose_micro_batch("auto", 3, torch.device("cuda"), lambda m: False) == 1


# ---------------------------------------------------------------------------------------------- through train.py
def train_args(out, *extra, clip_name="random-tiny", temporal="attn"):
    return ["--dataset", "synthetic", "--clip", clip_name, "--temporal", temporal, "--shots", "2",
            "--batch-size", "8", "--epochs", "2", "--alpha", "1", "--workers", "0", "--eval-every", "0",
            "--clips", "1", "--output", str(out), *extra]


def adapters_of(run):
    return torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)["adapters"]


@pytest.mark.slow
@pytest.mark.parametrize("clip_name, temporal", [("random-tiny", "conv"), ("random-ViCLIP-tiny", "attn")])
def test_train_py_micro_batches_and_checkpointing_match(tmp_path, clip_name, temporal):
    whole = tmp_path / "whole"
    train.main(train_args(whole, clip_name=clip_name, temporal=temporal))
    for name, extra in (("micro", ["--micro-batch", "3"]), ("ckpt", ["--grad-checkpointing", "--micro-batch", "4"])):
        train.main(train_args(tmp_path / name, *extra, clip_name=clip_name, temporal=temporal))
        assert_same_adapters(adapters_of(tmp_path / name), adapters_of(whole), 1e-2, 4)
    assert "micro-batches: 3 video(s) per pass, 3 passes" in (tmp_path / "micro" / "log.txt").read_text()


@pytest.mark.slow
def test_resume_with_micro_batches_is_exact(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train.main(train_args(whole, "--micro-batch", "2", "--epochs", "3"))
    steps = json.loads((whole / "results.json").read_text())["history"]
    assert len(steps) == 3
    # 8 classes x 2 shots = 16 videos: two steps an epoch; a stop after step 3 is a kill inside epoch 2.
    assert train.main(train_args(killed, "--micro-batch", "2", "--epochs", "3", "--max-steps", "3")) is None
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"] == 1
    train.main(train_args(killed, "--micro-batch", "2", "--epochs", "3", "--resume"))
    a, b = adapters_of(whole), adapters_of(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_two_processes_with_micro_batches_match_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = train_args(tmp_path / "x")[:-2]
    one = subprocess.run([sys.executable, "train.py", *common, "--output", str(tmp_path / "one")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_port=29531", "train.py", *common, "--micro-batch", "2",
                          "--output", str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert_same_adapters(adapters_of(tmp_path / "two"), adapters_of(tmp_path / "one"), 1e-2, 4)
    assert "2 passes per optimiser step of 4 video(s) per process" in (tmp_path / "two" / "log.txt").read_text()


def test_cuda_out_of_memory_is_one_line_and_keeps_the_run(tmp_path, monkeypatch, capsys):
    out, real, calls = tmp_path / "run", train.accumulate_step, []

    def runs_out_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # two steps an epoch: epoch 1 and its checkpoint are done
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)
    monkeypatch.setattr(train, "accumulate_step", runs_out_in_epoch_2)
    monkeypatch.setattr(precision, "native_bf16", lambda: True)  # the advice as on an sm80+ card (test_gpu_path.py)
    with pytest.raises(SystemExit) as stop:
        train.run(train_args(out, "--micro-batch", "4"))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: CUDA ran out of memory")
    assert "--micro-batch 2" in err and "--grad-checkpointing" in err and "--precision bf16" in err
    assert "--resume" in err and "Traceback" not in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1  # nothing of the run is lost
    assert "stopped: CUDA ran out of memory" in (out / "log.txt").read_text()
