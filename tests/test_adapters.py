"""Tests of adapters.py: the paper's parameter counts, equivalence to the frozen CLIP when the adapters are off,
MMA's gradient scaling, real temporal modelling, a frozen backbone, the text prefix cache, checkpoints, autocast.

A small random CLIP ("random-tiny": width 128, 4 layers per tower, 32 px images, N = 17) keeps every test fast;
the parameter counts use ViT-B/16's shapes on the meta device (no memory, no initialisation).
"""
import pytest
import torch
import torch.nn.functional as F

import adapters
import clip
import losses
from adapters import MSTA, GradScale, parameter_counts, format_counts, scaled_residual

T = 4  # frames per test video


def tiny(temporal="attn", blocks=(2, 4), rank=32, seed=0):
    """An MSTA on a fresh random-tiny CLIP; rank 32 divides the width 128, as the conv's groups=r requires."""
    torch.manual_seed(seed)
    return MSTA(clip.build_random("random-tiny"), num_frames=T, rank=rank, blocks=blocks, temporal=temporal)


def videos(B=2, seed=1):
    return torch.randn(B, T, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # (B, T, 3, H, W)


def class_tokens():
    return clip.tokenize(["a video of apply eye makeup.", "a video of yo yo.", "a video of kick ball."])  # (C, L)


def zero_adapter_outputs(model):
    """Make every adapter's output A exactly zero: the up-projections (and the temporal conv) are all zero."""
    with torch.no_grad():
        for adapter in model.adapters.values():
            for p in [*adapter.vision_up.parameters(), *adapter.text_up.parameters()]:
                p.zero_()
            if isinstance(adapter.temporal, adapters.TemporalConv):
                for p in adapter.temporal.parameters():
                    p.zero_()


# ------------------------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("rank, blocks, expected", [
    (128, (8, 12), 1_744_000),   # the released few-shot and base-to-novel runs
    (256, (1, 12), 8_712_192),   # the paper's headline "8.7M"
])
def test_paper_parameter_counts_conv_vit_b16(rank, blocks, expected):
    model = MSTA(clip.build_random("random-ViT-B/16", device="meta"), rank=rank, blocks=blocks, temporal="conv")
    trainable, backbone = parameter_counts(model)
    assert trainable == expected
    assert backbone == 124_323_841  # ViT-B/16 without the 49,408 x 512 token table: the paper's 124.3M
    assert all(p.requires_grad == k.startswith("adapters.") for k, p in model.named_parameters())


def test_attention_variant_count_and_format():
    model = MSTA(clip.build_random("random-ViT-B/16", device="meta"), rank=256, blocks=(1, 12), temporal="attn")
    trainable, backbone = parameter_counts(model)
    # per block: the conv variant's 726,016 - 3,072 + position table 8 x 256 + query (256 x 64 + 64) + key
    # (256 x 64, no bias: softmax cancels one) + low-rank value (256 x 64 + 64) + (64 x 256 + 256): 0.78M more than
    # the conv's 8.71M over 12 blocks
    assert trainable == 12 * (726_016 - 3_072 + 8 * 256 + 2 * (256 * 64 + 64) + 256 * 64 + 64 * 256 + 256) \
        == 9_490_944
    assert format_counts(trainable, backbone) == "trainable 9.49M of 124.32M (7.6%)"
    assert format_counts(8_712_192, backbone) == "trainable 8.71M of 124.32M (7.0%)"


def test_invalid_arguments_raise():
    for blocks in [(0, 3), (3, 2), (1, 5)]:  # random-tiny has 4 blocks per tower; blocks are 1-based
        with pytest.raises(ValueError, match="blocks"):
            tiny(blocks=blocks)
    with pytest.raises(ValueError, match="temporal"):
        tiny(temporal="lstm")


# ----------------------------------------------------------------------------- equivalence with frozen CLIP
@pytest.mark.parametrize("temporal", ["attn", "conv", "none"])
def test_zero_adapters_equal_frozen_clip(temporal):
    model = tiny(temporal)
    zero_adapter_outputs(model)
    v, tokens = videos(), class_tokens()
    with torch.no_grad():
        frames = model.clip.encode_image(v.flatten(0, 1)).view(2, T, -1).mean(1)  # frozen CLIP frame mean (B, E)
        text = model.clip.encode_text(tokens)                                     # (C, E)
        torch.testing.assert_close(model.encode_video(v), frames, rtol=0, atol=1e-6)
        torch.testing.assert_close(model.encode_text(tokens), text, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.encode_text(tokens, adapted=False), text, rtol=0, atol=0)
    assert not model.encode_text(tokens, adapted=False).requires_grad  # the frozen branch runs without autograd


def test_blocks_before_the_first_adapted_one_run_without_autograd():
    model, grad_enabled = tiny(blocks=(3, 4)), []
    for tower in (model.clip.visual.transformer, model.clip.transformer):
        for j, block in enumerate(tower.resblocks):
            block.register_forward_hook(lambda mod, inp, out, j=j: grad_enabled.append((j, torch.is_grad_enabled())))
    model(videos(), class_tokens())
    assert sorted(set(grad_enabled)) == [(0, False), (1, False), (2, True), (3, True)]


# ------------------------------------------------------------------------------------------ gradient scaling
def test_grad_scale_identity():
    x = torch.randn(5, requires_grad=True)
    y = GradScale.apply(x, 0.25)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((5,), 0.25))


def test_gradient_scaling_learns_as_if_lambda_were_one():
    """Adapter weight gradients with lambda and the trick equal those of lambda = 1 without it; the gradient
    reaching the frozen stream through the adapter is lambda times that of lambda = 1."""
    torch.manual_seed(0)
    adapter = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 8))
    block_out, u0, g = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 8)  # g: fixed upstream gradient

    def grads(output_fn):
        adapter.zero_grad()
        u = u0.clone().requires_grad_(True)
        (output_fn(u) * g).sum().backward()
        return [p.grad.clone() for p in adapter.parameters()], u.grad

    lam = 0.005
    w_trick, u_trick = grads(lambda u: scaled_residual(block_out, u, adapter, lam))
    w_plain, u_plain = grads(lambda u: block_out + 1.0 * adapter(u))  # lambda = 1, no trick
    for a, b in zip(w_trick, w_plain):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(u_trick, lam * u_plain)
    # and the forward pass is the plain lambda-weighted residual
    torch.testing.assert_close(scaled_residual(block_out, u0, adapter, lam), block_out + lam * adapter(u0))


# ---------------------------------------------------------------------------------------- temporal modelling
@pytest.mark.parametrize("temporal, order_matters", [("attn", True), ("conv", True), ("none", False)])
def test_reversing_frames(temporal, order_matters):
    model, v = tiny(temporal), videos()
    with torch.no_grad():
        diff = (model.encode_video(v) - model.encode_video(v.flip(1))).abs().max().item()
    # Measured: ~1e-3 for attn/conv, ~2e-7 (summation-order noise) for none.
    assert (diff > 1e-5) if order_matters else (diff < 1e-5)


@pytest.mark.parametrize("frames", [6, 1])
@pytest.mark.parametrize("temporal", ["attn", "conv", "none"])
def test_other_frame_counts(temporal, frames):
    """A model built for T = 4 frames run on 6 or 1: the adapted block is still block(z) + lambda A(LN1(z)) written
    out by hand, the attention's position table resampled linearly in time (hand_attention)."""
    torch.manual_seed(0)
    model = MSTA(clip.build_random("random-tiny"), num_frames=T, rank=32, blocks=(2, 2), scale=LAM,
                 temporal=temporal)
    block, seen = capture_block(model, "vision", 1)
    with torch.no_grad():
        run_tower(model, "vision", v=torch.randn(2, frames, 3, 32, 32, generator=torch.Generator().manual_seed(4)))
        z = seen["z"]  # (B*frames, N, D)
        expected = block(z) + LAM * hand_adapter(model.adapters["1"], block.ln_1(z), "vision", frames)
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------- frozen backbone
def test_optimizer_step_leaves_clip_bit_identical():
    model, v, tokens = tiny("conv"), videos(), class_tokens()
    before = {k: t.clone() for k, t in model.clip.state_dict(keep_vars=False).items()}
    adapters_before = {k: t.clone() for k, t in model.trainable_state_dict().items()}
    model.train()
    assert not model.clip.training and model.adapters.training
    # Every parameter goes to the optimiser, with weight decay: frozen ones must still not move.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    text = model.encode_text(tokens)
    logits = model.logits(model.encode_video(v), text)
    loss = losses.total_loss(losses.classification_loss(logits, torch.tensor([0, 2])),
                             losses.consistency_loss(text, torch.randn(3, 64), torch.randn(3, 64)))
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in model.clip.parameters())
    after = model.clip.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not torch.equal(adapters_before[k], t) for k, t in model.trainable_state_dict().items()
               if k.endswith("weight"))


# -------------------------------------------------------------------------------------------- text prefix cache
def test_text_prefix_cache_matches_uncached_and_invalidates():
    model = tiny(blocks=(3, 4))  # a two-block prefix to cache
    tokens = class_tokens()

    def uncached(t):
        model._text_cache.clear()
        return model.encode_text(t)

    first = model.encode_text(tokens)
    assert len(model._text_cache) == 1
    again = model.encode_text(tokens.clone())  # another tensor, same content: a cache hit
    assert len(model._text_cache) == 1 and torch.equal(again, first)
    assert torch.equal(first, uncached(tokens))
    x, mask = model.text_prefix(tokens)  # the cached prefix equals the frozen embedding + blocks 1-2
    with torch.no_grad():
        ref, ref_mask = model.clip.text_embed(tokens)
        for block in model.clip.transformer.resblocks[:2]:
            ref = block(ref, ref_mask)
    assert torch.equal(x, ref) and torch.equal(mask, ref_mask)

    other = clip.tokenize(["a video of sword exercise.", "a video of kick.", "a video of yo yo."])  # same shape
    out_other = model.encode_text(other)
    assert len(model._text_cache) == 2 and not torch.allclose(out_other, first)
    assert torch.equal(out_other, uncached(other))
    tokens[0, 5] = other[0, 5]  # changed in place: same address, new content, so no stale hit
    assert torch.equal(model.encode_text(tokens), uncached(tokens))
    for i in range(10):  # the cache stays small
        model.encode_text(clip.tokenize([f"a video of class {i}."]))
    assert len(model._text_cache) <= 8


def test_text_cache_keeps_gradients_to_adapters():
    """The second call is a cache hit: the text adapters' gradients must be those of the first (a miss)."""
    model, tokens = tiny(blocks=(3, 4)), class_tokens()
    grads = []
    for _ in range(2):
        model.zero_grad()
        model.encode_text(tokens).square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.adapters.named_parameters() if "text" in k or "shared" in k})
    assert len(model._text_cache) == 1 and grads[0].keys() == grads[1].keys() and len(grads[0]) == 12
    assert grads[0]["2.text_down.weight"].abs().max() > 0  # blocks 3-4: adapters "2" and "3", 6 tensors each
    for k in grads[0]:
        assert torch.equal(grads[0][k], grads[1][k]), k


# ----------------------------------------------------------------------------------------------- checkpoints
def test_trainable_state_dict_round_trip():
    model = tiny()
    sd = model.trainable_state_dict()
    assert sd and all(k.startswith("adapters.") for k in sd)
    assert sum(t.numel() for t in sd.values()) == parameter_counts(model)[0]
    assert {k.split(".")[1] for k in sd} == {"1", "2", "3"}  # blocks 2-4 sit beside resblocks.1-3
    other = tiny(seed=1)
    v, tokens = videos(), class_tokens()
    assert not torch.allclose(other(v, tokens), model(v, tokens))
    other.load_trainable_state_dict(sd)
    torch.testing.assert_close(other(v, tokens), model(v, tokens), rtol=0, atol=0)
    with pytest.raises(RuntimeError):  # strict: a missing adapter key
        other.load_trainable_state_dict({k: t for k, t in sd.items() if "shared" not in k})
    with pytest.raises(KeyError):  # nothing but adapter keys
        other.load_trainable_state_dict({**sd, "clip.logit_scale": torch.tensor(0.0)})


def test_attention_key_bias_is_cancelled_by_softmax():
    """Why TemporalAttention's key has no bias: adding any b_k to every key leaves every output as it was (softmax
    removes q . b_k, the same for all keys of a row), so checkpoints that hold one load without it."""
    model, v, tokens = tiny(), videos(), class_tokens()
    assert all(m.key.bias is None for m in model.modules() if isinstance(m, adapters.TemporalAttention))
    before = model(v, tokens)
    for m in model.modules():
        if isinstance(m, adapters.TemporalAttention):  # a key with a large random bias: the same logits
            biased = torch.nn.Linear(m.key.in_features, m.key.out_features)
            with torch.no_grad():
                biased.weight.copy_(m.key.weight)
                biased.bias.normal_(0, 3.0)
            m.key = biased
    torch.testing.assert_close(model(v, tokens), before, rtol=1e-5, atol=1e-5)
    old = {**tiny().trainable_state_dict(), "adapters.1.temporal.key.bias": torch.ones(8)}  # an older checkpoint
    fresh = tiny(seed=1)
    fresh.load_trainable_state_dict(old)
    torch.testing.assert_close(fresh(v, tokens), tiny()(v, tokens), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------- autocast
@pytest.mark.parametrize("temporal", ["attn", "conv"])
def test_autocast_bf16_cpu(temporal):
    model, v, tokens = tiny(temporal), videos(), class_tokens()
    reference = model(v, tokens).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(v, tokens)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    torch.testing.assert_close(logits.detach(), reference, rtol=0.05, atol=0.05)
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert all(p.dtype == torch.float32 for p in model.adapters.parameters())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.adapters.parameters())
    assert model.encode_text(tokens).dtype == torch.float32  # the fp32 cache entry is not reused under autocast


def test_bf16_autocast_keeps_the_residual_streams_fp32():
    """Under bf16 autocast every block output in the adapted range of both towers, and the stream after the
    last adapter, stay fp32 (lambda*A = 0.005 A would mostly round away in a bf16 stream), while the matmuls
    (CLIP's and the adapters' Linear layers) still compute in bf16."""
    model = tiny("attn", blocks=(2, 4))
    seen = {}

    def record(name):
        def hook(module, inputs, output):  # returns None: a forward hook's return value would replace the output
            seen[name] = output.dtype
        return hook
    for tower, blocks in (("vision", model.clip.visual.transformer.resblocks),
                          ("text", model.clip.transformer.resblocks)):
        for j in range(model.start, model.stop):
            blocks[j].register_forward_hook(record(f"{tower} block {j + 1}"))
            blocks[j].mlp.c_fc.register_forward_hook(record(f"{tower} block {j + 1} c_fc"))
    # The stream after the last block's adapter: what ln_post / ln_final receive.
    for name, norm in (("vision out", model.clip.visual.ln_post), ("text out", model.clip.ln_final)):
        norm.register_forward_pre_hook(lambda m, inputs, name=name: seen.update({name: inputs[0].dtype}))
    model.adapters["3"].vision_up.register_forward_hook(record("adapter W_up"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(videos(), class_tokens())
    assert len(seen) == 2 * 3 * 2 + 3
    for name, dtype in seen.items():
        assert dtype == (torch.bfloat16 if name.endswith(("c_fc", "W_up")) else torch.float32), (name, dtype)


# ------------------------------------------------------------------------------- MSTA's own path, by hand
LAM = 0.2  # not the default 0.005, so a forward path that ignores MSTA's scale shows


def hand_attention(module, h, T):
    """TemporalAttention written out per video and token position: frames x = h + p (the position table p, linearly
    resampled in time when T is not the trained T0), weights softmax(x W_q (x W_k)^T / sqrt(r/4)) over the frames,
    values h W_v1 W_v2; out = weights @ values. h (B*T, N, r)."""
    lin = lambda m, x: F.linear(x, m.weight, m.bias)  # noqa: E731
    table, T0 = module.pos.detach(), module.pos.shape[0]
    if T != T0:  # frame t sits at s = t (T0 - 1) / (T - 1) of the trained table (a single frame: its first row)
        rows = []
        for t in range(T):
            s = t * (T0 - 1) / (T - 1) if T > 1 else 0.0
            i = min(int(s), T0 - 2)
            rows.append(table[i] + (s - i) * (table[i + 1] - table[i]))
        table = torch.stack(rows)  # (T, r)
    out = torch.empty_like(h)
    for b in range(h.shape[0] // T):
        for n in range(h.shape[1]):
            frames = h[b * T:(b + 1) * T, n]  # (T, r): position n of video b in each of its frames
            x = frames + table
            q, k = lin(module.query, x), lin(module.key, x)  # (T, r/4)
            w = torch.softmax(q @ k.T / q.shape[-1] ** 0.5, dim=-1)  # (T, T): row t weighs the frames for frame t
            out[b * T:(b + 1) * T, n] = w @ lin(module.value[1], lin(module.value[0], frames))
    return out


def hand_adapter(adapter, u, tower, T):
    """A(u) written out from the paper: W_up ReLU(W_shared ReLU(W_down u)), plus the temporal term for vision:
    this project's attention (hand_attention) or the paper's conv, both written out here."""
    lin = lambda m, x: F.linear(x, m.weight, m.bias)  # noqa: E731
    down, up = (adapter.vision_down, adapter.vision_up) if tower == "vision" else (adapter.text_down, adapter.text_up)
    h = F.relu(lin(adapter.shared, F.relu(lin(down, u))))  # (B*T, N, r) or (C, L, r)
    if tower == "text" or adapter.temporal is None:
        return lin(up, h)
    if isinstance(adapter.temporal, adapters.TemporalAttention):
        return lin(up, h + hand_attention(adapter.temporal, h, T))
    conv = adapter.temporal.conv  # groups = r: bottleneck channel i feeds output channels i*D/r .. (i+1)*D/r - 1
    BT, N, r = h.shape
    D = conv.weight.shape[0]
    x = h.view(BT // T, T, N, r).repeat_interleave(D // r, dim=-1)  # (B, T, N, D): channel d reads h[..., d // (D/r)]
    x = F.pad(x, (0, 0, 0, 0, 1, 1))  # zero frame before the first and after the last: (B, T + 2, N, D)
    y = sum(conv.weight[:, 0, k] * x[:, k:k + T] for k in range(3)) + conv.bias  # (B, T, N, D)
    return lin(up, h) + y.reshape(BT, N, D)


def capture_block(model, tower, j):
    """Hooks on CLIP block j of a tower: its input z and the next block's input (the adapted block's output)."""
    blocks = (model.clip.visual.transformer if tower == "vision" else model.clip.transformer).resblocks
    seen = {}

    def keep(name):
        def hook(module, args):  # returns None: a pre-hook's return value would replace the block's arguments
            seen.setdefault(name, args[0])
        return hook
    blocks[j].register_forward_pre_hook(keep("z"))
    blocks[j + 1].register_forward_pre_hook(keep("out"))
    return blocks[j], seen


def run_tower(model, tower, v=None, tokens=None):
    return model.encode_video(videos() if v is None else v) if tower == "vision" else model.encode_text(
        class_tokens() if tokens is None else tokens)


@pytest.mark.parametrize("temporal", ["attn", "conv", "none"])
@pytest.mark.parametrize("tower", ["vision", "text"])
def test_adapted_block_is_block_plus_lambda_adapter_of_ln1(tower, temporal):
    torch.manual_seed(0)
    model = MSTA(clip.build_random("random-tiny"), num_frames=T, rank=32, blocks=(2, 2), scale=LAM,
                 temporal=temporal)
    block, seen = capture_block(model, tower, 1)  # blocks=(2, 2): resblocks.1 is the one adapted block
    with torch.no_grad():
        run_tower(model, tower)
        z = seen["z"]
        mask = None if tower == "vision" else model.clip.attn_mask[:z.shape[1], :z.shape[1]]
        expected = block(z, attn_mask=mask) + LAM * hand_adapter(model.adapters["1"], block.ln_1(z), tower, T)
        frozen = block(z, attn_mask=mask)
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)
    assert (seen["out"] - frozen).abs().max() > 1e-3  # the adapter really adds something here


def adapter_grads(scale, tower, g_seed=3):
    """Through MSTA's own forward: gradients of sum(g * adapted block output) with respect to the adapter's
    weights and to the adapter's input u = LN1(z) (the gradient the adapter sends into the frozen stream)."""
    torch.manual_seed(0)
    model = MSTA(clip.build_random("random-tiny"), num_frames=T, rank=32, blocks=(2, 2), scale=scale,
                 temporal="conv")
    block, seen = capture_block(model, tower, 1)
    calls = []

    def leaf_u(module, args, out):  # MSTA's own call of LN1 (not the block's internal one): make u a leaf
        calls.append(module)
        if len(calls) == 2:
            seen["u"] = out.detach().requires_grad_(True)
            return seen["u"]
    block.ln_1.register_forward_hook(leaf_u)
    run_tower(model, tower)
    assert len(calls) == 2, "LN1 of the adapted block runs once in the block and once for the adapter"
    g = torch.randn(seen["out"].shape, generator=torch.Generator().manual_seed(g_seed))
    params = [p for p in model.adapters.parameters() if p.requires_grad]
    grads = torch.autograd.grad((seen["out"] * g).sum(), params + [seen["u"]], allow_unused=True)
    return grads[:-1], grads[-1]


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_msta_gradients_at_lambda_equal_lambda_one(tower):
    """MMA's gradient scaling inside MSTA: the adapter's weights get the gradients they would get at lambda = 1,
    and the gradient sent into the frozen stream through the adapter is lambda times that of lambda = 1."""
    w_lam, u_lam = adapter_grads(LAM, tower)
    w_one, u_one = adapter_grads(1.0, tower)
    used = [(a, b) for a, b in zip(w_lam, w_one) if b is not None]
    assert len(used) >= 4  # down, shared and up of this tower (the other tower's are unused)
    for a, b in used:  # equal up to float rounding (x lambda then x 1/lambda), far from the factor lambda
        assert b.abs().max() > 0 and (a - b).abs().max() < 1e-4 * b.abs().max()
    assert (u_lam - LAM * u_one).abs().max() < 1e-4 * u_lam.abs().max()


@pytest.mark.parametrize("temporal", ["attn", "conv"])
def test_temporal_modules_mix_frames_only_within_a_video(temporal):
    """Changing video 1's bottleneck features changes nothing of video 0's temporal term (frames of a video are
    consecutive along the first axis), and changes video 1's."""
    model = tiny(temporal)
    module = model.adapters["1"].temporal
    h = torch.randn(3 * T, 17, 32)  # (B*T, N, r), B = 3
    h2 = h.clone()
    h2[T:2 * T] += torch.randn(T, 17, 32)
    with torch.no_grad():
        a, b = module(h, T), module(h2, T)
    assert torch.equal(a[:T], b[:T]) and torch.equal(a[2 * T:], b[2 * T:])
    assert not torch.allclose(a[T:2 * T], b[T:2 * T])
    if temporal == "conv":  # a 3-tap convolution per token: token 5 of the changed video is all that moves
        h3 = h.clone()
        h3[T:2 * T, 5] += 1.0
        with torch.no_grad():
            c = module(h3, T)
        changed = (c != a).any(-1)  # (B*T, N)
        assert changed[T:2 * T, 5].all() and changed.sum() == T


def test_attention_over_frames_is_a_weighted_mean():
    """Attention weights over the frames sum to 1 for every frame: a clip whose T frames are identical gets the
    same temporal term in every frame, whatever the position embedding makes the weights."""
    module = tiny("attn").adapters["1"].temporal
    h = torch.randn(2, 1, 17, 32).expand(2, T, 17, 32).reshape(2 * T, 17, 32)  # (B*T, N, r), frames repeated
    with torch.no_grad():
        out = module(h, T).view(2, T, 17, 32)
    torch.testing.assert_close(out, out[:, :1].expand_as(out), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[0], out[1])


def test_logits_are_cosine_times_clip_temperature():
    """(B, C) logits = exp(logit_scale) cos(v, w): 1 / 0.07 in a freshly built CLIP (CLIP paper sec. 2.5)."""
    model, v, tokens = tiny(), videos(), class_tokens()
    with torch.no_grad():
        video_features, text_features = model.encode_video(v), model.encode_text(tokens)
        expected = F.cosine_similarity(video_features[:, None], text_features[None], dim=-1) / 0.07  # (B, C)
        torch.testing.assert_close(model.logits(video_features, text_features), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(v, tokens), expected, rtol=1e-5, atol=1e-5)


def test_initialisation_is_kaiming_fan_out_with_zero_biases():
    """MMA's initialisation: Kaiming-normal weights with the fan-out (std sqrt(2 / out features)), zero biases."""
    model = tiny("none", rank=32)
    adapter = model.adapters["1"]
    for layer in (adapter.vision_down, adapter.text_down, adapter.shared, adapter.vision_up, adapter.text_up):
        std = (2 / layer.weight.shape[0]) ** 0.5
        assert abs(layer.weight.std().item() / std - 1) < 0.1, layer
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


# ------------------------------------------------------------------------------------- activation checkpointing
def loss_and_adapter_grads(model, v, tokens):
    """One training forward and backward: the loss and every adapter tensor's gradient."""
    model.zero_grad(set_to_none=True)
    model._text_cache.clear()
    text = model.encode_text(tokens)
    loss = losses.total_loss(
        losses.classification_loss(model.logits(model.encode_video(v), text), torch.tensor([0, 2])),
        losses.consistency_loss(text, torch.randn(3, 64, generator=torch.Generator().manual_seed(2)),
                                torch.randn(3, 64, generator=torch.Generator().manual_seed(3))))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.adapters.named_parameters()}


@pytest.mark.parametrize("temporal", ["attn", "conv"])
@pytest.mark.parametrize("backbone", ["clip-frames", "viclip-joint"])
def test_checkpoint_blocks_gives_the_same_loss_and_gradients(backbone, temporal):
    """checkpoint_blocks recomputes the blocks from the first adapted one up in the backward pass (each runs
    twice: forward, then recomputation), and changes nothing of the loss or the adapters' gradients."""
    import viclip
    torch.manual_seed(0)
    build = clip.build_random("random-tiny") if backbone == "clip-frames" else viclip.build_random("random-ViCLIP-tiny")
    model, v = MSTA(build, num_frames=T, rank=32, blocks=(2, 3), temporal=temporal), videos()
    tokens = clip.tokenize(["a video of apply eye makeup.", "a video of yo yo.", "a video of kick ball."],
                           model.clip.context_length)
    calls = {}
    for tower, blocks in (("vision", model.clip.vision_blocks), ("text", model.clip.text_blocks)):
        for j, block in enumerate(blocks):
            # A pre-hook: the recomputation stops as soon as it has what the backward needs, which for the last
            # block is before its forward ends (its final residual add saves nothing), so a forward hook misses it.
            block.register_forward_pre_hook(lambda m, a, key=(tower, j): calls.update({key: calls.get(key, 0) + 1}))
    plain_loss, plain = loss_and_adapter_grads(model, v, tokens)
    assert set(calls.values()) == {1}  # checkpoint_blocks is off by default: no block recomputed
    calls.clear()
    model.checkpoint_blocks = True
    loss, grads = loss_and_adapter_grads(model, v, tokens)
    # Blocks 1 (the prefix, no autograd) run once; blocks 2-4 (adapted 2-3 and the frozen 4) twice.
    assert calls == {(tower, j): 1 if j == 0 else 2 for tower in ("vision", "text") for j in range(4)}
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == plain.keys() and len(grads) > 10
    for k in grads:
        torch.testing.assert_close(grads[k], plain[k], rtol=1e-5, atol=1e-6, msg=k)
    with torch.no_grad():  # nothing to recompute without autograd: each block runs once
        calls.clear()
        model(v, tokens)
    assert set(calls.values()) == {1}
