"""On ViCLIP's joint layout the temporal modules mix the T tokens of ONE patch position (patch p of frame t sits at
index 1 + p*T + t), as MSTA really calls them inside a random tiny ViCLIP: which token holds which (frame, patch) is
read off ViCLIP's own embedding, and which tokens a temporal module mixes is read off its output.

Shape legend: B videos, T frames, P patches per frame, M = 1 + P*T tokens, r adapter bottleneck."""
import pytest
import torch

import adapters
import viclip

T = 4


@pytest.fixture(scope="module")
def model():
    return viclip.build_random("random-ViCLIP-tiny")  # 32 px frames, 8 px patches: P = 16


def token_of(model, frame, patch):
    """The one token index a change of (frame, patch)'s pixels reaches in ViCLIP's embedding (the blocks, which
    mix all tokens, come after it)."""
    size = model.visual.conv1.kernel_size[-1]
    grid = model.visual.input_resolution // size
    videos = torch.rand(1, T, 3, grid * size, grid * size, generator=torch.Generator().manual_seed(0))
    changed = videos.clone()
    y, x = patch // grid * size, patch % grid * size
    changed[0, frame, :, y:y + size, x:x + size] += 1
    with torch.no_grad():
        diff = (model.visual.embed(changed) - model.visual.embed(videos)).abs().amax(-1)[0]  # (M,)
    (index,) = diff.nonzero()[:, 0].tolist()  # exactly one token
    return index


def temporal_call(msta, videos):
    """(module, args, kwargs) of the first temporal-module call MSTA makes while encoding `videos`."""
    calls = []
    hooks = [m.register_forward_pre_hook(lambda m, a, k: calls.append((m, a, k)), with_kwargs=True)
             for m in msta.modules() if isinstance(m, (adapters.TemporalAttention, adapters.TemporalConv))]
    with torch.no_grad():
        msta.encode_video(videos)
    for h in hooks:
        h.remove()
    return calls[0]


@pytest.mark.parametrize("temporal, reach", [("attn", T), ("conv", 1)])  # frames a token reaches: all, or t +- 1
def test_temporal_modules_mix_one_patch_positions_frames(model, temporal, reach):
    torch.manual_seed(0)
    msta = adapters.MSTA(model, num_frames=T, rank=8, blocks=(1, 2), temporal=temporal)
    module, args, kwargs = temporal_call(msta, torch.rand(2, T, 3, 32, 32))
    # (B, M, r): the input MSTA hands the module, with known values; small, as bottleneck activations are, so that
    # no attention row saturates (a softmax at exactly 0 and 1 would hide a frame that is mixed in)
    h = 0.1 * torch.randn_like(args[0])
    assert h.shape[:2] == (2, 1 + 16 * T)
    with torch.no_grad():
        base = module(h, *args[1:], **kwargs)
        for frame, patch in ((0, 0), (1, 5), (3, 15), (2, 9)):
            index = token_of(model, frame, patch)
            assert index == 1 + patch * T + frame  # the layout adapters.py's header states
            poked = h.clone()
            poked[0, index] += 0.1
            moved = (module(poked, *args[1:], **kwargs) - base).abs().amax(-1) > 1e-6  # (B, M)
            mixed = {(b, i) for b, i in moved.nonzero().tolist()}
            same_patch = {(0, token_of(model, t, patch)) for t in range(T) if abs(t - frame) <= reach}
            assert mixed == same_patch, (frame, patch, sorted(mixed))
