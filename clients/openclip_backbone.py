"""open_clip's CLIP behind adapters.py's backbone contract (see its header): copy this file with adapters.py.

    model = open_clip.create_model("ViT-B-16", pretrained="openai")
    msta = adapters.MSTA(OpenCLIPBackbone(model), num_frames=8, temporal="conv")

Each part repeats open_clip's own forward (open_clip/transformer.py VisionTransformer._embeds and _pool, model.py
CLIP.encode_text), so with zeroed adapters MSTA gives encode_image's frame mean and encode_text; one departure:
under autocast the vision stream stays in the weights' dtype, as clip.py keeps it (vision_embed). open_clip's blocks
already take attn_mask as a keyword and name their first LayerNorm ln_1. ViT towers pooled on the class token.
"""
import torch
from open_clip.transformer import text_global_pool


class OpenCLIPBackbone(torch.nn.Module):
    token_layout = "frames"  # open_clip encodes images: each frame is its own sequence

    def __init__(self, model):
        super().__init__()
        if getattr(model.visual, "attn_pool", None) is not None or getattr(model.visual, "pool_type", "tok") != "tok":
            raise ValueError("OpenCLIPBackbone needs a ViT image tower pooled on its class token")
        self.model = model

    vision_blocks = property(lambda self: self.model.visual.transformer.resblocks)
    text_blocks = property(lambda self: self.model.transformer.resblocks)
    logit_scale = property(lambda self: self.model.logit_scale)
    token_embedding = property(lambda self: self.model.token_embedding)

    def vision_embed(self, images):  # (B, 3, H, W) -> (B, N, D); patch dropout is off in eval mode
        v = self.model.visual
        # The residual stream in the weights' dtype (fp32) also under autocast, as clip.py's: open_clip's own
        # forward takes the convolution's dtype (bf16 under autocast), which rounds away most of lambda * A.
        dtype = v.conv1.weight.dtype
        x = v.conv1(images.to(dtype)).to(dtype).flatten(2).transpose(1, 2)  # (B, D, grid, grid) -> (B, grid^2, D)
        cls = v.class_embedding.to(dtype).expand(x.shape[0], 1, -1)  # (D,) -> (B, 1, D)
        return v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(dtype))

    def vision_head(self, z):  # (B, N, D) -> (B, E): LayerNorm is per token, so ln_post of the class token alone
        return self.model.visual.ln_post(z[:, 0]) @ self.model.visual.proj

    def text_embed(self, tokens):  # (C, L) -> ((C, L, D), causal mask (L, L))
        m, L = self.model, tokens.shape[1]
        dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(dtype) + m.positional_embedding[:L].to(dtype)
        return x, m.attn_mask[:L, :L]

    def text_head(self, x, tokens):  # (C, L, D) -> (C, E), pooled by open_clip's own rule (argmax or eos id)
        m = self.model
        x = text_global_pool(m.ln_final(x), tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        return m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
