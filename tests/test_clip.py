"""Tests for clip.py (CLIP, Radford et al. 2021): same weights in, same numbers out; golden token ids; file handling.

No network and no real weights: checkpoints are small random CLIPs written here in OpenAI's exact formats (a traced
TorchScript archive with fp16 weights and the scalar entries input_resolution / context_length / vocab_size, and a
plain state dict). The comparison with OpenAI's reference code runs only where the clip-anytorch package is
installed (not in CI). Shape legend as in clip.py: B images, N tokens, D width, E embedding, C texts, L length.
"""
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import urllib.error
import urllib.request
import warnings
import zipfile

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root: our clip.py
import clip  # noqa: E402
import weights  # noqa: E402
from conftest import SMALL, openai_shapes, random_openai_state_dict, save_torchscript  # noqa: E402

# (embed, resolution, vision layers, vision width, patch, context, vocab, text width, text layers) of the published
# ViTs, written out here independently of clip.py; heads are width // 64 in all of them.
PUBLISHED = {
    "ViT-B/32": (512, 224, 12, 768, 32, 77, 49408, 512, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 77, 49408, 768, 12),
}
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(state dict, path of the TorchScript archive, path of the plain state dict) of one small random CLIP."""
    d = tmp_path_factory.mktemp("ckpt")
    sd = random_openai_state_dict(SMALL)
    save_torchscript(sd, d / "small_ts.pt")
    torch.save(sd, d / "small_sd.pt")
    return sd, d / "small_ts.pt", d / "small_sd.pt"


def inputs(res=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    texts = ["a photo of a dog", "Apply Eye Makeup", "x", "playing the violin, outdoors, at night"]
    return torch.randn(3, 3, res, res, generator=g), clip.tokenize(texts)


# ------------------------------------------------------------------------------------------ loading files
def test_both_formats_load_to_the_same_model(checkpoints, monkeypatch):
    sd, ts_path, sd_path = checkpoints
    assert "constants.pkl" in {n.split("/", 1)[1] for n in zipfile.ZipFile(ts_path).namelist()}  # TorchScript
    with pytest.raises(Exception), warnings.catch_warnings():  # why clip.py reads archives itself:
        warnings.simplefilter("ignore")  # torch.load refuses them under weights_only=True
        torch.load(ts_path, weights_only=True)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("TorchScript must not be run"))
    (m_ts, _), (m_sd, _) = clip.load(ts_path), clip.load(str(sd_path))
    images, tokens = inputs()
    for m in (m_ts, m_sd):
        assert not m.training and all(p.dtype == torch.float32 for p in m.parameters())
        assert list(m.state_dict()) == list(sd)  # OpenAI's names and order, no rename table
        assert all(torch.equal(m.state_dict()[k], v.float()) for k, v in sd.items())
    assert m_ts.visual.input_resolution == 32 and m_ts.context_length == 77 and m_ts.vocab_size == 49408
    with torch.no_grad():
        assert torch.equal(m_ts.encode_image(images), m_sd.encode_image(images))
        assert torch.equal(m_ts.encode_text(tokens), m_sd.encode_text(tokens))
        logits_per_image, logits_per_text = m_ts(images, tokens)
    assert logits_per_image.shape == (3, 4) and torch.equal(logits_per_text, logits_per_image.t())


def test_archive_scalars_are_read(checkpoints):
    sd, ts_path, _ = checkpoints
    raw = weights.read_checkpoint(ts_path)
    assert set(raw) == set(sd) | {"input_resolution", "context_length", "vocab_size"}
    assert (int(raw["input_resolution"]), int(raw["context_length"]), int(raw["vocab_size"])) == (32, 77, 49408)
    assert raw["visual.conv1.weight"].dtype == torch.float16 and raw["token_embedding.weight"].dtype == torch.float32


def test_preprocess():
    from PIL import Image
    _, preprocess = clip.load("random-tiny")
    x = preprocess(Image.new("RGBA", (71, 45), (255, 0, 0, 128)))  # any size and mode -> (3, 32, 32)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[:, 0, 0], (torch.tensor([1.0, 0, 0]) - torch.tensor(clip.MEAN)) / torch.tensor(clip.STD))


@pytest.mark.parametrize("name", ["RN50", "RN50x64"])
def test_resnet_names_are_refused(name):
    with pytest.raises(clip.CLIPError, match="only ViT backbones are supported"):
        clip.load(name)


def test_bad_files_give_clear_errors(checkpoints, tmp_path):
    sd, ts_path, sd_path = checkpoints
    with pytest.raises(clip.CLIPError, match="neither a model name.*nor an existing file"):
        clip.load("ViT-B/99")
    with pytest.raises(clip.CLIPError, match="nor an existing file"):
        clip.load(str(tmp_path / "missing.pt"))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(clip.CLIPError, match="not a CLIP checkpoint: it has no visual.conv1.weight"):
        clip.load(tmp_path / "other.pt")
    resnet = {k: v for k, v in sd.items() if not k.startswith("visual.")}
    resnet["visual.layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(resnet, tmp_path / "rn.pt")
    with pytest.raises(clip.CLIPError, match="only ViT backbones are supported"):
        clip.load(tmp_path / "rn.pt")
    torch.save({k: v for k, v in sd.items() if k != "ln_final.bias"}, tmp_path / "partial.pt")
    with pytest.raises(clip.CLIPError, match="ln_final.bias"):
        clip.load(tmp_path / "partial.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(clip.CLIPError, match="neither a TorchScript archive nor a state dict"):
        clip.load(tmp_path / "junk.pt")
    for src in (ts_path, sd_path):
        data = src.read_bytes()
        (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
        with pytest.raises(clip.CLIPError, match="truncated"):
            clip.load(tmp_path / "cut.pt")


# --------------------------------------------------------------------------------------------- download
def serve(tmp_path, data, sha=None):
    """A file:// URL shaped like OpenAI's, .../<sha256>/ViT-B-16.pt, serving data (urllib handles file://)."""
    sha = sha or hashlib.sha256(data).hexdigest()
    f = tmp_path / "server" / sha / "ViT-B-16.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(data)
    return f.as_uri(), sha


def test_download_verifies_caches_and_replaces(checkpoints, tmp_path, monkeypatch):
    data = checkpoints[1].read_bytes()
    url, sha = serve(tmp_path, data)
    cache = tmp_path / "cache"
    monkeypatch.setitem(clip._MODELS, "ViT-B/16", url)
    model, _ = clip.load("ViT-B/16", download_root=str(cache))  # downloads, verifies, loads
    assert (cache / "ViT-B-16.pt").read_bytes() == data and model.visual.input_resolution == 32
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("a verified file is re-used"))
    clip.load("ViT-B/16", download_root=str(cache))
    monkeypatch.undo()
    (cache / "ViT-B-16.pt").write_bytes(data[:1000])  # a corrupt cached copy is replaced by a good download
    with pytest.warns(UserWarning, match="SHA-256"):
        assert weights.download(url, str(cache)) == str(cache / "ViT-B-16.pt")
    assert (cache / "ViT-B-16.pt").read_bytes() == data


def test_tampered_download_fails_the_sha256_check(tmp_path):
    good = b"the released weights"
    url, _ = serve(tmp_path, b"the released weights, tampered", sha=hashlib.sha256(good).hexdigest())
    with pytest.raises(clip.CLIPError, match="SHA-256"):
        weights.download(url, str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache") == []  # nothing kept, not even the partial file


def test_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(clip.CLIPError, match=f"put the file at {tmp_path / 'ViT-B-32.pt'}"):
        clip.load("ViT-B/32", download_root=str(tmp_path))


# ------------------------------------------------------------------------------------------------ tokens
# Golden ids from OpenAI's reference tokenizer (clip-anytorch 2.6.0, clip.tokenize with ftfy 6), printed once and
# pasted here: id lists without the zero padding.
GOLDEN = {
    "a photo of a dog.": [49406, 320, 1125, 539, 320, 1929, 269, 49407],
    "Café crème brûlée": [49406, 15304, 1075, 12138, 614, 711, 127, 119, 75, 13489, 49407],
    "naïve façade": [49406, 1097, 35689, 563, 778, 10067, 1928, 49407],
    "Tom &amp; Jerry &lt;3": [49406, 2435, 261, 9164, 283, 274, 49407],
    "I ❤️ my 🐶": [49406, 328, 1752, 607, 10631, 49407],
    "ApplyEyeMakeup": [49406, 882, 75, 693, 693, 5853, 49407],
    "Yo Yo": [49406, 3497, 3497, 49407],
    "it's they'll we've": [49406, 585, 568, 889, 1342, 649, 1200, 49407],
    "pi is 3.14159": [49406, 5357, 533, 274, 269, 272, 275, 272, 276, 280, 49407],
    "  multiple\t\nspaces  ": [49406, 6470, 9006, 49407],
    "日本語": [49406, 39121, 44353, 34002, 508, 49407],
    "mojibake cafÃ©": [49406, 617, 3252, 11878, 15304, 49407],
    "Pushing something from left to right": [49406, 11549, 2006, 633, 1823, 531, 1155, 49407],
    "": [49406, 49407],
    "<|endoftext|> in": [49406, 49407, 530, 49407],  # a literal special token stays one symbol
    "a <|startoftext|> b": [49406, 320, 49406, 321, 49407],
    "jekyll": [49406, 49405, 49407],  # the last of the 48,894 merges kept ("jeky" + "ll</w>")
    " ".join(["word"] * 100): [49406] + [2653] * 75 + [49407],  # 102 tokens, cut to 77 with truncate=True
}


@pytest.mark.parametrize("text", list(GOLDEN))
def test_golden_token_ids(text):
    ids = GOLDEN[text]
    expected = torch.zeros(1, 77, dtype=torch.long)
    expected[0, :len(ids)] = torch.tensor(ids)
    assert torch.equal(clip.tokenize(text, truncate=True), expected)


def test_too_long_text_raises_unless_truncated():
    long = " ".join(["word"] * 100)
    with pytest.raises(clip.CLIPError, match="truncate=True"):
        clip.tokenize(["short", long])
    assert clip.tokenize("hello", context_length=5).tolist() == [[49406, 3306, 49407, 0, 0]]
    assert clip.tokenize(long, context_length=8, truncate=True)[0, -1] == 49407  # the end token stays last


# ------------------------------------------------------------------------------------------------- model
def test_trimmed_text_encoding_equals_full_length(checkpoints):
    model = clip.build_model(checkpoints[0])
    _, tokens = inputs()
    with torch.no_grad():
        trimmed = model.encode_text(tokens)  # runs only up to the longest end token
        x = model.token_embedding(tokens) + model.positional_embedding  # (C, 77, D), all 77 positions
        full = model.text_head(model.transformer(x, model.attn_mask), tokens)
    assert model.text_embed(tokens)[0].shape[1] < 77
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)  # float rounding only


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_architecture_is_inferred_from_shapes(name):
    embed, res, v_layers, v_width, patch, ctx, vocab, t_width, t_layers = PUBLISHED[name]
    shapes = openai_shapes(*PUBLISHED[name])
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}  # shapes only, nothing allocated
    assert clip.vit_config(sd) == dict(
        embed_dim=embed, image_resolution=res, vision_patch_size=patch, vision_layers=v_layers,
        vision_width=v_width, vision_heads=v_width // 64, context_length=ctx, vocab_size=vocab,
        transformer_width=t_width, transformer_heads=t_width // 64, transformer_layers=t_layers)
    with torch.device("meta"):
        model = clip.CLIP(**clip.vit_config(sd))
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == list(shapes.items())
    assert model.visual.input_resolution == res


def test_vit_b16_parameter_count():
    model = clip.build_random("random-ViT-B/16", device="meta")
    total = sum(p.numel() for p in model.parameters())
    assert total == 149_620_737
    assert total - model.token_embedding.weight.numel() == 124_323_841


def test_random_tiny_is_deterministic_and_round_trips(tmp_path):
    a, b = clip.build_random("random-tiny"), clip.build_random("random-tiny")
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    torch.save(a.state_dict(), tmp_path / "tiny.pt")
    c, _ = clip.load(tmp_path / "tiny.pt")  # same architecture read back from the shapes (heads included)
    images, tokens = inputs()
    with torch.no_grad():
        assert a.encode_image(images).shape == (3, 64)
        torch.testing.assert_close(c(images, tokens), a(images, tokens))


# ------------------------------------------------------------------ golden numbers from OpenAI's own code
# OpenAI's reference implementation (clip-anytorch 2.6.0, openai/CLIP's code) run ONCE in a scratch environment on
# random_openai_state_dict(SMALL) and inputs() above: their build_model(sd).float(), then encode_image (first 4 of
# 64 features of the 3 images), encode_text (first 4 features of the 4 texts) and forward's logits_per_image;
# printed with torch 2.x on a CPU and pasted here. So CI, which has no clip-anytorch, still checks our numerics.
GOLDEN_IMAGE = [[0.44078183, -0.58905143, 0.33182600, -0.78314745],
                [-0.18763851, 0.25989234, 0.88584691, 0.17205544],
                [0.35499182, 1.48146069, 0.04399282, -0.15709050]]
GOLDEN_TEXT = [[1.64646363, 0.18206009, 0.34789333, 0.19634399],
               [1.28166163, 0.73002708, 0.32958937, 0.38009453],
               [1.53442526, 3.22724152, 2.27722836, -0.07468570],
               [0.55942881, 0.92849314, 0.66238809, -2.74807525]]
GOLDEN_LOGITS = [[-2.42355061, 0.14241076, 12.05895805, -5.86377001],
                 [-3.94870210, -5.78026390, 11.20891762, -5.11196518],
                 [1.38298512, -4.93640709, 16.96633339, -5.84340477]]


def test_golden_outputs_of_openai_reference(checkpoints):
    """Ours equals OpenAI's code's numbers on the same weights and inputs, from both checkpoint formats. Float
    rounding differs by ~1e-5 at most; each of these bugs planted in a copy of clip.py fails this test: the class
    token taken at index 1, no causal mask, the end token's index off by one, text positions sliced from 1, no
    vision positions, heads split wrongly, no ln_pre or ln_final, logit scale not exp'd; QuickGELU's 1.702 -> 1.7
    and LayerNorm eps 1e-5 -> 1e-6 move them by ~1e-3, 3-8x the tolerance (both are also pinned by hand below)."""
    _, ts_path, sd_path = checkpoints
    images, tokens = inputs()
    for model in (clip.load(ts_path)[0], clip.load(str(sd_path))[0]):
        with torch.no_grad():
            image, text = model.encode_image(images), model.encode_text(tokens)
            logits_per_image, _ = model(images, tokens)
        torch.testing.assert_close(image[:, :4], torch.tensor(GOLDEN_IMAGE), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(text[:, :4], torch.tensor(GOLDEN_TEXT), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits_per_image, torch.tensor(GOLDEN_LOGITS), rtol=1e-4, atol=1e-3)


def test_layer_norm_and_quick_gelu_by_hand():
    """LayerNorm with eps 1e-5 (PyTorch's default, which CLIP trained with), on inputs whose variance is small
    enough for eps to matter; QuickGELU x sigmoid(1.702 x) at hand-checked points."""
    model = clip.build_random("random-tiny")
    x = 1e-3 * torch.randn(5, 128, generator=torch.Generator().manual_seed(0))  # variance ~1e-6, eps 1e-5
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 4 * 2 + 3  # ln_1 and ln_2 of 8 blocks, ln_pre, ln_post, ln_final
    for m in norms:
        if m.weight.shape[0] != 128:
            continue
        centred = x - x.mean(-1, keepdim=True)
        expected = centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5) * m.weight + m.bias
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-6)
    gelu = model.transformer.resblocks[0].mlp.gelu
    # 1 / (1 + e^-1.702) = 0.845796..., so QuickGELU(1) = 0.845796 and QuickGELU(-2) = -2 / (1 + e^3.404)
    torch.testing.assert_close(gelu(torch.tensor([1.0, -2.0, 0.0])), torch.tensor([0.8457958, -0.0643414, 0.0]))


# ------------------------------------------------------------- optional: OpenAI's reference implementation
def reference_clip():
    """OpenAI's package (clip-anytorch), imported from its file under another name: our clip.py shadows it."""
    try:
        init = str(importlib.metadata.distribution("clip-anytorch").locate_file("clip/__init__.py"))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("clip-anytorch (OpenAI's reference code) is not installed")
    if "openai_clip" not in sys.modules:
        spec = importlib.util.spec_from_file_location("openai_clip", init,
                                                      submodule_search_locations=[os.path.dirname(init)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["openai_clip"] = module
        spec.loader.exec_module(module)
    return sys.modules["openai_clip"]


def assert_same_outputs(ours, theirs, images, tokens_list):
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        pairs = [(ours.encode_image(images), theirs.encode_image(images))]
        pairs += [(ours.encode_text(t), theirs.encode_text(t)) for t in tokens_list]
    for a, b in pairs:
        assert ((a - b).abs().max() / b.abs().max()) < 1e-4


def test_matches_reference_small_from_both_files(checkpoints):
    ref = reference_clip()
    _, ts_path, sd_path = checkpoints
    images, tokens = inputs()
    long = clip.tokenize(" ".join(["word"] * 100), truncate=True)
    for path in (ts_path, sd_path):
        theirs, their_pre = ref.load(str(path), device="cpu")
        ours, _ = clip.load(path)
        assert_same_outputs(ours, theirs, images, [tokens, torch.cat([tokens, long])])


def test_matches_reference_vit_b16_size():
    ref = reference_clip()
    sd = random_openai_state_dict(PUBLISHED["ViT-B/16"])
    theirs = ref.model.build_model(dict(sd)).float()  # as their load() does on CPU
    ours = clip.build_model(sd)
    images, tokens = inputs(res=224)
    assert_same_outputs(ours, theirs, images[:2], [tokens])


def test_tokenize_matches_reference_on_awkward_strings():
    ref = reference_clip()
    texts = ["Café crème", "&amp;amp; &quot;", "🙂🙃 emoji", "ÆØÅ", "\u200b zero width", "e\u0301",
             "<|endoftext|> in", "don't", "a a a aaaa", "$100 #tag @user", "tab\tnew\nline", "Ελληνικά", "中文 测试",
             "x" * 300]
    assert torch.equal(clip.tokenize(texts, truncate=True), ref.tokenize(texts, truncate=True))
