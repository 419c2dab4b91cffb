"""CLIP written from scratch: loads OpenAI's released weights unchanged; its tokenizer and preprocessing.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision": ViT image encoder and
causal text transformer (sec. 2.4), contrastive logits (sec. 2.3, Fig. 3). load(name_or_path) -> (model, preprocess)
takes OpenAI's checkpoints through weights.py (downloaded, SHA-256 checked, TorchScript read as data, never run; or
plain state dicts); build_model infers the architecture from tensor shapes; build_random gives a random, NOT pretrained,
CLIP for demos and tests; tokenize is OpenAI's byte-level BPE, id for id. Parameter names equal OpenAI's, so loading
is load_state_dict(strict=True) with no rename table. ViT backbones only. Transformers here are batch-first (OpenAI's
are sequence-first; the state dict is the same).
Shape legend (whole code base): B images (the video model passes B*T frames), N tokens per image (1 + grid^2),
D width, H heads, E embedding size, C texts (class prompts), L text length (77), L' trimmed length.
bpe_simple_vocab_16e6.txt.gz next to this file is OpenAI's BPE merges list from https://github.com/openai/CLIP
(MIT License, Copyright (c) 2021 OpenAI; see NOTICE). The code in this file is independent of OpenAI's.
"""
import gzip, html, math, os
from collections import OrderedDict
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

import weights
from weights import CLIPError  # what load, build_model and tokenize raise, as clip.CLIPError

_URL = "https://openaipublic.azureedge.net/clip/models"
# OpenAI's published checkpoints. The folder name in each URL is the file's SHA-256, checked after download.
_MODELS = {
    "ViT-B/32": f"{_URL}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_URL}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_URL}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_URL}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
_RESNETS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64")  # published too, but not supported here
# build_random's architectures (embed, resolution, vision layers, vision width, patch, text width, text layers): the
# four ViTs, to count parameters or time them offline, and "random-tiny". Heads are width // 64 as in every CLIP, so
# a saved random model loads back identically: hence random-tiny is 128 wide (2 heads of 64), not 64 wide.
_RANDOM = {
    "random-tiny": (64, 32, 4, 128, 8, 128, 4),
    "random-ViT-B/32": (512, 224, 12, 768, 32, 512, 12),
    "random-ViT-B/16": (512, 224, 12, 768, 16, 512, 12),
    "random-ViT-L/14": (768, 224, 24, 1024, 14, 768, 12),
    "random-ViT-L/14@336px": (768, 336, 24, 1024, 14, 768, 12),
}
_SCALARS = ("input_resolution", "context_length", "vocab_size")  # extra 0-d entries in OpenAI's archives
# Per-channel mean and std of the pixels of CLIP's training images (OpenAI's preprocessing).
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SOT, EOT = 49406, 49407  # <|startoftext|>, <|endoftext|>: the last two ids of the 49,408-symbol vocabulary


# ----------------------------------------------------------------------------------------------------- model
class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (fp16 statistics lose precision), returned in the input's dtype (the residual
    stream's: fp32 under autocast, see VisionTransformer.embed)."""

    def forward(self, x):
        w, b = self.weight.float(), self.bias.float()  # also correct after a user's model.half()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation CLIP was trained with; the weights expect it, not exact GELU."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with nn.MultiheadAttention's parameter names, computed by F.scaled_dot_product_attention."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        # One packed projection, as in OpenAI's checkpoints: rows [0, D) make q, [D, 2D) make k, [2D, 3D) make v.
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's default initialisation
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x, attn_mask=None):
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (b, n, D) -> (b, n, 3D)
        # Each D-block is H heads of D/H features, head-major, the split nn.MultiheadAttention uses.
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (b, H, n, D/H)
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)  # SDPA wants an additive mask in q's dtype (a bool mask passes as is)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # softmax(q k^T / sqrt(D/H) + mask) v
        return self.out_proj(x.transpose(1, 2).reshape(b, n, d))  # (b, H, n, D/H) -> (b, n, D)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (GPT-2 style, CLIP sec. 2.4)."""

    def __init__(self, width, heads):
        super().__init__()
        # Registration order equals OpenAI's, so state_dict() lists keys in the released checkpoints' order.
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x, attn_mask=None):
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks over batch-first tokens (b, n, D)."""

    def __init__(self, width, layers, heads):
        super().__init__()
        self.width, self.layers, self.heads = width, layers, heads
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x, attn_mask=None):
        for block in self.resblocks:  # a loop rather than Sequential's call: every block needs the mask
            x = block(x, attn_mask)
        return x


class VisionTransformer(nn.Module):
    """ViT image encoder (Dosovitskiy et al. 2021) with CLIP's extra ln_pre before the transformer (sec. 2.4)."""

    # How a video's tokens are laid out, for adapters.py: "frames" = each frame its own sequence, (B*T, N, D), frames
    # of one video consecutive; frames meet only in the adapters. (viclip.py's joint encoder says "joint".)
    token_layout = "frames"

    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        super().__init__()
        self.input_resolution, self.patch_size, self.output_dim = input_resolution, patch_size, output_dim
        self.width, self.layers, self.heads = width, layers, heads
        scale, grid = width ** -0.5, input_resolution // patch_size
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)  # patchify + embed in one conv
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))  # (N, D)
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))  # (D, E)

    def embed(self, images):
        """Images (B, 3, H, W) -> tokens (B, N, D): patches, class token first, positions, ln_pre."""
        x = self.conv1(images.to(self.conv1.weight.dtype))  # (B, 3, H, W) -> (B, D, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (B, D, grid, grid) -> (B, grid^2, D)
        # The residual stream is kept in the weights' dtype (fp32), also under autocast, where the conv returns
        # bf16: bf16 keeps ~3 significant digits, which would round away most of an adapter's small lambda*A added
        # to the stream. The blocks' matmuls still run in autocast's dtype; their outputs add into fp32.
        dtype = self.conv1.weight.dtype  # (fp16 for a model kept in the release's fp16, which runs without autocast)
        x = x.to(dtype)
        cls = self.class_embedding.to(dtype).expand(x.shape[0], 1, -1)  # (D,) -> (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(dtype)  # (B, N, D)
        return self.ln_pre(x)

    def head(self, x):
        """Tokens (B, N, D) -> embedding (B, E): ln_post on the class token only, then the projection."""
        return class_token_head(x, self.ln_post, self.proj)

    def forward(self, images):
        return self.head(self.transformer(self.embed(images)))


# The two towers' ends and the text tower's start, as functions of the tensors they read: ViCLIP's encoders
# (viclip.py) compute exactly these, so both backbones call them rather than each other's methods.
def class_token_head(x, ln_post, proj):
    """Tokens (B, N, D) -> embedding (B, E): ln_post on the class token only, then the projection (D, E)."""
    return ln_post(x[:, 0]) @ proj  # (B, N, D) -> (B, D) -> (B, E)


def embed_text(tokens, token_embedding, positional_embedding, attn_mask, dtype, trim=True):
    """Token ids (C, L) -> (embedded tokens (C, L', D), causal mask (L', L')), cut after the last end token.
    trim=False keeps all L positions (benchmark.py measures what the cut saves)."""
    # Exact: under the causal mask no position sees a later one, so tokens after the last end token change nothing.
    n = int(tokens.argmax(dim=-1).max()) + 1 if trim else tokens.shape[1]  # the end token has the largest id
    # In the weights' dtype (fp32) under autocast too, as the vision stream (VisionTransformer.embed).
    x = token_embedding(tokens[:, :n]).to(dtype) + positional_embedding[:n].to(dtype)
    return x, attn_mask[:n, :n]  # (C, L) -> (C, L', D), (L', L')


def end_token_head(x, tokens, ln_final, text_projection):
    """Text tokens (C, L', D) -> features (C, E): ln_final, the end token's vector, the projection (D, E)."""
    x = ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # (C, L', D) -> (C, D)
    return x @ text_projection  # (C, D) -> (C, E)


def causal_mask(n):
    """Additive (n, n) mask, -inf above the diagonal: text token i attends to tokens 0..i only."""
    return torch.full((n, n), float("-inf")).triu(1)


def init_weights(text, towers):
    """OpenAI's initialisation of a CLIP-like model: `text` holds token_embedding, positional_embedding and
    text_projection; `towers` are the Transformers whose blocks get GPT-2's depth-scaled scheme (viclip.py too)."""
    nn.init.normal_(text.token_embedding.weight, std=0.02)
    nn.init.normal_(text.positional_embedding, std=0.01)
    nn.init.normal_(text.text_projection, std=text.transformer.width ** -0.5)
    for tower in towers:
        attn_std = tower.width ** -0.5
        proj_std = attn_std * (2 * tower.layers) ** -0.5  # GPT-2: residual branches shrink with depth
        for block in tower.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * tower.width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class CLIP(nn.Module):
    """Image encoder, text encoder and the learned temperature of CLIP's contrastive logits (sec. 2.3, Fig. 3).

    It has adapters.py's backbone contract (listed in that file's header), and what train.py and evaluate.py read
    besides: visual.input_resolution, context_length, mean/std. viclip.ViCLIP offers the same."""

    mean, std = MEAN, STD  # the pixel normalisation the weights expect (the data pipeline reads it from here)

    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, vision_heads,
                 context_length, vocab_size, transformer_width, transformer_heads, transformer_layers):
        super().__init__()
        self.embed_dim, self.context_length, self.vocab_size = embed_dim, context_length, vocab_size
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))  # (L, D)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))  # (D, E)
        # Temperature 0.07 at initialisation, stored as log(1 / 0.07); training clipped exp() at 100 (sec. 2.5).
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                        vision_heads, embed_dim)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.ln_final = LayerNorm(transformer_width)
        # Not persistent: OpenAI's state dict has no mask, and strict loading must not expect one.
        self.register_buffer("attn_mask", causal_mask(context_length), persistent=False)
        self._init_weights()

    def _init_weights(self):
        """OpenAI's initialisation (only build_random keeps it: loading overwrites every tensor). OpenAI applies
        the block scheme to the text tower only; here both towers get it, which is fine for a random model."""
        init_weights(self, (self.visual.transformer, self.transformer))

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, images):
        """Images (B, 3, H, W) -> features (B, E), not normalised."""
        return self.visual(images)

    def encode_video(self, videos):
        """Videos (B, T, 3, H, W) -> features (B, E), not normalised: the mean of the T frames' image features."""
        B, T = videos.shape[:2]
        return self.encode_image(videos.flatten(0, 1)).view(B, T, -1).mean(1)  # (B*T, E) -> (B, T, E) -> (B, E)

    # adapters.py's backbone contract (text_embed and text_head below belong to it too).
    token_layout = property(lambda self: self.visual.token_layout)
    vision_blocks = property(lambda self: self.visual.transformer.resblocks)
    text_blocks = property(lambda self: self.transformer.resblocks)

    def vision_embed(self, images):
        """Images (B, 3, H, W) -> tokens (B, N, D)."""
        return self.visual.embed(images)

    def vision_head(self, x):
        """Tokens (B, N, D) -> features (B, E)."""
        return self.visual.head(x)

    def text_embed(self, tokens):
        """Token ids (C, L) -> (embedded tokens (C, L', D), causal mask (L', L')), cut after the last end token."""
        return embed_text(tokens, self.token_embedding, self.positional_embedding, self.attn_mask, self.dtype)

    def text_head(self, x, tokens):
        """Text tokens (C, L', D) -> features (C, E): ln_final, the end token's vector, the projection."""
        return end_token_head(x, tokens, self.ln_final, self.text_projection)

    def encode_text(self, tokens):
        """Token ids (C, L) -> features (C, E), not normalised."""
        return self.text_head(self.transformer(*self.text_embed(tokens)), tokens)

    def forward(self, images, tokens):
        """Cosine similarities times exp(logit_scale): (logits_per_image (B, C), logits_per_text (C, B))."""
        image, text = self.encode_image(images), self.encode_text(tokens)  # (B, E), (C, E)
        image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image @ text.t()  # (B, C)
        return logits_per_image, logits_per_image.t()


def vit_config(state_dict):
    """CLIP's constructor arguments read from tensor shapes alone (so meta tensors work too)."""
    sd = state_dict
    if any(k.startswith(("visual.layer1.", "visual.attnpool.")) for k in sd):
        raise CLIPError("this checkpoint has a ResNet image encoder: only ViT backbones are supported")
    needed = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
              "positional_embedding", "text_projection", "ln_final.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise CLIPError(f"not a CLIP checkpoint: it has no {', '.join(missing)} (it has {len(sd)} entries)")
    vision_width, _, patch, _ = sd["visual.conv1.weight"].shape  # (D, 3, P, P)
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)  # N = 1 + grid^2
    width = sd["ln_final.weight"].shape[0]
    return dict(
        embed_dim=sd["text_projection"].shape[1], image_resolution=patch * grid, vision_patch_size=patch,
        vision_layers=len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")}),
        vision_width=vision_width, vision_heads=vision_width // 64,  # every released CLIP has 64-dim heads
        context_length=sd["positional_embedding"].shape[0], vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=width, transformer_heads=width // 64,
        transformer_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}))


def build_model(state_dict):
    """A CLIP whose architecture is read from state_dict's shapes, its weights loaded strictly, in fp32, eval mode."""
    sd = {k: v for k, v in state_dict.items() if k not in _SCALARS}  # the archive's 0-d extras are not weights
    cfg = vit_config(sd)
    with torch.device("meta"):  # build without allocating or random-initialising: every weight comes from sd
        model = CLIP(**cfg)
    model = model.to_empty(device="cpu").float()  # uninitialised fp32 memory, filled by the copy below
    model.attn_mask.copy_(causal_mask(cfg["context_length"]))  # the one tensor not in a checkpoint
    model.load_state_dict(sd, strict=True)  # copies, casting fp16 -> fp32; names and shapes must all match
    return model.eval()


def build_random(name="random-tiny", seed=0, device="cpu"):
    """A randomly initialised CLIP -- NOT pretrained, its features mean nothing -- for offline demos and tests.

    "random-tiny": 32 px images, 8 px patches (N = 17), 4 layers of width 128 (2 heads) per tower, E = 64,
    77-token context and the full 49,408-id vocabulary, so tokenize() output fits it. "random-ViT-B/16" etc.
    have the published shapes; device="meta" builds them without allocating memory (parameter counts).
    The same seed gives the same model; the caller's random state is left untouched."""
    if name not in _RANDOM:
        raise CLIPError(f"unknown random model {name!r}; choose from {', '.join(_RANDOM)}")
    embed, res, v_layers, v_width, patch, t_width, t_layers = _RANDOM[name]
    with torch.random.fork_rng(devices=[]), torch.device("meta" if str(device) == "meta" else "cpu"):
        torch.manual_seed(seed)
        model = CLIP(embed, res, v_layers, v_width, patch, v_width // 64, 77, 49408, t_width, t_width // 64, t_layers)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------- loading
def available_models():
    """Names load() can download: OpenAI's ViT checkpoints (random-* names from build_random load too)."""
    return list(_MODELS)


def load(name_or_path, device="cpu", download_root=None):
    """(model, preprocess): model in fp32 and eval mode, preprocess a torchvision transform for PIL images.

    name_or_path: a name from available_models() (downloaded once into download_root, default ~/.cache/clip,
    the cache OpenAI's package uses), a random-* name from build_random (NOT pretrained), or the path of a
    TorchScript archive as OpenAI released them or of a plain state dict with OpenAI's parameter names."""
    name = os.fspath(name_or_path)
    if name in _RESNETS:
        raise CLIPError(f"{name}: only ViT backbones are supported")
    if name in _RANDOM:
        model = build_random(name)
    elif name in _MODELS or os.path.isfile(name):
        root = download_root or os.path.expanduser("~/.cache/clip")  # OpenAI's package caches there too
        path = weights.download(_MODELS[name], root) if name in _MODELS else name
        state_dict = weights.read_checkpoint(path)
        try:
            model = build_model(state_dict)
        except RuntimeError as e:  # load_state_dict's report, or vit_config's
            raise CLIPError(f"cannot load {path}: {e}") from e
    else:
        raise CLIPError(f"{name!r} is neither a model name ({', '.join(available_models())}) nor an existing file")
    model = model.to(device)
    return model, image_transform(model.visual.input_resolution)


def _to_rgb(image):  # a named function, not a lambda, so the transform pickles into DataLoader workers
    return image.convert("RGB")


def image_transform(resolution, mean=MEAN, std=STD):
    """OpenAI's preprocessing: bicubic resize of the short side, center crop, RGB, CLIP's mean/std (or the given
    model's: viclip.py passes ImageNet's)."""
    from torchvision import transforms as T  # imported here: only image users pay for it
    return T.Compose([T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(resolution),
                      _to_rgb, T.ToTensor(), T.Normalize(mean, std)])


# ---------------------------------------------------------------------------------------------------- text
@lru_cache()
def _bytes_to_unicode():
    """A reversible map from the 256 byte values to 256 printable characters.

    BPE runs on strings, and working on UTF-8 bytes means no text is ever out of vocabulary. But some bytes
    are spaces or control characters, which would break splitting on spaces and printing. So the 188 bytes that
    already print as themselves ('!'..'~', '¡'..'¬', '®'..'ÿ') stay, and the other 68 (space, newline, ...)
    become chr(256), chr(257), ... in byte order. This order fixes ids 0..255, so it must equal OpenAI's."""
    table = {b: chr(b) for b in [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                                 *range(ord("®"), ord("ÿ") + 1)]}
    table.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in table)})
    return table


class _Tokenizer:
    """OpenAI's CLIP tokenizer: clean the text, cut it into pieces, byte-level BPE on each piece."""

    def __init__(self, path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")):
        import ftfy, regex  # imported here: only text users need them; `regex` knows Unicode classes like \p{L}
        self.ftfy, self.regex, self.bytes = ftfy, regex, _bytes_to_unicode()
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")
        # Line 0 is a header. CLIP keeps the first 49152 - 256 - 2 = 48,894 merges: 256 bytes + the same 256 ending
        # a word ("</w>") + 48,894 merged symbols + start and end tokens = 49,408 ids, the model's vocab_size.
        merges = [tuple(line.split()) for line in lines[1:48895]]
        symbols = list(self.bytes.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        self.encoder = {s: i for i, s in enumerate(vocab + ["<|startoftext|>", "<|endoftext|>"])}
        self.ranks = {m: i for i, m in enumerate(merges)}  # learned order: earlier = more frequent, applied first
        # A literal special token in the text stays one symbol (no "</w>"), as in OpenAI's tokenizer.
        self.cache = {"<|startoftext|>": ["<|startoftext|>"], "<|endoftext|>": ["<|endoftext|>"]}
        # Pieces: special tokens, English contractions, runs of letters, single digits, runs of other non-spaces.
        self.pattern = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+"""
                                     r"""|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)

    def bpe(self, piece):
        """Split one piece into vocabulary symbols by replaying the learned merges in the order they were learned.

        Start from single characters, the last one marked "</w>" (end of word: "dog" at the end of a word is a
        different symbol from "dog" inside "dogma"). Then, again and again, take the adjacent pair whose merge was
        learned earliest and fuse it everywhere it occurs, left to right (so "a a a" with merge "a a" gives
        "aa a"), until no adjacent pair is a learned merge."""
        if piece not in self.cache:
            word = [*piece[:-1], piece[-1] + "</w>"]
            while len(word) > 1:
                best = min(zip(word, word[1:]), key=lambda pair: self.ranks.get(pair, math.inf))
                if best not in self.ranks:
                    break
                merged, i = [], 0
                while i < len(word):
                    fuse = i + 1 < len(word) and (word[i], word[i + 1]) == best
                    merged.append(word[i] + word[i + 1] if fuse else word[i])
                    i += 2 if fuse else 1
                word = merged
            self.cache[piece] = word
        return self.cache[piece]

    def encode(self, text):
        """Text -> BPE ids, without start and end tokens."""
        text = html.unescape(html.unescape(self.ftfy.fix_text(text))).strip()  # mojibake; "&amp;amp;" -> "&"
        text = self.regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for piece in self.pattern.findall(text):
            piece = "".join(self.bytes[b] for b in piece.encode("utf-8"))  # bytes as printable characters
            ids += [self.encoder[symbol] for symbol in self.bpe(piece)]
        return ids


@lru_cache()
def _tokenizer():
    return _Tokenizer()  # built on first use: reading the merges takes a moment


def tokenize(texts, context_length=77, truncate=False):
    """Token ids (C, context_length), zero-padded: start token, the text's BPE ids, end token.

    A text too long raises CLIPError (a RuntimeError, as OpenAI's does), unless truncate=True, which cuts it and
    keeps the end token last (the text encoder reads its features there)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [SOT] + _tokenizer().encode(text) + [EOT]
        if len(ids) > context_length:
            if not truncate:
                raise CLIPError(f"text {i} is {len(ids)} tokens with start and end, more than context_length="
                                   f"{context_length}: {text[:50]!r}...; pass truncate=True to cut it")
            ids = ids[:context_length - 1] + [EOT]
        out[i, :len(ids)] = torch.tensor(ids)
    return out
