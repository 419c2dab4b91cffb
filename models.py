"""The model a run trains: a frozen backbone named on the command line, with MSTA's adapters (adapters.py).

load_backbone(name) reads ViCLIP-B/16 (viclip.py, the paper's backbone) or an OpenAI CLIP (clip.py): a published
name, a checkpoint file in either release format, or random-* for offline demos and tests. build_msta wraps it in
MSTA (Sec. 3 of "Efficient Transfer Learning for Video-language Foundation Models", CVPR 2025) with the adapters
initialised from a seed, so every process and every --resume starts from the same adapters. msta_from_pair
rebuilds a run's trained MSTA from its adapter pair (adapters.json + adapters.safetensors) on the backbone the pair
names, checked against it first (adapters.from_pair).
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


def msta_from_pair(backbone, device, config, tensors, where):
    """MSTA with an adapter pair's trained adapters on the backbone named `backbone`, on `device`; a backbone the
    pair does not fit (layout, shapes, or weights by fingerprint: adapters.check_pair) raises clip.CLIPError, one
    line starting with `where` (the pair's path)."""
    try:
        return adapters.from_pair(load_backbone(backbone).to(device), config, tensors)
    except adapters.PairMismatch as e:
        raise clip.CLIPError(f"{where}: {e}") from None
