"""Seeded ViCLIP weights in ViCLIP's own key names and order, written from the shapes alone (not by viclip.py), so
the golden numbers in test_viclip.py can be regenerated: the same function fed ViCLIP's reference code in a scratch
environment (see test_viclip.py's docstring), and the tests feed it to viclip.py."""
from collections import OrderedDict

import torch

# (embed E, resolution, vision blocks, vision width, patch, frames T0, text width, text blocks); heads = width // 64.
TINY = (64, 32, 2, 128, 8, 8, 128, 2)
B16 = (512, 224, 12, 768, 16, 8, 512, 12)
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
