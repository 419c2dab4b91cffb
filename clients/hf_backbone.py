"""Hugging Face transformers' CLIPModel behind adapters.py's backbone contract (see its header): copy this file
with adapters.py.

    model = transformers.CLIPModel.from_pretrained("openai/clip-vit-base-patch16")
    msta = adapters.MSTA(HFBackbone(model), num_frames=8, temporal="conv")

Each part repeats transformers' own forward (models/clip/modeling_clip.py: CLIPVisionModel and CLIPTextModel,
get_image_features, get_text_features), so with zeroed adapters MSTA gives their frame mean and text features.
Written for transformers 5, whose encoder layer is called layer(hidden_states, attention_mask) and returns a tensor.
"""
import torch


class Layer:
    """One HF encoder layer as the contract calls a block: block(x, attn_mask=mask), block.ln_1."""

    def __init__(self, layer):
        self.layer, self.ln_1 = layer, layer.layer_norm1

    def __call__(self, x, attn_mask=None):
        return self.layer(x, attn_mask)


class HFBackbone(torch.nn.Module):
    token_layout = "frames"  # CLIPModel encodes images: each frame is its own sequence

    def __init__(self, model):
        super().__init__()
        self.model = model  # registered: MSTA freezes it, and it moves with .to()
        self.vision_blocks = [Layer(layer) for layer in model.vision_model.encoder.layers]  # plain lists: the
        self.text_blocks = [Layer(layer) for layer in model.text_model.encoder.layers]  # weights live in model

    logit_scale = property(lambda self: self.model.logit_scale)
    token_embedding = property(lambda self: self.model.text_model.embeddings.token_embedding)

    def vision_embed(self, images):  # (B, 3, H, W) -> (B, N, D)
        vm = self.model.vision_model
        return vm.pre_layrnorm(vm.embeddings(images))

    def vision_head(self, z):  # (B, N, D) -> (B, E)
        return self.model.visual_projection(self.model.vision_model.post_layernorm(z[:, 0]))

    def text_embed(self, tokens):  # (C, L) -> ((C, L, D), additive causal mask (1, 1, L, L), HF's form)
        x, L = self.model.text_model.embeddings(input_ids=tokens), tokens.shape[1]
        mask = torch.full((L, L), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device).triu(1)
        return x, mask[None, None]

    def text_head(self, x, tokens):  # (C, L, D) -> (C, E), pooled by CLIPTextModel's rule for the end token
        tm = self.model.text_model
        eos = tm.eos_token_id  # 2 in old configs, whose end token is the largest id; else the first eos id
        end = tokens.argmax(-1) if eos == 2 else (tokens == eos).int().argmax(-1)
        x = tm.final_layer_norm(x)[torch.arange(x.shape[0], device=x.device), end]  # (C, L, D) -> (C, D)
        return self.model.text_projection(x)
