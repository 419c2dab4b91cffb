"""The model a run trains: a frozen backbone named on the command line, with MSTA's adapters (adapters.py).

load_backbone(name) reads ViCLIP-B/16 (viclip.py, the paper's backbone) or an OpenAI CLIP (clip.py): a published
name, a checkpoint file in either release format, or random-* for offline demos and tests. build_msta wraps it in
MSTA (Sec. 3 of "Efficient Transfer Learning for Video-language Foundation Models", CVPR 2025) with the adapters
initialised from a seed, so every process and every --resume starts from the same adapters.
"""
import torch

import adapters
import clip
import viclip


def load_backbone(name):
    """The frozen backbone: ViCLIP for its names, random-ViCLIP-* and files holding ViCLIP's tensor names;
    otherwise OpenAI CLIP: its names, random-* and its checkpoint files. Raises clip.CLIPError (one line)."""
    if viclip.handles(name):
        return viclip.load(name)[0]
    return clip.build_random(name) if name.startswith("random-") else clip.load(name)[0]


def build_msta(backbone, device, frames, rank, blocks, scale, temporal, seed):
    """MSTA on the backbone named `backbone`, on `device`: rank r in blocks (first, last), 1-based inclusive."""
    model = load_backbone(backbone)
    torch.manual_seed(seed)  # adapter initialisation: the same on every rank and on resume
    try:
        return adapters.MSTA(model.to(device), num_frames=frames, rank=rank, blocks=tuple(blocks), scale=scale,
                             temporal=temporal)
    except ValueError as e:  # e.g. --blocks 8-12 on a 4-block model
        raise clip.CLIPError(f"{e} (--clip {backbone})") from None
