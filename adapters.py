"""MSTA, the Multi-modal Spatio-Temporal Adapter, on a frozen CLIP.

Implements the adapter of "Efficient Transfer Learning for Video-language Foundation Models" (Chen et al.,
CVPR 2025), Sec. 3 "Multi-modal Spatio-Temporal Adapter". The layer shared by the two modalities, the adapter's
place beside each block (fed by the block's own LN1), the scale lambda, the Kaiming initialisation and the gradient
scaling follow MMA (Yang et al., CVPR 2024, "MMA: Multi-Modal Adapter for Vision-Language Models"), which MSTA
builds on. The losses are in losses.py.

For every adapted block j (1-based, inclusive range `blocks`), in both encoders:
    u  = LN1_j(z)                                the block's own first LayerNorm
    z' = Block_j(z)                              frozen, unchanged
    h  = ReLU(W_shared_j ReLU(W_down_j^m u))     m = vision or text; W_shared_j is one Linear(r, r) used by both
    A  = W_up_j^text h                           text
    A  = W_up_j^vision h + temporal term         vision: TemporalAttention or TemporalConv below
    z  = z' + lambda A                           lambda = 0.005
Video feature = mean over the T frames of the per-frame CLIP image feature; logits = exp(logit_scale) cos(v, w).

The backbone contract: MSTA drives any CLIP-like model through these members of the nn.Module it wraps, and through
nothing else (clip.CLIP and viclip.ViCLIP have them; clients/openclip_backbone.py and clients/hf_backbone.py, each
about 25 lines, give them to open_clip's and Hugging Face's CLIP):
  token_layout          "frames" or "joint" (below)
  vision_embed(x)       "frames": images (B*T, 3, H, W) -> (B*T, N, D); "joint": videos (B, T, 3, H, W) -> (B, M, D)
  vision_blocks         the vision blocks, in order
  vision_head(z)        (S, N or M, D) -> (S, E): one feature per sequence (S = B*T frames, or B videos)
  text_embed(tokens)    (C, L) -> (x (C, L', D), mask): mask is what the text blocks take as attn_mask
  text_blocks           the text blocks, in order
  text_head(x, tokens)  (C, L', D), (C, L) -> (C, E)
  logit_scale           log of the logit scale, a tensor (its device is the backbone's)
  token_embedding       the text token table (nn.Embedding), left out of parameter_counts' total
Every block is called block(x, attn_mask=mask), the mask a keyword (None in the vision tower), and has block.ln_1,
its first LayerNorm; a library whose blocks differ wraps them (clients/hf_backbone.py).

Two token layouts, told by the backbone (token_layout), never guessed from its type:
  "frames" (OpenAI CLIP): each frame is its own sequence (B*T, N, D); the frames meet only in the adapters.
  "joint"  (ViCLIP, the paper's backbone): one sequence per video (B, 1 + P*T, D), patch p of frame t at index
           1 + p*T + t; the video feature is the class token's (no frame mean). The temporal modules mix each patch
           position's T tokens, so the grouped Conv1d over T is exactly the paper's Conv3d with kernel (3, 1, 1);
           the class token, which has no frame axis, gets the spatial path (W_up h) only.
group_frames/ungroup_frames below are the only code that knows where a layout puts each frame's tokens.

Shape legend: B videos, T frames, N tokens per frame (1 + grid^2), D width, C classes, E embedding,
L text length, r adapter bottleneck (the rank); joint layout: P patches per frame (grid^2), M = 1 + P*T tokens.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


class GradScale(torch.autograd.Function):
    """Identity in the forward pass; the backward pass multiplies the gradient by `factor`."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scaled_residual(block_out, u, adapter, scale):
    """z' + lambda * adapter(u), with MMA's two gradient-scale identities.

    Why: with lambda = 0.005 the adapter's weights would receive gradients 200x smaller than at lambda = 1. MMA
    wraps lambda*A in an identity whose backward multiplies by 1/lambda, so the adapter learns as if lambda were 1,
    and wraps the adapter's input in one whose backward multiplies by lambda, so the gradient that flows back
    through the adapter into the frozen stream (and the adapters below) keeps its natural lambda-sized scale.
    """
    a = adapter(GradScale.apply(u, scale))
    return block_out + GradScale.apply(scale * a, 1.0 / scale)


def group_frames(h, T, layout="frames"):
    """Tokens in the backbone's layout -> (B*N, T, c): each token position's T frames in a row, for the temporal
    modules. "frames": h (B*T, N, c); "joint": h (B, 1 + P*T, c), whose class token has no frame axis and is left
    out (N = P)."""
    if layout == "joint":
        B, M, c = h.shape
        return h[:, 1:].reshape(B * ((M - 1) // T), T, c)  # (B, P*T, c) -> (B*P, T, c): position-major already
    BT, N, c = h.shape
    return h.view(BT // T, T, N, c).transpose(1, 2).reshape(-1, T, c)  # (B*T, N, c) -> (B*N, T, c)


def ungroup_frames(x, shape, T, layout="frames"):
    """The inverse of group_frames for a temporal output x (B*N, T, c'), shape = the input's (B*T, N, c) or
    (B, M, c): back to the backbone's layout (c' channels); the joint layout's class token gets zeros."""
    if layout == "joint":
        B, M, _ = shape
        x = x.reshape(B, M - 1, x.shape[-1])                               # (B*P, T, c') -> (B, P*T, c')
        return torch.cat([x.new_zeros(B, 1, x.shape[-1]), x], dim=1)      # (B, M, c'): class token 0
    BT, N, _ = shape
    return x.view(BT // T, N, T, -1).transpose(1, 2).reshape(BT, N, -1)  # (B*N, T, c') -> (B*T, N, c')


class TemporalAttention(nn.Module):
    """temporal="attn": per token position, single-head attention over the T frames inside the bottleneck.

    This project's own module, not the paper's: the paper's temporal module is a 3-D convolution with kernel
    (3, 1, 1), TemporalConv below. Queries and keys are small projections r -> r/4 of h + a learned temporal
    position embedding (T, r); the values a low-rank map r -> r/4 -> r of h. W_up that follows serves as the output
    projection, so there is no other. Cost: T*r + 3*(r*r/4 + r/4) + r*r/4 + r parameters per block (68,032 at
    r = 256, T = 8: 9.49M trainable with r 256 in blocks 1-12, 0.78M more than the conv module's 8.71M, the paper's
    largest count, and 7.6% of ViT-B/16's 124.3M where the paper reports 2-7%; a full r x r value map would make it
    9.88M). Two parts carry frame order: the position
    embedding (without it attention is permutation-equivariant and the frame-mean would ignore the order) and the
    value map (values = h itself would add the neighbour frame's features in the frame's own feature space, where
    "bright now, dark next" and "dark now, bright next" sum to the same thing). Bidirectional, since the whole clip
    is seen at once.
    """

    def __init__(self, rank, num_frames):
        super().__init__()
        self.pos = nn.Parameter(torch.empty(num_frames, rank))  # (T, r)
        self.query = nn.Linear(rank, rank // 4)
        self.key = nn.Linear(rank, rank // 4)
        # Low rank (r/4) rather than a full r x r map: 4x fewer parameters; no nonlinearity between the two.
        self.value = nn.Sequential(nn.Linear(rank, rank // 4), nn.Linear(rank // 4, rank))

    def position(self, T):
        if T == self.pos.shape[0]:
            return self.pos
        # Another frame count than trained with (e.g. a 16-frame test of an 8-frame model): resample the table
        # linearly in time, as ViT position tables are resampled for another resolution.
        return F.interpolate(self.pos.T[None], size=T, mode="linear", align_corners=True)[0].T  # (T', r) -> (T, r)

    def forward(self, h, T, layout="frames"):
        """h (B*T, N, r) -> the frame-mixed features (B*T, N, r), to be added to h (joint layout: (B, M, r))."""
        shape, h = h.shape, group_frames(h, T, layout)                    # -> (B*N, T, r)
        x = h + self.position(T).to(h.dtype)                              # (B*N, T, r)
        q, k = self.query(x), self.key(x)                                 # (B*N, T, r/4)
        w = (q @ k.transpose(1, 2) * q.shape[-1] ** -0.5).softmax(-1)     # (B*N, T, T), rows sum to 1 over frames
        out = w.to(h.dtype) @ self.value(h)                               # (B*N, T, r)
        return ungroup_frames(out, shape, T, layout)                      # -> (B*T, N, r)


class TemporalConv(nn.Module):
    """temporal="conv": the paper's temporal up-projection, a 3-tap convolution over time with groups=r mapping the
    r bottleneck channels straight to D (D*3 + D = 3,072 parameters at D = 768, which the paper's counts imply)."""

    def __init__(self, rank, width):
        super().__init__()
        self.conv = nn.Conv1d(rank, width, kernel_size=3, padding=1, groups=rank)

    def forward(self, h, T, layout="frames"):
        """h (B*T, N, r) -> (B*T, N, D), to be added to W_up h (joint layout: (B, M, r) -> (B, M, D))."""
        x = group_frames(h, T, layout).transpose(1, 2)                            # -> (B*N, T, r) -> (B*N, r, T)
        y = self.conv(x)                                                          # (B*N, D, T)
        return ungroup_frames(y.transpose(1, 2), h.shape, T, layout)              # (B*N, T, D) -> (B*T, N, D)


class LayerAdapter(nn.Module):
    """The adapters of one block index: a vision and a text branch that meet in one shared Linear(r, r)."""

    def __init__(self, vision_width, text_width, rank, temporal, num_frames):
        super().__init__()
        self.vision_down = nn.Linear(vision_width, rank)
        self.text_down = nn.Linear(text_width, rank)
        self.shared = nn.Linear(rank, rank)  # MMA: the only place the two modalities meet (gradients from both)
        self.vision_up = nn.Linear(rank, vision_width)
        self.text_up = nn.Linear(rank, text_width)
        self.temporal = {"attn": lambda: TemporalAttention(rank, num_frames),
                         "conv": lambda: TemporalConv(rank, vision_width),
                         "none": lambda: None}[temporal]()

    def text(self, u):
        """u (C, L, D) -> A (C, L, D)."""
        h = F.relu(self.shared(F.relu(self.text_down(u))))  # (C, L, r)
        return self.text_up(h)

    def vision(self, u, T, layout="frames"):
        """u (B*T, N, D) -> A (B*T, N, D); the frames of one video are consecutive along the first axis.
        Joint layout: u (B, M, D) -> A (B, M, D)."""
        h = F.relu(self.shared(F.relu(self.vision_down(u))))  # (B*T, N, r)
        if isinstance(self.temporal, TemporalAttention):
            h = h + self.temporal(h, T, layout)  # mix the frames inside the bottleneck, before the up-projection
        a = self.vision_up(h)
        if isinstance(self.temporal, TemporalConv):
            a = a + self.temporal(h, T, layout)  # the temporal up-projection runs beside W_up
        return a


class MSTA(nn.Module):
    """A frozen CLIP plus multi-modal spatio-temporal adapters in blocks first..last (1-based, inclusive).

    clip_model is any module with the backbone contract (header). rank, blocks and scale default to the authors'
    released few-shot and base-to-novel setting (ADAPTER_DIM 128, ADAPTER_START 8, ADAPTER_END 12, ADAPTER_SCALE
    0.005 in every log of their logs/MSTA/), whose temporal module is the convolution; temporal defaults to "attn",
    this project's own module. The CLIP is kept by reference (not copied) and frozen in place: requires_grad off,
    always in eval mode. Adapter keys are "adapters.<i>.", i the 0-based index of the block they sit beside.

    checkpoint_blocks=True (an attribute too, switchable at any time) trades compute for memory: while autograd is
    on, every block from the first adapted one up runs under torch.utils.checkpoint, so its activations are freed
    after the forward pass and recomputed in the backward pass (one more forward of those blocks; same gradients).
    """

    def __init__(self, clip_model, num_frames=8, rank=128, blocks=(8, 12), scale=0.005, temporal="attn",
                 checkpoint_blocks=False):
        super().__init__()
        vision_blocks, text_blocks = clip_model.vision_blocks, clip_model.text_blocks
        depth = min(len(vision_blocks), len(text_blocks))  # one shared layer per index: both encoders need block j
        first, last = blocks
        if not 1 <= first <= last <= depth:
            raise ValueError(f"blocks={tuple(blocks)}: need 1 <= first <= last <= {depth} (1-based, inclusive; the "
                             f"model has {len(vision_blocks)} vision and {len(text_blocks)} text blocks)")
        if temporal not in ("attn", "conv", "none"):
            raise ValueError(f'temporal={temporal!r}: choose "attn", "conv" or "none"')
        if not scale > 0:
            raise ValueError(f"scale={scale}: must be > 0 (the gradient scaling divides by it)")
        self.clip = clip_model.requires_grad_(False).eval()
        self.num_frames, self.rank, self.scale, self.temporal = num_frames, rank, scale, temporal
        self.checkpoint_blocks = checkpoint_blocks
        self.start, self.stop = first - 1, last  # 0-based python range of the adapted blocks
        # Widths read from the weights, so one code path serves ViT-B/32, B/16 and L/14.
        vision_width, text_width = vision_blocks[0].ln_1.weight.shape[0], text_blocks[0].ln_1.weight.shape[0]
        self.adapters = nn.ModuleDict({
            str(j): LayerAdapter(vision_width, text_width, rank, temporal, num_frames)
            for j in range(self.start, self.stop)})
        self.reset_parameters()
        # Initialised on the CPU, then moved: the same seed gives the same adapters on every device.
        self.adapters.to(clip_model.logit_scale.device)
        self._text_cache = {}  # key -> (x (C, L, D), mask (L, L)): the text prefix, see text_prefix()

    def reset_parameters(self):
        """MMA's initialisation: Kaiming-normal (fan_out, relu) weights and zero biases; the temporal position
        embedding small normal (std 0.02, ViT's convention)."""
        for m in self.adapters.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, TemporalAttention):
                nn.init.normal_(m.pos, std=0.02)

    def train(self, mode=True):
        super().train(mode)
        self.clip.eval()  # frozen means frozen: the backbone never switches to training behaviour
        return self

    def adapted_blocks(self, z, blocks, adapter, mask=None):
        """Blocks start.. of one encoder: adapted ones add lambda*A, later ones run frozen but with autograd,
        since the adapters' gradients flow back through them. adapter(j, u) runs the adapter of block j."""
        def run(j, z):
            block = blocks[j]
            if j >= self.stop:
                return block(z, attn_mask=mask)
            return scaled_residual(block(z, attn_mask=mask), block.ln_1(z), lambda u: adapter(j, u), self.scale)
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        for j in range(self.start, len(blocks)):
            # Non-reentrant checkpointing: keeps the autocast state for the recomputation and needs no input that
            # requires grad (the first block's input comes from the no-grad prefix).
            z = checkpoint(run, j, z, use_reentrant=False) if recompute else run(j, z)
        return z

    def encode_video(self, videos):
        """videos (B, T, 3, H, W) -> (B, E), not normalised: the mean of the per-frame image features ("frames"
        layout), or the joint encoder's class-token feature ("joint")."""
        T, blocks, layout = videos.shape[1], self.clip.vision_blocks, self.clip.token_layout
        with torch.no_grad():  # nothing below the first adapted block is trained: store no activations
            z = embed_video(self.clip, videos)
            for block in blocks[:self.start]:
                z = block(z, attn_mask=None)
        z = self.adapted_blocks(z, blocks, lambda j, u: self.adapters[str(j)].vision(u, T, layout))
        return video_head(self.clip, z, videos.shape[0])

    def text_prefix(self, tokens):
        """Token embedding plus the frozen blocks below the first adapted one: (x (C, L, D), mask).

        It depends only on the tokens, and the class-name tokens are the same every step, so it is cached. The
        key is the tokens' content (not their address, which a new tensor may reuse) plus device and autocast
        state, so different tokens, devices or precisions never share an entry. Few label sets are in use at
        once (train, base, novel), so the 8 newest entries are kept.
        """
        device = tokens.device.type
        key = (str(tokens.device), torch.is_autocast_enabled(device), torch.get_autocast_dtype(device),
               tuple(tokens.shape), tuple(tokens.flatten().tolist()))
        if key not in self._text_cache:
            with torch.no_grad():
                x, mask = self.clip.text_embed(tokens)  # (C, L, D), mask (L, L) for a causal text tower
                for block in self.clip.text_blocks[:self.start]:
                    x = block(x, attn_mask=mask)
            if len(self._text_cache) >= 8:
                del self._text_cache[next(iter(self._text_cache))]  # dicts keep insertion order: oldest first
            self._text_cache[key] = (x, mask)
        return self._text_cache[key]

    def encode_text(self, tokens, adapted=True):
        """tokens (C, L) -> (C, E), not normalised. adapted=False is the frozen CLIP text encoder (the branch
        that encodes the descriptions), run without autograd."""
        if not adapted:
            with torch.no_grad():
                return backbone_text_features(self.clip, tokens)
        x, mask = self.text_prefix(tokens)
        x = self.adapted_blocks(x, self.clip.text_blocks, lambda j, u: self.adapters[str(j)].text(u), mask)
        return self.clip.text_head(x, tokens)  # (C, L, D) -> (C, E)

    def logits(self, video_features, text_features):
        """(B, E), (C, E) -> (B, C) = exp(logit_scale) * cos, logit_scale frozen at the backbone's value
        (100 in OpenAI's released CLIPs; ViCLIP's learned temperature, see viclip.ViCLIP.logit_scale)."""
        return cosine_logits(video_features, text_features, self.clip.logit_scale)

    def forward(self, videos, tokens):
        """videos (B, T, 3, H, W), class tokens (C, L) -> logits (B, C)."""
        return self.logits(self.encode_video(videos), self.encode_text(tokens))

    def trainable_state_dict(self):
        """Only the adapter tensors, keys "adapters.*": the whole of what training changes."""
        return {"adapters." + k: v for k, v in self.adapters.state_dict().items()}

    def load_trainable_state_dict(self, state_dict):
        """Load trainable_state_dict() output; every adapter key must be present and nothing else."""
        stray = [k for k in state_dict if not k.startswith("adapters.")]
        if stray:
            raise KeyError(f"not adapter keys: {stray[:5]}")
        self.adapters.load_state_dict({k[len("adapters."):]: v for k, v in state_dict.items()}, strict=True)


def embed_video(backbone, videos):
    """videos (B, T, 3, H, W) -> the backbone's first tokens: (B*T, N, D) ("frames") or (B, M, D) ("joint")."""
    if backbone.token_layout == "joint":
        return backbone.vision_embed(videos)
    return backbone.vision_embed(videos.flatten(0, 1))  # (B, T, 3, H, W) -> (B*T, 3, H, W) -> (B*T, N, D)


def video_head(backbone, z, B):
    """Tokens after the last block -> the video feature (B, E): the class token's ("joint") or the frame mean."""
    features = backbone.vision_head(z)  # (B, E) joint, (B*T, E) frames
    if backbone.token_layout == "joint":
        return features
    return features.view(B, -1, features.shape[-1]).mean(1)  # (B*T, E) -> (B, T, E) -> (B, E)


def cosine_logits(video_features, text_features, logit_scale):
    """(B, E), (C, E) -> (B, C) = exp(logit_scale) * cos(v, w): MSTA's logits, and the frozen backbone's."""
    # In fp32 even under autocast: bf16 keeps ~3 digits, which the x100 scale turns into ~0.3 logit noise.
    with torch.autocast(video_features.device.type, enabled=False):
        v = F.normalize(video_features.float(), dim=-1)
        w = F.normalize(text_features.float(), dim=-1)
        return logit_scale.exp().float() * v @ w.T  # (B, E) @ (E, C) -> (B, C)


def backbone_video_features(backbone, videos):
    """videos (B, T, 3, H, W) -> (B, E): the backbone's own video feature through the contract, no adapters (the
    zero-shot baseline, full fine-tuning). Autograd as the caller has it."""
    z = embed_video(backbone, videos)
    for block in backbone.vision_blocks:
        z = block(z, attn_mask=None)
    return video_head(backbone, z, videos.shape[0])


def backbone_text_features(backbone, tokens):
    """tokens (C, L) -> (C, E): the backbone's own text feature through the contract, no adapters."""
    x, mask = backbone.text_embed(tokens)
    for block in backbone.text_blocks:
        x = block(x, attn_mask=mask)
    return backbone.text_head(x, tokens)


def parameter_counts(model):
    """(trainable, backbone_total) for an MSTA model. The backbone total leaves out the token-embedding table, the
    paper's convention: 8.71M trainable is 7.0% of ViT-B/16's 124.3M (149.6M minus the 49408 x 512 table; ViCLIP-B/16
    also holds 124.3M)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    backbone = sum(p.numel() for p in model.clip.parameters()) - model.clip.token_embedding.weight.numel()
    return trainable, backbone


def format_counts(trainable, total):
    """"trainable X.XXM of Y.YYM (Z.Z%)", as train.py prints it."""
    return f"trainable {trainable / 1e6:.2f}M of {total / 1e6:.2f}M ({100 * trainable / total:.1f}%)"
