"""Shared test helpers and fixtures, found by pytest for every file under tests/ (test files import nothing from one
another: what two of them need lives here, and a test file takes it with `from conftest import ...`).

- small videos written with PyAV, miniature dataset trees in the official layouts (UCF101, HMDB51, Kinetics, SSv2),
  and "id videos" whose flat colours say which video and which frame they are, so a test reads back what was served;
- tiny CLIP checkpoints in OpenAI's released formats (random_openai_state_dict, save_torchscript) and seeded ViCLIP
  weights in ViCLIP's own key names and order (viclip_state_dict), written from the shapes alone, not by the code
  under test;
- a stub of MSTA's evaluation interface with known logits (Stub, Items, TABLE), for the metric path;
- math_attention, attention in plain matmuls that torch's FLOP counter sees.
"""
import csv
import fractions
import json
import os
import shutil
import types
import warnings
from collections import OrderedDict

import av
import numpy as np
import pytest
import torch

import clip
from video import transforms

# ---------------------------------------------------------------- videos and dataset trees (PyAV)

def frames(n, w, h, seed=0):
    """n RGB frames (h, w, 3) uint8: moving gradients, a moving bar, noise, and a scene cut every 37 frames, so that
    encoders make real I/P/B frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0], img[..., 1] = (xx * 3 + 5 * i) % 256, (yy * 4 + 2 * i) % 256
        x = int((w - 8) * (0.5 + 0.5 * np.sin(i / 5)))
        img[h // 4:h // 2, x:x + 8, 2] = 255
        if i % 37 == 36:
            img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        yield img + rng.integers(0, 16, img.shape, dtype=np.uint8)


def write_video(path, codec="libx264", n=48, w=64, h=48, fps=25, options=None, bframes=None, gop=None,
                vfr=False, fmt=None, pix_fmt="yuv420p", seed=0):
    """Encode a test video; vfr=True gives irregular frame durations (millisecond time base)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with av.open(path, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if options:
            stream.options = options
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if gop is not None:
            stream.codec_context.gop_size = gop
        if vfr:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        t, rng = 0, np.random.default_rng(seed + 1)
        for img in frames(n, w, h, seed):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if vfr:
                frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
                t += int(rng.choice([20, 33, 40, 67]))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def full_decode(path):
    """The reference: every frame of a plain sequential decode, as RGB arrays."""
    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def place(src, dst):
    """Copy a fixture video to a dataset path (identical content is enough for layout tests)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)


def ucf101_tree(root, src, classes=("ApplyEyeMakeup", "HandstandPushups", "YoYo"), groups=8, clips=2,
                test_groups=2, folder_names=None):
    """UCF101 layout: UCF-101/<Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/ with CRLF line ends. Groups
    1..test_groups are the split-1 test set (the real split 1 tests groups 1-7). folder_names maps a class to
    the spelling used on disk (the real HandStandPushups quirk)."""
    folder_names = folder_names or {"HandstandPushups": "HandStandPushups"}
    lists = os.path.join(root, "ucfTrainTestlist")
    os.makedirs(lists, exist_ok=True)
    train, test = [], []
    for label, cls in enumerate(classes, 1):
        disk = folder_names.get(cls, cls)
        for g in range(1, groups + 1):
            for c in range(1, clips + 1):
                name = f"v_{disk}_g{g:02d}_c{c:02d}.avi"
                place(src, os.path.join(root, "UCF-101", disk, name))
                # The official lists spell the folder as classInd does and the file as on disk.
                (test if g <= test_groups else train).append((f"{cls}/{name}", label))
    with open(os.path.join(lists, "classInd.txt"), "w", newline="") as f:
        f.writelines(f"{i} {c}\r\n" for i, c in enumerate(classes, 1))
    for s in (1, 2, 3):
        with open(os.path.join(lists, f"trainlist0{s}.txt"), "w", newline="") as f:
            f.writelines(f"{p} {lab}\r\n" for p, lab in train)
        with open(os.path.join(lists, f"testlist0{s}.txt"), "w", newline="") as f:
            f.writelines(f"{p}\r\n" for p, _ in test)
    return train, test


def hmdb51_tree(root, src, classes, per_class=(4, 2, 1)):
    """HMDB51 layout: <class>/<video>.avi and testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt with
    per_class = (train, test, unused) videos tagged 1, 2, 0. Split s moves the test set by s videos. Returns
    {split: {video name: tag}}."""
    splits = os.path.join(root, "testTrainMulti_7030_splits")
    os.makedirs(splits, exist_ok=True)
    n, written = sum(per_class), {1: {}, 2: {}, 3: {}}  # split -> {video name: tag}
    for cls in classes:
        names = [f"{cls}_video_{i}_u_nm_np1_fr_med_{i}.avi" for i in range(n)]
        for name in names:
            place(src, os.path.join(root, cls, name))
        for s in (1, 2, 3):
            tags = ["1"] * per_class[0] + ["2"] * per_class[1] + ["0"] * per_class[2]
            tags = tags[-s:] + tags[:-s]
            written[s].update(zip(names, tags))
            with open(os.path.join(splits, f"{cls}_test_split{s}.txt"), "w") as f:
                f.writelines(f"{name} {tag} \n" for name, tag in zip(names, tags))  # the real files end lines with " "
    return written


def kinetics_tree(root, src, videos, csv_rows=None):
    """Kinetics layout: {train,val}/<class folder>/<youtube_id>_<start>_<end>.mp4; videos = [(split, folder, id)].
    csv_rows = {split: [(label, youtube_id)]} writes annotations/<split>.csv as the official CSVs do."""
    for split, folder, yid in videos:
        place(src, os.path.join(root, split, folder, f"{yid}_000010_000020.mp4"))
    for split, rows in (csv_rows or {}).items():
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        with open(os.path.join(root, "annotations", f"{split}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            w.writerows([label, yid, 10, 20, split] for label, yid in rows)


def ssv2_tree(root, src, templates, train, validation):
    """SSv2 layout: 20bn-something-something-v2/<id>.webm and labels/{labels,train,validation}.json; train and
    validation are [(id, template index)]; json templates carry the [something] brackets."""
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    with open(os.path.join(root, "labels", "labels.json"), "w") as f:
        json.dump({t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates)}, f)
    for name, entries in (("train", train), ("validation", validation)):
        with open(os.path.join(root, "labels", f"{name}.json"), "w") as f:
            json.dump([{"id": str(vid), "label": "x", "template": templates[t], "placeholders": ["x"]}
                       for vid, t in entries], f)
        for vid, _ in entries:
            place(src, os.path.join(root, "20bn-something-something-v2", f"{vid}.webm"))


# ---------------------------------------------------------------- videos that say who they are
# Every frame of an "id video" is one flat colour: red = 20 + 10 * video id, green = 20 + 10 * frame index, blue
# 128, in lossless FFV1 AVIs. Flat colours survive resizing and cropping too, so a test can read back from a served
# tensor which video and which frames it holds: fixtures whose content differs per video, class and split.
ID_STEP, ID_BASE = 10, 20


def write_id_video(path, vid, n=24, w=32, h=24):
    """A video of n flat frames that carry (vid, frame index), see above; vid and n at most 23."""
    assert 0 <= vid <= 23 and n <= 24
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"  # lossless RGB: mpeg4 was off by up to 5
        for i in range(n):
            img = np.empty((h, w, 3), np.uint8)
            img[...] = (ID_BASE + ID_STEP * vid, ID_BASE + ID_STEP * i, 128)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_ids(clip, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)):
    """(video id, [frame indices]) of a served clip (T, 3, H, W), normalised with CLIP's mean and std."""
    rgb = [(clip[:, c].float().mean((1, 2)) * std[c] + mean[c]) * 255 for c in (0, 1)]  # 2 x (T,)
    vids = ((rgb[0] - ID_BASE) / ID_STEP).round().long().unique().tolist()
    assert len(vids) == 1, vids  # one video per clip, never frames of two videos mixed
    return vids[0], ((rgb[1] - ID_BASE) / ID_STEP).round().long().tolist()


def ucf101_id_tree(root, classes, groups=3, n=24):
    """UCF101 layout of id videos, one clip per (class, group); split s tests group s and trains on the others,
    so the three splits' test sets differ. Returns {vid: (class index, group)}; vid = class index * groups +
    group - 1."""
    lists = os.path.join(root, "ucfTrainTestlist")
    os.makedirs(lists, exist_ok=True)
    table, rows = {}, []
    for c, cls in enumerate(classes):
        for g in range(1, groups + 1):
            vid = c * groups + g - 1
            name = f"v_{cls}_g{g:02d}_c01.avi"
            write_id_video(os.path.join(root, "UCF-101", cls, name), vid, n=n)
            table[vid] = (c, g)
            rows.append((f"{cls}/{name}", c + 1, g))
    with open(os.path.join(lists, "classInd.txt"), "w", newline="") as f:
        f.writelines(f"{i} {c}\r\n" for i, c in enumerate(classes, 1))
    for s in (1, 2, 3):
        with open(os.path.join(lists, f"trainlist0{s}.txt"), "w", newline="") as f:
            f.writelines(f"{p} {lab}\r\n" for p, lab, g in rows if g != s)
        with open(os.path.join(lists, f"testlist0{s}.txt"), "w", newline="") as f:
            f.writelines(f"{p}\r\n" for p, _, g in rows if g == s)
    return table


# ---------------------------------------------------------------- tiny CLIP checkpoints in OpenAI's formats
# (embed, resolution, vision layers, vision width, patch, context, vocab, text width, text layers); heads = width // 64.
SMALL = (64, 32, 2, 128, 8, 77, 49408, 128, 2)  # 2 heads of 64 per tower, N = 1 + 4^2 = 17 tokens


def openai_shapes(embed, res, v_layers, v_width, patch, ctx, vocab, t_width, t_layers):
    """OpenAI's state-dict keys, in the released checkpoints' order, with their shapes."""
    def blocks(prefix, width, layers):
        for i in range(layers):
            p = f"{prefix}resblocks.{i}."
            yield from [(p + "attn.in_proj_weight", (3 * width, width)), (p + "attn.in_proj_bias", (3 * width,)),
                        (p + "attn.out_proj.weight", (width, width)), (p + "attn.out_proj.bias", (width,)),
                        (p + "ln_1.weight", (width,)), (p + "ln_1.bias", (width,)),
                        (p + "mlp.c_fc.weight", (4 * width, width)), (p + "mlp.c_fc.bias", (4 * width,)),
                        (p + "mlp.c_proj.weight", (width, 4 * width)), (p + "mlp.c_proj.bias", (width,)),
                        (p + "ln_2.weight", (width,)), (p + "ln_2.bias", (width,))]
    return OrderedDict([
        ("positional_embedding", (ctx, t_width)), ("text_projection", (t_width, embed)), ("logit_scale", ()),
        ("visual.class_embedding", (v_width,)), ("visual.positional_embedding", ((res // patch) ** 2 + 1, v_width)),
        ("visual.proj", (v_width, embed)), ("visual.conv1.weight", (v_width, 3, patch, patch)),
        ("visual.ln_pre.weight", (v_width,)), ("visual.ln_pre.bias", (v_width,)),
        *blocks("visual.transformer.", v_width, v_layers),
        ("visual.ln_post.weight", (v_width,)), ("visual.ln_post.bias", (v_width,)),
        *blocks("transformer.", t_width, t_layers),
        ("token_embedding.weight", (vocab, t_width)), ("ln_final.weight", (t_width,)), ("ln_final.bias", (t_width,)),
    ])


def is_fp16_in_release(key):
    """OpenAI's released weights are fp16 for convolutions, linear layers and projections, fp32 for the rest."""
    return (key.endswith(("in_proj_weight", "in_proj_bias", "proj", "text_projection", "conv1.weight"))
            or ".mlp." in key or ".out_proj." in key)


def random_openai_state_dict(cfg, seed=0):
    """A random CLIP state dict in OpenAI's exact format: their names, order and fp16/fp32 mix."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for key, shape in openai_shapes(*cfg).items():
        if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key == "logit_scale":
            t = torch.tensor(4.6052)  # log(100), the released models' value
        else:  # fan-in scaled so activations stay O(1) through the layers
            std = 0.02 if key.endswith("bias") or len(shape) < 2 else shape[-1] ** -0.5
            t = std * torch.randn(shape, generator=g)
        sd[key] = t.half() if is_fp16_in_release(key) else t
    return sd


def save_torchscript(sd, path):
    """Trace a CLIP holding sd's fp16/fp32 weights and save it as OpenAI's released .pt files are: a TorchScript
    archive whose state also holds 0-d input_resolution, context_length and vocab_size, and no causal mask."""
    model = clip.build_model(sd)
    for name, p in model.named_parameters():
        p.data = p.data.to(sd[name].dtype)  # back to the release's fp16/fp32 mix
    model.attn_mask = model._buffers.pop("attn_mask")  # a plain attribute: tracing bakes it in as a constant
    del model.context_length, model.vocab_size  # these names become tensors, as in OpenAI's archive
    res = model.visual.input_resolution
    for name, value in (("input_resolution", res), ("context_length", 77), ("vocab_size", 49408)):
        model.register_buffer(name, torch.tensor(value))
    images, tokens = torch.randn(2, 3, res, res).half(), clip.tokenize(["a dog", "a cat"])
    with warnings.catch_warnings():  # the tracer's notes on the text trimming: the graph is never run here
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(model, {"forward": (images, tokens), "encode_image": (images,),
                                                "encode_text": (tokens,)}, check_trace=False)
    traced.save(str(path))


@pytest.fixture(scope="session")
def small_clip_file(tmp_path_factory):
    """The path of a small random CLIP (SMALL, seed 0) saved as a plain state dict in OpenAI's names and fp16/fp32
    mix: what a user's --clip file looks like, for the runs of train.py and evaluate.py."""
    path = tmp_path_factory.mktemp("clip") / "clip_small.pt"
    torch.save(random_openai_state_dict(SMALL), path)
    return str(path)


# ---------------------------------------------------------------- seeded ViCLIP weights in ViCLIP's own format
# The golden numbers in test_viclip.py were made by feeding viclip_state_dict and videos to ViCLIP's reference code
# in a scratch environment (see test_viclip.py's docstring); the tests feed the same to viclip.py.
# (embed E, resolution, vision blocks, vision width, patch, frames T0, text width, text blocks); heads = width // 64.
VICLIP_TINY = (64, 32, 2, 128, 8, 8, 128, 2)
VICLIP_B16 = (512, 224, 12, 768, 16, 8, 512, 12)
TEXTS = ["a video of archery.", "Someone plays the cello in a dimly lit room, slowly!",
         "a person on a bicycle rides along a mountain trail, jumps over a fallen tree trunk, lands, skids on the "
         "wet leaves and finally stops next to a small wooden bridge"]  # the last one is over 32 tokens: truncated


def _block(prefix, d):
    """(name, shape, kind) of one pre-LN block, in the order nn.MultiheadAttention/CLIP register them."""
    return [(f"{prefix}.attn.in_proj_weight", (3 * d, d), d ** -0.5), (f"{prefix}.attn.in_proj_bias", (3 * d,), "b"),
            (f"{prefix}.attn.out_proj.weight", (d, d), d ** -0.5), (f"{prefix}.attn.out_proj.bias", (d,), "b"),
            (f"{prefix}.ln_1.weight", (d,), "ln"), (f"{prefix}.ln_1.bias", (d,), "b"),
            (f"{prefix}.mlp.c_fc.weight", (4 * d, d), d ** -0.5), (f"{prefix}.mlp.c_fc.bias", (4 * d,), "b"),
            (f"{prefix}.mlp.c_proj.weight", (d, 4 * d), (4 * d) ** -0.5), (f"{prefix}.mlp.c_proj.bias", (d,), "b"),
            (f"{prefix}.ln_2.weight", (d,), "ln"), (f"{prefix}.ln_2.bias", (d,), "b")]


def spec(cfg):
    """[(name, shape, std or kind)] in the order ViCLIP's state_dict() lists them."""
    embed, res, v_layers, v_width, patch, frames, t_width, t_layers = cfg
    v, t, grid = "vision_encoder", "text_encoder", res // patch
    out = [("temp", (), "temp"),
           (f"{v}.class_embedding", (v_width,), v_width ** -0.5),
           (f"{v}.positional_embedding", (grid * grid + 1, v_width), v_width ** -0.5),
           (f"{v}.temporal_positional_embedding", (1, frames, v_width), v_width ** -0.5),
           (f"{v}.proj", (v_width, embed), v_width ** -0.5),
           (f"{v}.conv1.weight", (v_width, 3, 1, patch, patch), (3 * patch * patch) ** -0.5),
           (f"{v}.ln_pre.weight", (v_width,), "ln"), (f"{v}.ln_pre.bias", (v_width,), "b")]
    for i in range(v_layers):
        out += _block(f"{v}.transformer.resblocks.{i}", v_width)
    out += [(f"{v}.ln_post.weight", (v_width,), "ln"), (f"{v}.ln_post.bias", (v_width,), "b"),
            (f"{t}.positional_embedding", (32, t_width), 0.05), (f"{t}.text_projection", (t_width, embed),
                                                                 t_width ** -0.5)]
    for i in range(t_layers):
        out += _block(f"{t}.transformer.resblocks.{i}", t_width)
    out += [(f"{t}.token_embedding.weight", (49408, t_width), 0.1),
            (f"{t}.ln_final.weight", (t_width,), "ln"), (f"{t}.ln_final.bias", (t_width,), "b")]
    return out


def viclip_state_dict(cfg, seed=0):
    """Seeded random weights: normal(0, std) matrices, LayerNorm gains 1 + N(0, 0.1), biases N(0, 0.02), temp 0.0123."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, shape, kind in spec(cfg):
        if kind == "temp":
            sd[name] = torch.tensor(0.0123)
        elif kind == "ln":
            sd[name] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif kind == "b":
            sd[name] = 0.02 * torch.randn(shape, generator=g)
        else:
            sd[name] = kind * torch.randn(shape, generator=g)
    return sd


def videos(cfg, batch, frames, seed=1):
    """Seeded (B, T, 3, H, W) inputs at the model's resolution."""
    res = cfg[1]
    return torch.randn(batch, frames, 3, res, res, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- a stub model of known logits (evaluate.py's path)
# The stub reads back which video and which frames it was served from id videos.
RES = 16  # the stub's "input resolution": what the datasets resize to
CLASSES = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "Eta"]  # 7 > 5 classes, so top-5 can miss


class Stub(torch.nn.Module):
    """MSTA's evaluation interface with known answers: encode_video reads (video id, first frame) from the pixels,
    logits looks the answer up in answer(video id, first frame index, C) -> (C,) logits."""

    def __init__(self, answer, read=True):
        super().__init__()
        self.answer, self.read, self.served, self.text_sizes, self.texts = answer, read, [], [], []
        self.clip = types.SimpleNamespace(visual=types.SimpleNamespace(input_resolution=RES))

    def encode_text(self, tokens):
        self.text_sizes.append(len(tokens))
        self.texts.append(tokens)
        return torch.zeros(len(tokens), 1)  # (C, E)

    def encode_video(self, videos):
        if not self.read:  # not id videos: answer as video 0, view 0
            return torch.zeros(len(videos), 2)
        ids = [read_ids(v) for v in videos]  # videos (n, T, 3, H, W), n = B*V
        self.served += ids
        return torch.tensor([[vid, frames[0]] for vid, frames in ids], dtype=torch.float32)  # (n, 2)

    def logits(self, features, text):
        return torch.stack([self.answer(int(v), int(f), len(text)) for v, f in features])  # (n, C)

    def load_trainable_state_dict(self, state_dict):
        self.loaded = state_dict


def flat_clip(vid, first_frame, T=2):
    """A normalised (T, 3, RES, RES) clip of flat frames carrying vid and frame indices first_frame, +1, ..."""
    rgb = torch.tensor([[ID_BASE + ID_STEP * vid, ID_BASE + ID_STEP * (first_frame + t), 128] for t in range(T)])
    x = rgb.float()[:, :, None, None].expand(T, 3, RES, RES) / 255  # (T, 3, H, W)
    return (x - torch.tensor(transforms.CLIP_MEAN)[:, None, None]) / torch.tensor(transforms.CLIP_STD)[:, None, None]


class Items(torch.utils.data.Dataset):
    """In-memory test set: item i is video i with V views, view v starting at frame v (the stub's view index)."""

    def __init__(self, labels, views):
        self.labels, self.views, self.classnames, self.skipped = labels, views, CLASSES, 0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        clips = torch.stack([flat_clip(i, v) for v in range(self.views)])  # (V, T, 3, H, W)
        return (clips if self.views > 1 else clips[0]), self.labels[i]


# Per test video: (label, logits of view 0, logits of view 1), over the 7 classes; hand-checked outcomes:
RANKED = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]  # class c ranked c + 1
TABLE = [
    # video 0: softmax per view then sum -> class 0 (1.0 + 0.0); the sum of raw logits -> class 1 (15 vs -10)
    (0, [20.0, 0, 0, 0, 0, 0, 0], [-30.0, 15.0, 14.9, 0, 0, 0, 0]),
    (5, RANKED, RANKED),                                      # video 1: label ranked 6th: top-1 and top-5 miss
    (4, RANKED, RANKED),                                      # video 2: label ranked 5th: top-5 hit only
    (1, RANKED, RANKED),                                      # video 3: label ranked 2nd: top-5 hit only
    (6, [0, 0, 0, 0, 0, 0, 10.0], [0, 0, 0, 0, 0, 0, 10.0]),  # video 4: a hit
    (2, [0, 0, 10.0, 0, 0, 0, 0], [3.0, 0, 0, 0, 0, 0, 0]),   # video 5: a hit (view 0 sure, view 1 unsure)
]
# Hits: top-1 videos 0, 4, 5 -> 3/6; top-5 all but video 1 -> 5/6.


def table_answer(vid, view, C):
    assert C == len(CLASSES)
    return torch.tensor(TABLE[vid][1 + view])


# ---------------------------------------------------------------- FLOP counting

def math_attention(q, k, v, attn_mask=None):
    """softmax(q k^T / sqrt(d) + mask) v in plain matmuls, which torch's FLOP counter sees (its CPU kernel not)."""
    w = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    return (w if attn_mask is None else w + attn_mask).softmax(-1) @ v


def run_protocol(model, args, device, views=None, final=True):
    """evaluate.run_protocol with the values evaluate.py resolves from a run's arguments (an argparse Namespace of
    a checkpoint's arguments, as the tests make them)."""
    import evaluate
    from harness import settings
    reader, lists = settings.data_source(args)
    views = views or evaluate.test_views(args.dataset, args.clips, args.crops)
    return evaluate.run_protocol(model, device, args.protocol, args.dataset, reader, args.data_root, lists, args.split,
                                 args.seed, args.frames, views, args.precision, args.eval_batch_size, args.workers,
                                 final=final)
