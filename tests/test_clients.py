"""Tests of the backbone clients, clients/openclip_backbone.py and clients/hf_backbone.py (docs/adapters.md):
adapters.py and one client, copied alone into an empty folder, wrap that library's CLIP built with random weights
(no download).

Each check runs in a subprocess whose working folder holds only copies of adapters.py and the client, so nothing
of this project can be imported there: tests/client_checks.py (run with `python -c`) for zeroed-adapter equivalence
to the library's own features, the parameter count, one training step and frame order; and the two examples of
docs/adapters.md, executed as written. The libraries come from requirements-test.txt.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = {"openclip": ("open_clip", "openclip_backbone.py"), "hf": ("transformers", "hf_backbone.py")}  # in clients/


def run_alone(folder, client, code, *args):
    """python -c code in `folder`, which holds only copies of adapters.py and the client: the finished process."""
    for name in ("adapters.py", os.path.join("clients", client)):
        shutil.copy(os.path.join(ROOT, name), folder)
    assert sorted(os.listdir(folder)) == sorted(["adapters.py", client])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # no download: every model here is built from a config
    # -E: PYTHONPATH and the like are ignored, so the only importable folder of ours is the working one.
    return subprocess.run([sys.executable, "-E", "-c", code, *args], cwd=folder, env=env, capture_output=True,
                          text=True)


@pytest.mark.slow
@pytest.mark.parametrize("library", CLIENTS)
def test_client_copied_alone_wraps_the_library(library, tmp_path):
    package, client = CLIENTS[library]
    pytest.importorskip(package)
    with open(os.path.join(ROOT, "tests", "client_checks.py")) as f:
        checks = f.read()
    out = run_alone(tmp_path, client, checks, library, "features", "count", "train", "order")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split("\n")[:4] == [f"{library} {c}: ok" for c in ("features", "count", "train", "order")]


def doc_examples():
    """{client file: code} of docs/adapters.md's python blocks, each naming its client in an import; the adapter
    pair's example (adapters.from_pair) is tests/test_pair.py's."""
    with open(os.path.join(ROOT, "docs", "adapters.md")) as f:
        blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if "from_pair" not in b]
    return {re.search(r"^from (\w+_backbone) import", code, re.M)[1] + ".py": code for code in blocks}


@pytest.mark.slow
@pytest.mark.parametrize("library", CLIENTS)
def test_doc_example_runs_as_written(library, tmp_path):
    package, client = CLIENTS[library]
    code = doc_examples()[client]  # each client has its example (a KeyError otherwise), checked even without
    pytest.importorskip(package)  # the library, which running it needs
    out = run_alone(tmp_path, client, code)
    assert out.returncode == 0, out.stdout + out.stderr
    # What the example says it prints (the comment after each print call) is what it prints.
    promised = re.findall(r"^print\(.*\)  # (.*)$", code, re.M)
    assert promised and out.stdout.splitlines() == promised
    assert os.path.getsize(tmp_path / "adapters.pt") > 6_900_000  # 1,744,000 fp32 adapter tensors and their keys


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path):
    """The README's open_clip example (section "Use the adapters in your own project"), as written."""
    pytest.importorskip("open_clip")
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if "openclip_backbone" in b]
    assert len(blocks) == 1
    out = run_alone(tmp_path, "openclip_backbone.py", blocks[0])
    assert out.returncode == 0, out.stdout + out.stderr
    promised = re.findall(r"^print\(.*\)  # (.*)$", blocks[0], re.M)
    assert promised and out.stdout.splitlines() == promised


def test_clients_keep_the_residual_stream_fp32_under_bf16_autocast():
    """Under CPU bf16 autocast, a random ViT-B/16-shaped open_clip model (QuickGELU, as OpenAI's weights) with the
    few-shot adapters (r 128, blocks 8-12): the stream entering the adapted blocks is fp32 in both towers, and the
    adapters' contribution to the video feature (MSTA's feature minus the frame mean) differs from fp32's no more
    than clip.py's does with the very same weights. The Hugging Face client's stream stays fp32 too."""
    open_clip = pytest.importorskip("open_clip")
    transformers = pytest.importorskip("transformers")
    import adapters
    import clip
    from clients.hf_backbone import HFBackbone
    from clients.openclip_backbone import OpenCLIPBackbone

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).eval()
    ours = clip.build_model({k: v for k, v in model.state_dict().items() if k != "attn_mask"})  # the same weights
    videos = torch.randn(1, 2, 3, 224, 224, generator=torch.Generator().manual_seed(1))  # (B, T, 3, H, W)
    tokens = clip.tokenize(["a video of archery."])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)

    def stream_dtypes(net, blocks):
        """dtypes of the inputs of the first adapted block (block 8, 0-based 7) and the one after it."""
        seen = []
        hooks = [b.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(args[0].dtype),
                                             with_kwargs=True) for b in blocks[7:9]]
        return seen, hooks

    def error(backbone):
        torch.manual_seed(0)  # the same adapters for both backbones
        net = adapters.MSTA(backbone, num_frames=2, rank=128, blocks=(8, 12), temporal="conv")
        with torch.no_grad():
            exact = net.encode_video(videos) - adapters.backbone_video_features(backbone, videos)  # (B, E)
            seen, hooks = stream_dtypes(net, backbone.vision_blocks)
            with autocast:
                approx = net.encode_video(videos).float()
                text_seen, text_hooks = stream_dtypes(net, backbone.text_blocks)
                net.encode_text(tokens)
                approx = approx - adapters.backbone_video_features(backbone, videos).float()
        for h in hooks + text_hooks:
            h.remove()
        assert set(seen[:2]) == {torch.float32} and set(text_seen[:2]) == {torch.float32}, (seen, text_seen)
        return ((approx - exact).norm() / exact.norm()).item()

    theirs, reference = error(OpenCLIPBackbone(model)), error(ours)
    assert 0 < theirs <= 1.1 * reference, (theirs, reference)  # equal up to kernel rounding (SDPA vs MHA)

    config = transformers.CLIPConfig(text_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                                      num_attention_heads=2),
                                     vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                                        num_attention_heads=2, image_size=32, patch_size=8),
                                     projection_dim=64)
    hf = HFBackbone(transformers.CLIPModel(config).eval())
    net = adapters.MSTA(hf, num_frames=2, rank=8, blocks=(2, 4), temporal="conv")
    seen = []
    hooks = [layer.layer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
             for layer in (*hf.vision_blocks[1:3], *hf.text_blocks[1:3])]
    with torch.no_grad(), autocast:
        net.encode_video(torch.randn(1, 2, 3, 32, 32))
        net.encode_text(clip.tokenize(["a video of archery."]))
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.float32}, seen
