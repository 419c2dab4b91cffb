"""The adapter pair (adapters.json + adapters.safetensors; docs/adapters.md "Take trained adapters anywhere"): what
train.py writes into every run folder, evaluate.py reading a folder that holds only the pair, the backbone
fingerprint across libraries, one-line refusals of a backbone the pair does not fit, and the pair loaded in a folder
holding only adapters.py, a client and the pair onto open_clip's and Hugging Face's CLIP built from the same
OpenAI-format weights, giving this project's logits: for a tiny run of train.py, and for a random ViT-B/16 whose
adapters are trained here for a few steps (tests/pair_checks.py runs in that folder).
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

import adapters
import clip
import evaluate
import losses
import prompts
import train
import viclip
import weights
from harness import runs
from pair_checks import library_model
from conftest import SMALL, openai_shapes, random_openai_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = {"openclip": ("open_clip", "openclip_backbone.py"), "hf": ("transformers", "hf_backbone.py")}
B16 = (512, 224, 12, 768, 16, 77, 49408, 512, 12)  # OpenAI's ViT-B/16: test_clip.openai_shapes' arguments
# Logits are 100 x cosine; between two float32 implementations of ViT-B/16 they differed by 8e-6 at most here.
ATOL = 1e-4


def file_of_weights(path, cfg, seed):
    """A random CLIP in OpenAI's format (names, fp16/fp32 mix), saved as a plain state dict: its path."""
    torch.save(random_openai_state_dict(cfg, seed), path)
    return str(path)


def project_logits(folder, videos):
    """This project's logits for `videos` from the adapter pair in `folder`: clip.py's backbone, the pair's prompts."""
    ckpt = runs.read_checkpoint(folder)
    model = evaluate.trained_msta(ckpt, torch.device("cpu")).eval()
    tokens = prompts.class_tokens(ckpt["args"]["classnames"])
    with torch.no_grad():
        return model(videos, tokens), tokens


def run_alone(folder, client, pair, *args):
    """tests/pair_checks.py with `python -c` in `folder`, which holds only adapters.py, the client and the pair."""
    for path in (os.path.join(ROOT, "adapters.py"), os.path.join(ROOT, "clients", client),
                 *weights.pair_paths(pair)):
        shutil.copy(path, folder)
    assert sorted(os.listdir(folder)) == sorted(["adapters.py", client, *weights.PAIR_FILES])
    with open(os.path.join(ROOT, "tests", "pair_checks.py")) as f:
        code = f.read()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # -E: PYTHONPATH and the like are ignored, so the only importable folder of ours is the working one.
    return subprocess.run([sys.executable, "-E", "-c", code, *args], cwd=folder, env=env, capture_output=True,
                          text=True)


# ------------------------------------------------------------------------------- a tiny run of train.py
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run folder, OpenAI-format weights file): train.py on the synthetic videos, 2 epochs with 2 real steps."""
    d = tmp_path_factory.mktemp("pair")
    weights_file = file_of_weights(d / "clip_small.pt", SMALL, seed=0)
    train.main(["--dataset", "synthetic", "--clip", weights_file, "--shots", "1", "--epochs", "2",
                "--warmup-epochs", "0", "--batch-size", "8", "--workers", "0", "--blocks", "1-2", "--rank", "8",
                "--frames", "4", "--output", str(d / "run")])
    return d / "run", weights_file


@pytest.mark.slow
def test_every_run_folder_holds_the_pair(tiny_run):
    run, weights_file = tiny_run
    config = json.loads((run / "adapters.json").read_text())
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    args = ckpt["args"]
    assert config["format"] == "msta-adapters" and config["version"] == adapters.__version__
    assert config["backbone"]["name"] == weights_file and config["backbone"]["token_layout"] == "frames"
    assert config["backbone"]["fingerprint"] == adapters.fingerprint(clip.load(weights_file)[0])
    assert config["msta"] == dict(num_frames=4, rank=8, blocks=[1, 2], scale=args["scale"], temporal="attn")
    assert config["text"]["template"].replace("{class}", "x") == "a video of x."
    assert config["text"]["classnames"] == args["classnames"] and len(args["classnames"]) == 8
    assert config["run"]["dataset"] == "synthetic" and config["run"]["epochs"] == 2
    # The tensors are trainable_state_dict() of the last epoch, equal to checkpoint.pt's, and say their epoch.
    with safe_open(run / "adapters.safetensors", "pt") as f:
        assert f.metadata()["epoch"] == "2"
        assert sorted(f.keys()) == sorted(ckpt["adapters"])
        for k in f.keys():
            assert torch.equal(f.get_tensor(k), ckpt["adapters"][k]), k
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]  # written atomically: no temporary file left


@pytest.mark.slow
def test_the_pair_is_json_and_safetensors_without_pickle(tiny_run, tmp_path):
    run, _ = tiny_run
    for name in weights.PAIR_FILES:
        shutil.copy(run / name, tmp_path)
    # In a folder holding only the pair, with json and safetensors alone (its numpy reader: no torch either).
    code = ("import json; from safetensors.numpy import load_file; c = json.load(open('adapters.json')); "
            "t = load_file('adapters.safetensors'); print(c['format'], len(t), sum(v.size for v in t.values()))")
    out = subprocess.run([sys.executable, "-E", "-c", code], cwd=tmp_path, capture_output=True, text=True)
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["adapters"]
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["msta-adapters", str(len(saved)), str(sum(v.numel() for v in saved.values()))]
    # The safetensors layout by hand: an 8-byte header length, a JSON header, then raw float32 data that the
    # header's offsets cover exactly. Nothing else is in the file: nothing to unpickle.
    text, size, data = header(run)
    entries = {k: v for k, v in json.loads(text).items() if k != "__metadata__"}
    assert all(v["dtype"] == "F32" for v in entries.values())
    spans = sorted(tuple(v["data_offsets"]) for v in entries.values())
    assert spans[0][0] == 0 and spans[-1][1] == data and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert os.path.getsize(run / "adapters.safetensors") == 8 + size + data


def header(run):
    """(the safetensors header's JSON text, its length, the number of data bytes after it)."""
    with open(run / "adapters.safetensors", "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        text = f.read(size).decode()
    return text, size, os.path.getsize(run / "adapters.safetensors") - 8 - size


@pytest.mark.slow
@pytest.mark.parametrize("library", CLIENTS)
def test_a_runs_pair_in_an_empty_folder_gives_this_projects_logits(library, tiny_run, tmp_path):
    package, client = CLIENTS[library]
    pytest.importorskip(package)
    run, weights_file = tiny_run
    videos = torch.randn(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, T, 3, H, W)
    want, tokens = project_logits(run, videos)
    torch.save({"videos": videos, "tokens": tokens}, tmp_path / "inputs.pt")
    (tmp_path / "project").mkdir()
    out = run_alone(tmp_path / "project", client, run, library, weights_file, str(tmp_path / "inputs.pt"),
                    str(tmp_path / "logits.pt"))
    assert out.returncode == 0, out.stdout + out.stderr
    got = torch.load(tmp_path / "logits.pt", weights_only=True)["logits"]
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # Other weights of the same architecture are refused there too, in one line.
    other = file_of_weights(tmp_path / "other.pt", SMALL, seed=1)
    shutil.rmtree(tmp_path / "project")
    (tmp_path / "project").mkdir()
    out = run_alone(tmp_path / "project", client, run, library, other, str(tmp_path / "inputs.pt"),
                    str(tmp_path / "logits.pt"))
    assert out.returncode == 3 and out.stderr.count("\n") == 1 and "weights_may_differ=True" in out.stderr


def pair_alone(run, folder):
    """A folder holding only copies of a run's adapter pair: the folder."""
    folder.mkdir()
    for name in weights.PAIR_FILES:
        shutil.copy(run / name, folder)
    return folder


@pytest.mark.slow
def test_evaluate_reads_a_folder_holding_only_the_pair(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    only = pair_alone(run, tmp_path / "only-the-pair")
    trained = json.loads((run / "results.json").read_text())
    evaluate.main(["--checkpoint", str(only), "--workers", "0"])
    again = json.loads((only / "eval-synthetic-few-shot" / "results.json").read_text())
    assert again["top1"] == pytest.approx(trained["top1"]) and again["rows"][0]["videos"] == 128
    # --video with either file of the pair: the run's class names, from the JSON.
    video = os.path.join(ROOT, "docs", "square_right.mp4")
    capsys.readouterr()
    evaluate.main(["--checkpoint", str(only / "adapters.safetensors"), "--video", video, "--workers", "0"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(video) and len(lines) == 6
    assert all(line.split("%  ")[1] in trained["args"]["classnames"] for line in lines[1:])


@pytest.mark.slow
def test_evaluate_refuses_a_pair_whose_backbone_changed(tiny_run, tmp_path):
    run, _ = tiny_run
    only = pair_alone(run, tmp_path / "pair")
    config = json.loads((only / "adapters.json").read_text())
    config["backbone"]["name"] = file_of_weights(tmp_path / "changed.pt", SMALL, seed=1)
    (only / "adapters.json").write_text(json.dumps(config))
    out = subprocess.run([sys.executable, "evaluate.py", "--checkpoint", str(only), "--video",
                          os.path.join(ROOT, "docs", "square_right.mp4"), "--workers", "0"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"error: {only}: this backbone's weights are not those of")


# ------------------------------------------------------------------------ fingerprint and refusals
def test_fingerprint_is_one_across_libraries_and_precisions_and_differs_for_other_weights():
    sd = random_openai_state_dict(SMALL, seed=0)
    ours = adapters.fingerprint(clip.build_model(dict(sd)))
    for library, (package, _) in CLIENTS.items():
        if pytest.importorskip(package):
            assert adapters.fingerprint(library_model(library, dict(sd))) == ours, library
    rounded = clip.build_model(dict(sd)).half()  # held in fp16 or in fp32, the same values: the same weights
    assert adapters.fingerprint(rounded) == adapters.fingerprint(rounded.float()) != ours
    assert adapters.fingerprint(clip.build_model(random_openai_state_dict(SMALL, seed=1))) != ours
    changed = clip.build_model(dict(sd))
    with torch.no_grad():
        changed.transformer.resblocks[1].mlp.c_proj.weight[3, 5] += 1e-3  # one weight of 7 million
    assert adapters.fingerprint(changed) != ours


def small_pair(seed=0):
    """(config, tensors) of MSTA on the SMALL CLIP whose weights have this seed, adapters as initialised."""
    model = adapters.MSTA(clip.build_model(random_openai_state_dict(SMALL, seed)), num_frames=4, rank=8,
                          blocks=(1, 2), temporal="conv")
    return adapters.pair_config(model, "clip_small.pt", ["a", "b"], prompts.DEFAULT_TEMPLATE), model.trainable_state_dict()


@pytest.mark.parametrize("backbone, says", [
    (lambda: clip.build_model(random_openai_state_dict(SMALL, seed=1)), "weights are not those of clip_small.pt"),
    (lambda: clip.build_random("random-tiny"), "2/2 blocks (vision/text); this backbone is 128/128 wide with 4/4"),
    (lambda: viclip.build_random("random-ViCLIP-tiny"), "token layout is 'frames'; this backbone's is 'joint'"),
])
def test_a_backbone_the_pair_does_not_fit_is_refused_in_one_line(backbone, says):
    config, tensors = small_pair()
    with pytest.raises(adapters.PairMismatch) as e:
        adapters.from_pair(backbone(), config, tensors)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_weights_meant_to_differ_are_accepted_and_the_files_must_be_one_pair():
    config, tensors = small_pair()
    other = clip.build_model(random_openai_state_dict(SMALL, seed=1))
    model = adapters.from_pair(other, config, tensors, weights_may_differ=True)
    assert all(torch.equal(tensors[k], v) for k, v in model.trainable_state_dict().items())
    bigger = {**config, "msta": {**config["msta"], "rank": 16}}
    with pytest.raises(adapters.PairMismatch, match="not one pair"):
        adapters.from_pair(other, bigger, tensors, weights_may_differ=True)
    with pytest.raises(adapters.PairMismatch, match="not an MSTA adapter config"):
        adapters.from_pair(other, {"r": 8}, tensors)
    with pytest.raises(adapters.PairMismatch, match="no 'backbone' entry"):
        adapters.from_pair(other, {"format": "msta-adapters"}, tensors)
    assert adapters.pair_prompts(config) == ["a video of a.", "a video of b."]


def test_reading_a_missing_or_broken_pair_is_one_line(tmp_path):
    config, tensors = small_pair()
    weights.write_pair(str(tmp_path), config, tensors)
    (tmp_path / "adapters.json").unlink()
    with pytest.raises(weights.PairError, match="adapters.json missing"):
        weights.read_pair(str(tmp_path))
    weights.write_pair(str(tmp_path), config, tensors)
    (tmp_path / "adapters.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(weights.PairError, match="unreadable safetensors file") as e:
        weights.read_pair(str(tmp_path / "adapters.json"))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------- ViT-B/16: trained here, used in open_clip / HF
@pytest.mark.slow
def test_vit_b16_adapters_trained_here_give_the_same_logits_in_open_clip_and_hugging_face(tmp_path):
    """OpenAI-format random ViT-B/16 weights; the paper's adapters (conv, r 128 in blocks 8-12) trained here for
    3 steps on clip.py's model; the pair loaded onto open_clip's and Hugging Face's CLIP in a folder holding only
    adapters.py, the client and the pair: the same logits."""
    weights_file = file_of_weights(tmp_path / "vit_b16.pt", B16, seed=0)
    model = adapters.MSTA(clip.load(weights_file)[0], num_frames=2, rank=128, blocks=(8, 12), temporal="conv")
    g = torch.Generator().manual_seed(0)
    videos, labels = torch.randn(2, 2, 3, 224, 224, generator=g), torch.tensor([0, 2])  # (B, T, 3, H, W)
    classnames = ["archery", "juggling balls", "surfing water"]
    tokens = prompts.class_tokens(classnames)                                               # (C, 77)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    autocast, scaler = runs.autocast_for(torch.device("cpu"), "fp32"), torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(3):  # train.py's own step
        train.train_step(train.TrainStep(model.train()), optimizer, scaler, autocast, 1e-3, videos, labels, tokens)
    assert all(not torch.equal(before[k], v) for k, v in model.trainable_state_dict().items() if "weight" in k)
    run = tmp_path / "run"
    run.mkdir()
    weights.write_pair(str(run), adapters.pair_config(model, weights_file, classnames, prompts.DEFAULT_TEMPLATE),
                       model.trainable_state_dict())
    assert 6_980_000 < os.path.getsize(run / "adapters.safetensors") < 7_000_000  # 1,744,000 float32 + header
    with torch.no_grad():
        want = model.eval()(videos, tokens)                                                 # (B, C)
        assert losses.classification_loss(want, labels) > 0
    torch.save({"videos": videos, "tokens": tokens}, tmp_path / "inputs.pt")
    for library, (package, client) in CLIENTS.items():
        pytest.importorskip(package)
        (tmp_path / library).mkdir()
        out = run_alone(tmp_path / library, client, run, library, weights_file, str(tmp_path / "inputs.pt"),
                        str(tmp_path / f"{library}.pt"))
        assert out.returncode == 0, out.stdout + out.stderr
        got = torch.load(tmp_path / f"{library}.pt", weights_only=True)["logits"]
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # docs/adapters.md's worked example, as written but for the weights: this file instead of OpenAI's download.
    code = doc_example()
    assert code.count('pretrained="openai"') == 1
    code = code.replace('pretrained="openai"', f"pretrained={weights_file!r}")
    out = subprocess.run([sys.executable, "-E", "-c", code], cwd=tmp_path / "openclip", capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    promised = re.findall(r"^print\(.*\)  # (.*)$", code, re.M)
    assert len(promised) == 2 and out.stdout.splitlines() == promised


def doc_example():
    """The python block of docs/adapters.md that loads a pair (adapters.from_pair)."""
    with open(os.path.join(ROOT, "docs", "adapters.md")) as f:
        blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if "from_pair" in b]
    assert len(blocks) == 1
    return blocks[0]
