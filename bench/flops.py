"""Analytic FLOP counts of one CLIP / MSTA step, for benchmark.py's utilisation figures.

Only matrix multiplies are counted (2mnk for an (m, k) @ (k, n)), in the model-FLOP convention: LayerNorm,
softmax, activations, the loss and the optimiser are left out (a few % of the work), and so are recomputations
the kernels may do (FlashAttention's backward). Counted is what the step actually runs: the cached text prefix
and the cached description features cost nothing in a step. Backward, per matmul: the gradient of its input
costs the forward again (dY W^T), the gradient of its weight once more (X^T dY). So a block whose weights train
costs 2x its forward; a frozen block the gradient passes through costs 1x for its linear layers and 2x for the
two attention products (both of whose operands need gradients); a block whose input needs no gradient and whose
weights are frozen (the no-grad prefix, and the first adapted block's frozen path) costs nothing.

A joint backbone (ViCLIP, visual.token_layout "joint") runs B sequences of M = 1 + grid^2 * T tokens instead of
B*T sequences of N, and projects one class token per video; its temporal modules see the B*grid^2 patch positions.

Shape legend: B videos, T frames, N tokens per frame (1 + grid^2), D width, C classes, E embedding,
L text length, r adapter rank.
"""


def mm(m, k, n):
    """FLOPs of (m, k) @ (k, n)."""
    return 2 * m * k * n


def block_flops(seqs, n, d, weight_grad=False, input_grad=False):
    """(forward, backward) FLOPs of one transformer block on `seqs` sequences of n tokens at width d.

    Forward: q, k, v and the output projection 4 x 2nd^2, the MLP (d -> 4d -> d) 2 x 8nd^2: 24nd^2 in linear
    layers; q k^T and attention @ v 2 x 2n^2 d = 4n^2 d (the full n x n, causal mask or not)."""
    linear, attention = seqs * 24 * n * d * d, seqs * 4 * n * n * d
    backward = linear * (weight_grad + input_grad) + 2 * attention * (weight_grad or input_grad)
    return linear + attention, backward


def adapter_flops(msta, tokens, width, input_grad, seqs=None, T=None):
    """(forward, backward) FLOPs of one adapter on `tokens` token vectors: down, shared, up; for vision (seqs =
    B*N sequences of T frames) also the temporal module. Every adapter weight trains: backward 2x, less the
    down-projection's input gradient where the block's input needs none (the first adapted block)."""
    r = msta.rank
    forward = mm(tokens, width, r) + mm(tokens, r, r) + mm(tokens, r, width)
    timed = seqs * T if seqs is not None else 0  # tokens the temporal module sees (joint: no class token)
    if seqs is not None and msta.temporal == "attn":  # q, k r -> r/4, value r -> r/4 -> r, q k^T, weights @ values
        forward += 3 * mm(timed, r, r // 4) + mm(timed, r // 4, r) + seqs * (mm(T, r // 4, T) + mm(T, T, r))
    elif seqs is not None and msta.temporal == "conv":  # groups = r: each of the D outputs sees 1 channel x 3 taps
        forward += 2 * timed * width * 3
    return forward, 2 * forward - (0 if input_grad else mm(tokens, width, r))


def step_flops(kind, model, B, T, prompts=None, msta=None, off=(), descriptions=()):
    """Analytic (forward, backward) FLOPs of one step. kind: "msta", "full" (full fine-tuning), "vit" (image
    encoder forward+backward) or "infer" (no backward); prompts (C, L) class tokens; descriptions: the (C*K, L)
    token tensors re-encoded in the step ("desc" off)."""
    v, t = model.visual, model.transformer
    grid, P, D, E = v.input_resolution // v.patch_size, v.patch_size, v.width, v.output_dim
    frames, N = B * T, grid * grid + 1
    joint = getattr(v, "token_layout", "frames") == "joint"
    # Sequences and their length in the vision tower; the temporal modules' sequences (token positions).
    seqs, n, positions = (B, 1 + grid * grid * T, B * grid * grid) if joint else (frames, N, B * N)
    trains = kind in ("full", "vit")  # all weights train
    fwd = mm(frames * grid * grid, 3 * P * P, D)  # the patch embedding, a stride-P conv = one matmul per patch
    bwd = fwd if trains else 0  # its weight gradient only: the pixels need none
    # Vision tower. Input gradients: full/vit from the first block (position and class embeddings train); MSTA
    # above the first adapted block, or everywhere when autograd runs through the prefix ("prefix" off).
    for j in range(v.layers):
        input_grad = trains or (kind == "msta" and (j > msta.start or "prefix" in off))
        f, b = block_flops(seqs, n, D, trains, input_grad)
        fwd, bwd = fwd + f, bwd + (b if kind != "infer" else 0)
        if msta is not None and kind == "msta" and msta.start <= j < msta.stop:
            f, b = adapter_flops(msta, seqs * n, D, input_grad, seqs=positions, T=T)
            fwd, bwd = fwd + f, bwd + b
        elif msta is not None and kind == "infer" and msta.start <= j < msta.stop:
            fwd += adapter_flops(msta, seqs * n, D, False, seqs=positions, T=T)[0]
    heads = B if joint else frames  # class tokens projected: one per video (joint) or per frame
    fwd += mm(heads, D, E)  # ln_post(class token) @ proj
    bwd += mm(heads, D, E) * (2 if trains else 1 if kind == "msta" else 0)
    if kind in ("vit", "infer"):
        return fwd, bwd
    # Text tower on the class prompts; full fine-tuning and MSTA trim them to L' (clip.CLIP.text_embed).
    C, W = len(prompts), t.width
    L = prompts.shape[1] if "trim" in off else int(prompts.argmax(-1).max()) + 1
    first = 0 if (kind == "full" or "cache" in off) else msta.start  # the cached prefix does not run
    for j in range(first, t.layers):
        input_grad = kind == "full" or j > msta.start or {"prefix", "cache"} <= set(off)
        f, b = block_flops(C, L, W, kind == "full", input_grad)
        fwd, bwd = fwd + f, bwd + b
        if kind == "msta" and msta.start <= j < msta.stop:
            f, b = adapter_flops(msta, C * L, W, input_grad)
            fwd, bwd = fwd + f, bwd + b
    fwd += mm(C, W, E)  # ln_final(end token) @ text_projection
    bwd += mm(C, W, E) * (2 if kind == "full" else 1)
    # Descriptions re-encoded in the step by the frozen branch: no backward. prompts.description_features runs
    # them in chunks of 256, each trimmed to its own longest text (or all 77 positions with "trim" off).
    for tokens in descriptions:
        for chunk in tokens.split(256):
            Lc = chunk.shape[1] if "trim" in off else int(chunk.argmax(-1).max()) + 1
            fwd += t.layers * block_flops(len(chunk), Lc, W)[0] + mm(len(chunk), W, E)
    return fwd, bwd
