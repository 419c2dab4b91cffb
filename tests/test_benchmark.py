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

from bench import tables  # noqa: E402
import benchmark  # noqa: E402
import losses  # noqa: E402
from bench.flops import mm  # noqa: E402
from conftest import math_attention  # noqa: E402

@pytest.fixture(autouse=True)
def keep_threads():
    """--quick runs on one thread; give the test session its own thread count back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


TRAIN_FIELDS = ("time_s", "times_s", "peak_bytes", "memory_measure", "flops", "flops_per_s", "utilisation",
                "trainable_params", "label", "ceiling")


@pytest.mark.slow
def test_quick_run_writes_every_field(tmp_path, capsys):
    out = tmp_path / "benchmark.json"
    benchmark.main(["--quick", "--output", str(out), "--markdown"])
    r = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert r["settings"]["model"] == "random-tiny" and r["settings"]["classes"] == 101
    native = r["machine"]["native_bf16"]
    groups = {"main", "ablation", "memory"} | ({"bf16"} if native else set())
    trains = [row["name"] for row in benchmark.ROWS if row["worker"] == "train" and row["group"] in groups]
    assert list(r["train"]) == trains
    for name, row in r["train"].items():
        assert all(k in row for k in TRAIN_FIELDS), name
        assert row["time_s"] > 0 and row["flops"] > 0 and row["peak_bytes"] > 0
        # The ceiling is the best rate of the steps' own ops: no step can be faster, so never above 100%.
        assert 0 < row["utilisation"] <= 1, name
        assert f"  {name} " in printed  # a progress line as each row finishes
    assert r["ceiling"]["fp32"]["flops_per_s"] >= max(row["flops_per_s"] for row in r["train"].values()
                                                      if row["precision"] == "fp32")
    assert set(r["ceiling"]) == {"fp32"} | ({"bf16"} if native else set())  # only the precisions the run used
    assert r["train"]["off-all"]["off"] == sorted(benchmark.MEASURES)
    assert r["train"]["msta-micro"]["micro"] == 1 and r["train"]["msta-ckpt"]["checkpointing"]
    for key in ("single", "multi"):
        assert r["inference"][key]["clips_per_s"] > 0 and 0 < r["inference"][key]["utilisation"] <= 1
    assert r["inference"]["multi"]["views"] == 15
    # Memory rows: per backbone and setting, each precision run with and without checkpointing.
    assert len(r["memory"]) == 4
    for cfg in r["memory"].values():
        assert [(m["precision"], m["checkpointing"]) for m in cfg["rows"]][:2] == [("fp32", False), ("fp32", True)]
        assert all(m["per_clip_bytes"] > 0 and m["fixed_bytes"] > 0 for m in cfg["rows"])
        plain, ckpt = cfg["rows"][:2]
        assert ckpt["per_clip_bytes"] < plain["per_clip_bytes"]  # what checkpointing is for
    assert "| backbone | adapters |" in printed  # --markdown: the memory table for docs/performance.md
    d = r["data"]
    assert d["frames"] == d["seconds"] * d["fps"] and len(d["indices"]) == 8
    assert d["sparse_s"] > 0 and d["full_decode_s"] > 0 and d["pipeline_clips_per_s"] > 0
    # The targets are read from this run's numbers: the first is the few-shot / full fine-tuning step-time ratio.
    assert len(r["targets"]) == 5
    time_ratio = r["train"]["msta-few-shot"]["time_s"] / r["train"]["full-ft"]["time_s"]
    assert r["targets"][0]["value"] == pytest.approx(time_ratio)
    assert r["targets"][0]["passed"] == (time_ratio <= tables.TARGETS["time"])
    # The loader rows: three pipelines per worker core, their decoded pictures, the loader, and the two targets.
    for key in "abc":
        assert d["pipelines"][key]["clips_per_s"] > 0 and d["pipelines"][key]["decoded_per_clip"] > 0
    assert d["pipelines"]["b"]["decoded_per_clip"] == d["pipelines"]["c"]["decoded_per_clip"]
    assert d["pipelines"]["b"]["decoded_per_clip"] < d["pipelines"]["a"]["decoded_per_clip"]
    assert r["loader"]["clips_per_s"] > 0 and set(r["loader"]["wait_share"]) == {"2", "4", "8"}
    assert [t["name"] for t in r["data_targets"]] == ["pipeline_speedup", "decoded_pictures"]
    assert all(isinstance(t["passed"], bool) and t["value"] > 0 for t in r["data_targets"])
    # --report prints the same table from the saved JSON, without measuring.
    again = benchmark.main(["--report", str(out)])
    assert again["train"].keys() == r["train"].keys() and "1. ceiling" in capsys.readouterr().out


@pytest.mark.slow
def test_without_native_bf16_the_bf16_rows_are_skipped_and_said(tmp_path, monkeypatch, capsys):
    """A CPU without avx512_bf16/amx_bf16 emulates bf16 (minutes a step): no bf16 row, no bf16 ceiling, no bf16
    memory row, and the table says why. Forced here with the override, on any machine."""
    monkeypatch.setenv("BENCHMARK_NATIVE_BF16", "0")
    out = tmp_path / "benchmark.json"
    benchmark.main(["--quick", "--output", str(out), "--only", "msta-few-shot", "stream-fp32", "stream-bf16",
                    "memory-clip-few-shot"])
    r = json.loads(out.read_text())
    assert list(r["train"]) == ["msta-few-shot"] and set(r["ceiling"]) == {"fp32"}
    assert [m["precision"] for m in r["memory"]["memory-clip-few-shot"]["rows"]] == ["fp32", "fp32"]
    assert any(line.startswith("bf16 rows: this CPU has no native bf16") for line in r["skipped"])
    assert "not run: bf16 rows" in capsys.readouterr().out


def test_native_bf16_detection(monkeypatch):
    from bench.measure import native_bf16
    monkeypatch.delenv("BENCHMARK_NATIVE_BF16", raising=False)
    monkeypatch.setattr("bench.measure.platform.machine", lambda: "x86_64")
    for flags, native in (({"avx2", "fma"}, False), ({"avx2", "avx512_bf16"}, True), ({"amx_bf16"}, True)):
        monkeypatch.setattr("bench.measure.cpu_flags", lambda flags=flags: flags)
        assert native_bf16(torch.device("cpu"))[0] is native
    monkeypatch.setenv("BENCHMARK_NATIVE_BF16", "1")
    assert native_bf16(torch.device("cpu")) == (True, "BENCHMARK_NATIVE_BF16=1")


@pytest.mark.slow
def test_memory_rows_add_up(tmp_path):
    """The memory table's model of a step at B videos, fixed + B x per clip: per clip is what each more video
    adds to the step's measured peak, and the sum never falls short of it (fixed counts the text branch's
    backward, which need not coincide with the videos' peak)."""
    import contextlib
    import train
    from bench.measure import StepProbe
    args = benchmark.parse_args(["--quick", "--cache-dir", str(tmp_path)])
    cfg = benchmark.memory_worker("memory-clip-few-shot", args)
    plain = cfg["rows"][0]
    row = benchmark.ROW["memory-clip-few-shot"]
    model, net, prompts, spatial, temporal = benchmark.build_model(dict(row, kind="msta"), args, torch.device("cpu"))
    s, t = benchmark.cached_description_features(net, spatial, temporal, len(prompts), str(tmp_path), "random-tiny")
    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    net.text_prefix(prompts)
    peaks = {}
    for B in (8, 16):
        videos = torch.randn(B, 8, 3, 32, 32)                                   # (B, T, 3, H, W)
        with StepProbe() as probe:
            train.accumulate_step(train.TrainStep(net), net, videos, torch.zeros(B, dtype=torch.long), prompts,
                                  (s, t), 1.0, B, contextlib.nullcontext(),
                                  torch.amp.GradScaler("cpu", enabled=False))
        peaks[B] = probe.peak
        assert probe.peak <= plain["fixed_bytes"] + B * plain["per_clip_bytes"]
    assert (peaks[16] - peaks[8]) / 8 == pytest.approx(plain["per_clip_bytes"], rel=0.05)


@pytest.mark.slow
def test_worker_answers_with_one_json_line(tmp_path):
    proc = subprocess.run([sys.executable, "benchmark.py", "--worker", "msta-few-shot", "--quick",
                           "--cache-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["config"] == "msta-few-shot" and row["kind"] == "msta" and row["blocks"] == [3, 4]
    assert row["peak_bytes"] > 0 and len(row["times_s"]) == 1  # the training step allocates; --quick: 1 step


@pytest.mark.slow
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
    logits = 0 if name == "vit" else 3 * mm(facts["batch"], 64, facts["classes"])  # E = 64
    assert abs(counter.get_total_flops() - facts["flops"] - logits) <= 1e-6 * facts["flops"]


@pytest.mark.slow
def test_ablation_changes_cost_not_result(tmp_path):
    args = benchmark.parse_args(["--quick", "--cache-dir", str(tmp_path)])
    reference = benchmark.build_train_step("msta-few-shot", args)[0]
    losses = [reference(), reference()]  # the second after one AdamW step: gradients must agree too
    for name in ["off-all"] + [f"off-{m}" for m in benchmark.MEASURES]:
        step = benchmark.build_train_step(name, args)[0]
        got = [step(), step()]
        assert torch.allclose(torch.stack(got), torch.stack(losses), rtol=1e-4, atol=1e-5), name
