"""ViCLIP written from scratch on clip.py's blocks: loads InternVid's released weights unchanged.

Wang et al. 2023, "InternVid: A Large-scale Video-Text Dataset for Multimodal Understanding and Generation",
sec. 4 (ViCLIP): CLIP's ViT, but one transformer attends jointly over the tokens of all T frames, and the video
feature is its class token (no frame mean); CLIP's causal text transformer with a 32-token context. It is the
backbone of every number in the MSTA paper (Chen et al., CVPR 2025, sec. 4.1).

What the released checkpoints fix, read from their tensors and ViCLIP's public code (InternVideo,
Data/InternVid/viclip/), which this file does not copy:
  - patches: a Conv3d with temporal kernel 1 (each frame patchified alone); every frame's patches get the same 2D
    position table, plus a per-frame temporal table (T0, D) (T0 = 8) added to the patch tokens only; the class
    token is class_embedding + position 0, once per video;
  - tokens are position-major: patch p of frame t sits at index 1 + p*T + t (the class token at 0); adapters.py
    needs this order to find each patch position's T tokens (visual.token_layout = "joint");
  - 12 (B/16) or 24 (L/14) pre-LN blocks, QuickGELU, unmasked attention over all 1 + grid^2 * T tokens;
  - `temp` is the temperature itself (logits = cos / temp); logit_scale here is log(1 / temp), CLIP's form;
  - pixels normalised with ImageNet's mean/std, not CLIP's.
Other frame counts than T0 = 8: the temporal table is resampled linearly (F.interpolate, align_corners=False) for
more frames and truncated for fewer, as ViCLIP's pretraining code does when it changes the frame count; one frame
(an image) gets the table's mean, as ViCLIP's own forward does. Inference only: ViCLIP's training-time dropping of
90% of the patch tokens (its encode_vision(test=False)) is never done here.
Parameter names equal ViCLIP's, so loading is load_state_dict(strict=True) with no rename table. Shape legend as
in clip.py, plus T frames, P patches per frame (grid^2), M = 1 + P*T joint tokens.
"""
import os

import torch
import torch.nn.functional as F
from torch import nn

import clip
import weights
from weights import CLIPError

# ViCLIP-B/16 trained on InternVid-10M-FLT, as OpenGVLab publishes it on the Hugging Face Hub, pinned to one
# revision. Hugging Face publishes no SHA-256 we could read offline, so none is hard-coded: weights.download
# records the digest of the first complete download and reuses the file only while it matches, and load() checks
# the parameter count below. (The .pth of InternVid's README, a OneDrive link, loads as a path.)
_HF = "https://huggingface.co/OpenGVLab/ViCLIP-B-16-hf/resolve/8484a9cb5b1b86e43c3ded53abe7485f52d8b789"
_MODELS = {"ViCLIP-B/16": (f"{_HF}/model.safetensors", "ViCLIP-B-16-InternVid-10M-FLT-8484a9cb.safetensors")}
_PARAMETERS = {"ViCLIP-B/16": 149_603_841}  # what that file holds (303 tensors, fp32)
# build_random's architectures (embed, resolution, vision layers, vision width, patch, frames, text width, text
# layers); heads are width // 64 in both towers of both released models, hence 128-wide towers for the tiny one.
_RANDOM = {
    "random-ViCLIP-tiny": (64, 32, 4, 128, 8, 8, 128, 4),
    "random-ViCLIP-B/16": (512, 224, 12, 768, 16, 8, 512, 12),
    "random-ViCLIP-L/14": (768, 224, 24, 1024, 14, 8, 768, 12),
}
CONTEXT_LENGTH = 32  # ViCLIP's text context: tokenize with clip.tokenize(texts, context_length=32, truncate=True)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's pixel statistics, ViCLIP's preprocessing


# ----------------------------------------------------------------------------------------------------- model
class VideoTransformer(nn.Module):
    """ViCLIP's video encoder: CLIP's ViT with a temporal position table and one joint sequence per video."""

    token_layout = "joint"  # for adapters.py: (B, 1 + P*T, D), patch p of frame t at 1 + p*T + t

    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim, num_frames):
        super().__init__()
        self.input_resolution, self.patch_size, self.output_dim = input_resolution, patch_size, output_dim
        self.width, self.layers, self.heads, self.num_frames = width, layers, heads, num_frames
        scale, grid = width ** -0.5, input_resolution // patch_size
        # Registration order equals ViCLIP's, so state_dict() lists keys in the released checkpoints' order.
        self.conv1 = nn.Conv3d(3, width, (1, patch_size, patch_size), (1, patch_size, patch_size), bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))  # (1 + P, D)
        self.ln_pre = clip.LayerNorm(width)
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, num_frames, width))  # (1, T0, D)
        self.transformer = clip.Transformer(width, layers, heads)
        self.ln_post = clip.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))  # (D, E)

    def temporal_table(self, T):
        """The (T, D) temporal table for T frames (see the module docstring for T != T0)."""
        table = self.temporal_positional_embedding[0]  # (T0, D)
        if T == 1:
            return table.mean(0, keepdim=True)
        if T <= table.shape[0]:
            return table[:T]
        return F.interpolate(table.T[None], size=T, mode="linear")[0].T  # (1, D, T0) -> (1, D, T) -> (T, D)

    def embed(self, videos):
        """Videos (B, T, 3, H, W) -> tokens (B, M, D): class token first, then position-major patches; ln_pre."""
        B, T = videos.shape[:2]
        dtype = self.conv1.weight.dtype  # the residual stream's, fp32 under autocast too (see clip.py's embed)
        x = self.conv1(videos.transpose(1, 2).to(dtype))  # (B, 3, T, H, W) -> (B, D, T, g, g)
        x = x.to(dtype).flatten(3).permute(0, 3, 2, 1)  # (B, D, T, g, g) -> (B, D, T, P) -> (B, P, T, D)
        pos = self.positional_embedding.to(dtype)
        x = x + pos[1:, None] + self.temporal_table(T).to(dtype)  # + (P, 1, D) + (T, D): space, then time
        cls = (self.class_embedding.to(dtype) + pos[0]).expand(B, 1, -1)  # (D,) -> (B, 1, D): no time term
        x = torch.cat([cls, x.flatten(1, 2)], dim=1)  # (B, P, T, D) -> (B, P*T, D) -> (B, M, D)
        return self.ln_pre(x)

    def head(self, x):
        """Tokens (B, M, D) -> embedding (B, E): ln_post on the class token, then the projection, as CLIP's."""
        return clip.class_token_head(x, self.ln_post, self.proj)

    def forward(self, videos):
        return self.head(self.transformer(self.embed(videos)))


class TextTransformer(nn.Module):
    """ViCLIP's text encoder: CLIP's causal text transformer with its own context length (32)."""

    def __init__(self, embed_dim, context_length, vocab_size, width, layers, heads):
        super().__init__()
        self.context_length, self.vocab_size = context_length, vocab_size
        self.transformer = clip.Transformer(width, layers, heads)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))  # (L, D)
        self.ln_final = clip.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))  # (D, E)
        self.register_buffer("attn_mask", clip.causal_mask(context_length), persistent=False)  # not in files

    @property
    def dtype(self):
        return self.token_embedding.weight.dtype

    # The same computation as CLIP's text tower: embed and cut after the last end token (exact under the causal
    # mask), then ln_final, the end token's vector, the projection.
    def text_embed(self, tokens):
        """Token ids (C, L) -> (embedded tokens (C, L', D), causal mask (L', L'))."""
        return clip.embed_text(tokens, self.token_embedding, self.positional_embedding, self.attn_mask, self.dtype)

    def text_head(self, x, tokens):
        """Text tokens (C, L', D) -> features (C, E)."""
        return clip.end_token_head(x, tokens, self.ln_final, self.text_projection)

    def forward(self, tokens):
        return self.text_head(self.transformer(*self.text_embed(tokens)), tokens)


class ViCLIP(nn.Module):
    """Video encoder, text encoder and the temperature, with the interface of clip.CLIP: adapters.py's backbone
    contract (listed in that file's header; token_layout "joint"), encode_video, encode_text, visual, transformer,
    context_length, mean/std. The aliases are properties or methods, so the state dict keeps ViCLIP's names."""

    mean, std = MEAN, STD

    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, num_frames,
                 context_length, vocab_size, transformer_width, transformer_layers):
        super().__init__()
        self.vision_encoder = VideoTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                               vision_width // 64, embed_dim, num_frames)
        self.text_encoder = TextTransformer(embed_dim, context_length, vocab_size, transformer_width,
                                            transformer_layers, transformer_width // 64)
        self.temp = nn.Parameter(torch.tensor(0.01))  # ViCLIP's initial and minimum temperature
        self._init_weights()

    def _init_weights(self):
        """CLIP's initialisation (only build_random keeps it: loading overwrites every tensor)."""
        clip.init_weights(self.text_encoder, (self.vision_encoder.transformer, self.text_encoder.transformer))

    # The shared backbone interface (see clip.CLIP).
    visual = property(lambda self: self.vision_encoder)
    transformer = property(lambda self: self.text_encoder.transformer)
    token_embedding = property(lambda self: self.text_encoder.token_embedding)
    context_length = property(lambda self: self.text_encoder.context_length)
    token_layout = property(lambda self: self.vision_encoder.token_layout)
    vision_blocks = property(lambda self: self.vision_encoder.transformer.resblocks)
    text_blocks = property(lambda self: self.text_encoder.transformer.resblocks)
    # The classification scale is the checkpoint's learned temperature, chosen deliberately: exp(logit_scale) =
    # 1 / temp, 81.3 for ViCLIP-B/16, not the fixed 100 of InternVid's own classification code (InternVideo,
    # Data/InternVid/viclip/viclip.py, ViCLIP.get_predict_label: softmax of 100 * cos). 1 / temp is the scale
    # ViCLIP's contrastive training ended at (the same file's forward hands self.temp to its loss), and MSTA's
    # cross-entropy trains the adapters on these logits, so its sharpness is the one the backbone learned with.
    # Top-1 is the same under either scale (a positive factor never changes the argmax); the loss is not.
    logit_scale = property(lambda self: (1 / self.temp).log())  # logits = cos / temp = exp(logit_scale) * cos

    @property
    def dtype(self):
        return self.vision_encoder.conv1.weight.dtype

    def encode_video(self, videos):
        """Videos (B, T, 3, H, W) -> features (B, E), not normalised: the joint encoder's class token."""
        return self.vision_encoder(videos)

    def vision_embed(self, videos):
        """Videos (B, T, 3, H, W) -> joint tokens (B, M, D)."""
        return self.vision_encoder.embed(videos)

    def vision_head(self, x):
        """Joint tokens (B, M, D) -> features (B, E)."""
        return self.vision_encoder.head(x)

    def text_embed(self, tokens):
        return self.text_encoder.text_embed(tokens)

    def text_head(self, x, tokens):
        return self.text_encoder.text_head(x, tokens)

    def encode_text(self, tokens):
        """Token ids (C, L <= 32) -> features (C, E), not normalised."""
        return self.text_encoder(tokens)

    def forward(self, videos, tokens):
        """Cosine similarities / temp: (logits_per_video (B, C), logits_per_text (C, B))."""
        v, w = F.normalize(self.encode_video(videos), dim=-1), F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * v @ w.t()  # (B, C)
        return logits, logits.t()


def vit_config(state_dict):
    """ViCLIP's constructor arguments read from tensor shapes alone (so meta tensors work too)."""
    sd = state_dict
    needed = ("temp", "vision_encoder.conv1.weight", "vision_encoder.positional_embedding",
              "vision_encoder.temporal_positional_embedding", "vision_encoder.proj", "text_encoder.ln_final.weight",
              "text_encoder.token_embedding.weight", "text_encoder.positional_embedding")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise CLIPError(f"not a ViCLIP checkpoint: it has no {', '.join(missing)} (it has {len(sd)} entries)")
    width, _, kt, patch, _ = sd["vision_encoder.conv1.weight"].shape  # (D, 3, 1, P, P)
    if kt != 1:
        raise CLIPError(f"a ViCLIP with temporal patch size {kt} is not supported (the released ones have 1)")
    layers = lambda prefix: len({k.split(".")[3] for k in sd if k.startswith(prefix + ".transformer.resblocks.")})
    grid = round((sd["vision_encoder.positional_embedding"].shape[0] - 1) ** 0.5)  # 1 + P = 1 + grid^2
    vocab, text_width = sd["text_encoder.token_embedding.weight"].shape
    return dict(embed_dim=sd["vision_encoder.proj"].shape[1], image_resolution=patch * grid,
                vision_layers=layers("vision_encoder"), vision_width=width, vision_patch_size=patch,
                num_frames=sd["vision_encoder.temporal_positional_embedding"].shape[1],
                context_length=sd["text_encoder.positional_embedding"].shape[0], vocab_size=vocab,
                transformer_width=text_width, transformer_layers=layers("text_encoder"))


def build_model(state_dict):
    """A fp32 ViCLIP in eval mode holding exactly state_dict's tensors (strict: every name and shape must match)."""
    cfg = vit_config(state_dict)
    with torch.device("meta"):  # no memory and no random draws for tensors the copy below overwrites
        model = ViCLIP(**cfg)
    model = model.to_empty(device="cpu").float()
    model.text_encoder.attn_mask.copy_(clip.causal_mask(cfg["context_length"]))  # the one tensor not in a file
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def build_random(name="random-ViCLIP-tiny", seed=0, device="cpu"):
    """A randomly initialised ViCLIP -- NOT pretrained, its features mean nothing -- for tests, parameter counts
    and timing. "random-ViCLIP-tiny": 32 px frames, 8 px patches (P = 16), 8 frames, towers of 4 blocks of width 128
    (2 heads), E = 64, the 32-token context and the full vocabulary. The B/16 and L/14 names have the released
    shapes; device="meta" builds them without memory. The same seed gives the same model."""
    if name not in _RANDOM:
        raise CLIPError(f"unknown random ViCLIP {name!r}; choose from {', '.join(_RANDOM)}")
    embed, res, v_layers, v_width, patch, frames, t_width, t_layers = _RANDOM[name]
    with torch.random.fork_rng(devices=[]), torch.device("meta" if str(device) == "meta" else "cpu"):
        torch.manual_seed(seed)
        model = ViCLIP(embed, res, v_layers, v_width, patch, frames, CONTEXT_LENGTH, 49408, t_width, t_layers)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------- weights
def available_models():
    """Names load() can download (random-ViCLIP-* names from build_random load too)."""
    return list(_MODELS)


def handles(name_or_path):
    """Whether load() (and not clip.load) is the loader for this name or file."""
    name = os.fspath(name_or_path)
    return name in _MODELS or name in _RANDOM or (os.path.isfile(name) and weights.is_viclip_file(name))


def load(name_or_path, device="cpu", download_root=None):
    """(model, preprocess): model in fp32 and eval mode, preprocess a torchvision transform for PIL images (one
    frame; videos go through data.py with the model's mean/std).

    name_or_path: "ViCLIP-B/16" (downloaded once into download_root, default ~/.cache/clip), a random-ViCLIP-*
    name from build_random (NOT pretrained), or the path of a .safetensors or .pth file with ViCLIP's names."""
    name = os.fspath(name_or_path)
    if name in _RANDOM:
        model = build_random(name)
    elif name in _MODELS or os.path.isfile(name):
        if name in _MODELS:
            url, filename = _MODELS[name]
            path = weights.download(url, download_root or os.path.expanduser("~/.cache/clip"), None, filename)
        else:
            path = name
        state_dict = weights.read_viclip_state_dict(path)
        count = sum(t.numel() for t in state_dict.values())
        if name in _PARAMETERS and count != _PARAMETERS[name]:
            raise CLIPError(f"{path} holds {count:,} parameters, not the {_PARAMETERS[name]:,} of {name}: "
                            "delete it and download it again")
        try:
            model = build_model(state_dict)
        except RuntimeError as e:  # load_state_dict's report, or vit_config's
            raise CLIPError(f"cannot load {path}: {e}") from e
    else:
        raise CLIPError(f"{name!r} is neither a ViCLIP name ({', '.join(available_models())}) nor an existing file")
    model = model.to(device)
    return model, clip.image_transform(model.visual.input_resolution, MEAN, STD)
