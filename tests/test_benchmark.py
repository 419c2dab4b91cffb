"""benchmark.py on the random-tiny CLIP: the quick run writes every field the README reads, a configuration in
its own process answers with one JSON line, the analytic FLOP counts equal torch's FLOP counter, and the
ablation's switches change the cost of a step, never its result."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import benchmark  # noqa: E402

@pytest.fixture(autouse=True)
def keep_threads():
    """--quick runs on one thread; give the test session its own thread count back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


TRAIN_FIELDS = ("time_s", "times_s", "peak_bytes", "memory_measure", "flops", "flops_per_s", "utilisation",
                "trainable_params", "label")


def test_quick_run_writes_every_field(tmp_path):
    out = tmp_path / "benchmark.json"
    benchmark.main(["--quick", "--output", str(out)])
    r = json.loads(out.read_text())
    assert r["settings"]["model"] == "random-tiny" and r["settings"]["classes"] == 101
    assert r["ceiling"]["fp32"]["flops_per_s"] > 0
    assert list(r["train"]) == [k for k in benchmark.WORKERS if k not in ("infer", "data", "loader")]
    for name, row in r["train"].items():
        assert all(k in row for k in TRAIN_FIELDS), name
        assert row["time_s"] > 0 and row["flops"] > 0 and row["peak_bytes"] is not None
    assert r["train"]["off-all"]["off"] == sorted(benchmark.MEASURES)
    for key in ("single", "multi"):
        assert r["inference"][key]["clips_per_s"] > 0 and r["inference"][key]["videos_per_s"] > 0
    assert r["inference"]["multi"]["views"] == 15
    d = r["data"]
    assert d["frames"] == d["seconds"] * d["fps"] and len(d["indices"]) == 8
    assert d["sparse_s"] > 0 and d["full_decode_s"] > 0 and d["pipeline_clips_per_s"] > 0
    # The targets are read from this run's numbers: the first is the few-shot / full fine-tuning step-time ratio.
    assert len(r["targets"]) == 5
    time_ratio = r["train"]["msta-few-shot"]["time_s"] / r["train"]["full-ft"]["time_s"]
    assert r["targets"][0]["value"] == pytest.approx(time_ratio)
    assert r["targets"][0]["passed"] == (time_ratio <= benchmark.TARGETS["time"])
    # Issue 13: the three pipelines per worker core, their decoded pictures, the loader, and the two targets.
    for key in "abc":
        assert d["pipelines"][key]["clips_per_s"] > 0 and d["pipelines"][key]["decoded_per_clip"] > 0
    assert d["pipelines"]["b"]["decoded_per_clip"] == d["pipelines"]["c"]["decoded_per_clip"]
    assert d["pipelines"]["b"]["decoded_per_clip"] < d["pipelines"]["a"]["decoded_per_clip"]
    assert r["loader"]["clips_per_s"] > 0 and set(r["loader"]["wait_share"]) == {"2", "4", "8"}
    assert [t["name"] for t in r["data_targets"]] == ["pipeline_speedup", "decoded_pictures"]
    assert all(isinstance(t["passed"], bool) and t["value"] > 0 for t in r["data_targets"])


def test_worker_answers_with_one_json_line(tmp_path):
    proc = subprocess.run([sys.executable, "benchmark.py", "--worker", "msta-few-shot", "--quick",
                           "--cache-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["config"] == "msta-few-shot" and row["kind"] == "msta" and row["blocks"] == [3, 4]
    assert row["peak_bytes"] > 0 and len(row["times_s"]) == 1  # the training step allocates; --quick: 1 step


def math_attention(q, k, v, attn_mask=None):
    """softmax(q k^T / sqrt(d) + mask) v in plain matmuls, which torch's FLOP counter sees (its CPU kernel not)."""
    w = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    return (w if attn_mask is None else w + attn_mask).softmax(-1) @ v


@pytest.mark.parametrize("name", ["msta-few-shot", "msta-largest", "full-ft", "vit", "off-all", "off-cache"])
def test_flop_counts_equal_torch_counter(name, monkeypatch, tmp_path):
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", math_attention)
    args = benchmark.parse_args(["--quick", "--cache-dir", str(tmp_path)])
    step, facts, _ = benchmark.build_train_step(name, args)
    step()  # the first step fills the text cache, which later steps read
    with FlopCounterMode(display=False) as counter:
        step()
    # The count leaves out only the logits (B, E) @ (E, C): their forward and the two operands' gradients.
    logits = 0 if name == "vit" else 3 * benchmark.mm(facts["batch"], 64, facts["classes"])  # E = 64
    assert abs(counter.get_total_flops() - facts["flops"] - logits) <= 1e-6 * facts["flops"]


def test_ablation_changes_cost_not_result(tmp_path):
    args = benchmark.parse_args(["--quick", "--cache-dir", str(tmp_path)])
    reference = benchmark.build_train_step("msta-few-shot", args)[0]
    losses = [reference(), reference()]  # the second after one AdamW step: gradients must agree too
    for name in ["off-all"] + [f"off-{m}" for m in benchmark.MEASURES]:
        step = benchmark.build_train_step(name, args)[0]
        got = [step(), step()]
        assert torch.allclose(torch.stack(got), torch.stack(losses), rtol=1e-4, atol=1e-5), name
