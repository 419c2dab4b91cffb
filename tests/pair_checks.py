"""A run's adapter pair used in another project: tests/test_pair.py runs this source with `python -c` in a folder
holding only adapters.py, one client (openclip_backbone.py or hf_backbone.py) and the pair (adapters.json +
adapters.safetensors), so nothing of this project can be imported. It imports torch, json, safetensors, adapters,
the client and its library.

It builds the library's CLIP from a file of OpenAI-format weights (a state dict in OpenAI's names, as
clip.py reads them), loads the pair onto it with json and safetensors alone, as docs/adapters.md shows, and saves
the logits of the given videos against the pair's own prompts.

usage: python -c "$(cat pair_checks.py)" {openclip,hf} WEIGHTS INPUTS OUT
  WEIGHTS  a torch.save'd OpenAI-format state dict
  INPUTS   a torch.save'd {"videos": (B, T, 3, H, W), "tokens": (C, 77)}: the tokens of the pair's prompts as this
           project makes them (open_clip's tokenizer must give the same ids; transformers' needs a download)
  OUT      where {"logits": (B, C)} goes
A pair that does not fit the backbone: its one-line refusal on stderr, exit status 3.
"""
import json
import sys

import torch
from safetensors.torch import load_file

import adapters


def openai_to_hf(sd):
    """(CLIPConfig, state dict) of Hugging Face's CLIPModel holding the OpenAI-format state dict sd: the same
    values, renamed, each packed q/k/v projection split in three, the two output projections transposed.
    Architecture read from the shapes; 64-wide heads and QuickGELU as in every OpenAI CLIP."""
    import transformers
    def layers(prefix):  # "visual.transformer.resblocks.3.ln_1.weight" -> block "3"
        return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})
    vw, patch = sd["visual.conv1.weight"].shape[0], sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    tw = sd["ln_final.weight"].shape[0]
    config = transformers.CLIPConfig(
        vision_config=dict(hidden_size=vw, intermediate_size=4 * vw, num_attention_heads=vw // 64,
                           num_hidden_layers=layers("visual.transformer.resblocks."), patch_size=patch,
                           image_size=patch * grid, hidden_act="quick_gelu", layer_norm_eps=1e-5),
        text_config=dict(hidden_size=tw, intermediate_size=4 * tw, num_attention_heads=tw // 64,
                         num_hidden_layers=layers("transformer.resblocks."), hidden_act="quick_gelu",
                         max_position_embeddings=sd["positional_embedding"].shape[0],
                         vocab_size=sd["token_embedding.weight"].shape[0], layer_norm_eps=1e-5),
        projection_dim=sd["text_projection"].shape[1])
    out = {"logit_scale": sd["logit_scale"], "text_projection.weight": sd["text_projection"].T,
           "visual_projection.weight": sd["visual.proj"].T,
           "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
           "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
           "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
           "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": sd["positional_embedding"]}
    for ours, theirs in (("visual.ln_pre", "vision_model.pre_layrnorm"),
                         ("visual.ln_post", "vision_model.post_layernorm"),
                         ("ln_final", "text_model.final_layer_norm")):
        out[f"{theirs}.weight"], out[f"{theirs}.bias"] = sd[f"{ours}.weight"], sd[f"{ours}.bias"]
    renames = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
               "attn.out_proj": "self_attn.out_proj"}
    for key, value in sd.items():
        for ours, theirs in (("visual.transformer.resblocks.", "vision_model.encoder.layers."),
                             ("transformer.resblocks.", "text_model.encoder.layers.")):
            if not key.startswith(ours):
                continue
            i, rest = key[len(ours):].split(".", 1)
            name, kind = rest.rsplit(".", 1)
            if name == "attn":  # in_proj_weight (3D, D) / in_proj_bias (3D,): q, k, v stacked in that order
                for part, chunk in zip("qkv", value.chunk(3)):
                    out[f"{theirs}{i}.self_attn.{part}_proj.{kind[len('in_proj_'):]}"] = chunk
            else:
                out[f"{theirs}{i}.{renames[name]}.{kind}"] = value
            break
    return config, out


def library_model(library, sd):
    """The library's CLIP holding sd's values, in float32 and eval mode."""
    if library == "openclip":
        import open_clip
        return open_clip.model.build_model_from_openai_state_dict(dict(sd)).float().eval()  # reads OpenAI's names
    import transformers
    config, hf_sd = openai_to_hf(sd)
    model = transformers.CLIPModel(config)
    missing, unexpected = model.load_state_dict(hf_sd, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    return model.eval()


def client(library, model):
    """The model behind the backbone contract, through the client copied beside this script."""
    if library == "openclip":
        from openclip_backbone import OpenCLIPBackbone
        return OpenCLIPBackbone(model)
    from hf_backbone import HFBackbone
    return HFBackbone(model)


if __name__ == "__main__":
    library, weights_file, inputs_file, out_file = sys.argv[1:5]
    backbone = client(library, library_model(library, torch.load(weights_file, weights_only=True)))
    inputs = torch.load(inputs_file, weights_only=True)
    # The two lines of docs/adapters.md: the pair, read with json and safetensors alone.
    config = json.load(open("adapters.json"))
    try:
        msta = adapters.from_pair(backbone, config, load_file("adapters.safetensors"))
    except adapters.PairMismatch as e:
        print(f"refused: {e}", file=sys.stderr)
        sys.exit(3)
    prompts = adapters.pair_prompts(config)  # the template with each class name
    if library == "openclip":
        import open_clip
        assert torch.equal(open_clip.get_tokenizer("ViT-B-16")(prompts), inputs["tokens"])
    with torch.no_grad():
        logits = msta(inputs["videos"], inputs["tokens"])  # (B, T, 3, H, W), (C, L) -> (B, C)
    torch.save({"logits": logits}, out_file)
    print(f"{library}: {len(prompts)} prompts, logits {tuple(logits.shape)}")
