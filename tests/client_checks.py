"""The checks of one backbone client (clients/openclip_backbone.py or clients/hf_backbone.py) with adapters.py, on
its library's CLIP built with random weights (no download). tests/test_clients.py runs this source with `python -c`
in a folder holding only copies of adapters.py and the client, which proves the two work copied alone. It imports
torch, adapters, the client and its library, nothing of this project.

usage: python -c "$(cat client_checks.py)" {openclip,hf} CHECK [CHECK ...], CHECK one of:
  features  zeroed adapters give the library's own image features (frame mean) and text features, to 1e-5
  count     the conv adapters at r 128 in blocks 8-12 of a ViT-B/16 train exactly 1,744,000 parameters
  train     one AdamW step changes every adapter weight and no backbone tensor; checkpoint_blocks changes no gradient
  order     reversing the frames changes the video feature for attn and conv, not for none
"""
import sys

import torch

import adapters

T, R = 4, 32  # frames per video; tiny models see 32 px frames
# ViT-B/16 and a tiny model: width, layers, heads of each tower, embedding size, patch and image size.
SIZES = {"B/16": dict(vision=(768, 12, 12), text=(512, 12, 8), embed=512, patch=16, image=224),
         "tiny": dict(vision=(128, 4, 2), text=(128, 4, 2), embed=64, patch=8, image=R)}


def build(library, size):
    """(library model in eval mode, its client backbone, image features fn, text features fn), random weights."""
    s = SIZES[size]
    (vw, vl, vh), (tw, tl, th) = s["vision"], s["text"]
    if library == "openclip":
        import open_clip
        from openclip_backbone import OpenCLIPBackbone
        if size == "B/16":
            # On the default device (meta for the count), which create_model would otherwise move the model off.
            model = open_clip.create_model("ViT-B-16", pretrained=None, device=torch.get_default_device())
        else:
            model = open_clip.CLIP(s["embed"], dict(layers=vl, width=vw, head_width=vw // vh, patch_size=s["patch"],
                                                    image_size=s["image"]),
                                   dict(context_length=77, vocab_size=49408, width=tw, heads=th, layers=tl))
        return model.eval(), OpenCLIPBackbone(model), model.encode_image, model.encode_text
    import transformers
    from hf_backbone import HFBackbone
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=tw, intermediate_size=4 * tw, num_hidden_layers=tl, num_attention_heads=th),
        vision_config=dict(hidden_size=vw, intermediate_size=4 * vw, num_hidden_layers=vl, num_attention_heads=vh,
                           image_size=s["image"], patch_size=s["patch"]),
        projection_dim=s["embed"])
    model = transformers.CLIPModel(config).eval()
    pooled = lambda out: out if isinstance(out, torch.Tensor) else out.pooler_output  # noqa: E731 (v4 or v5)
    return (model, HFBackbone(model), lambda x: pooled(model.get_image_features(pixel_values=x)),
            lambda t: pooled(model.get_text_features(input_ids=t)))


def inputs(seed=0):
    """Videos (2, T, 3, R, R) and 3 texts of CLIP's token form: start id, word ids, end id, zero padding to 77."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(3, 77, dtype=torch.long)
    for i, n in enumerate((4, 9, 6)):
        tokens[i, :n + 2] = torch.cat([torch.tensor([49406]), torch.randint(1, 49405, (n,), generator=g),
                                       torch.tensor([49407])])
    return torch.randn(2, T, 3, R, R, generator=g), tokens


def msta(backbone, temporal, seed=0):
    torch.manual_seed(seed)
    return adapters.MSTA(backbone, num_frames=T, rank=32, blocks=(2, 4), temporal=temporal)


def zero_adapter_outputs(model):
    with torch.no_grad():
        for a in model.adapters.values():
            for p in [*a.vision_up.parameters(), *a.text_up.parameters(),
                      *(a.temporal.parameters() if isinstance(a.temporal, adapters.TemporalConv) else [])]:
                p.zero_()


def check_features(library):
    model, backbone, image, text = build(library, "tiny")
    videos, tokens = inputs()
    with torch.no_grad():
        want_video = image(videos.flatten(0, 1)).view(2, T, -1).mean(1)  # (B*T, E) -> (B, T, E) -> (B, E)
        want_text = text(tokens)                                         # (C, E)
        for temporal in ("attn", "conv", "none"):
            m = msta(backbone, temporal)
            assert (m.encode_video(videos) - want_video).abs().max() > 1e-3, "the adapters must change the output"
            zero_adapter_outputs(m)
            for got, want in ((m.encode_video(videos), want_video), (m.encode_text(tokens), want_text),
                              (m.encode_text(tokens, adapted=False), want_text),
                              (adapters.backbone_video_features(backbone, videos), want_video)):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def check_count(library):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        _, backbone, _, _ = build(library, "B/16")
    model = adapters.MSTA(backbone, rank=128, blocks=(8, 12), temporal="conv")
    trainable, _ = adapters.parameter_counts(model)
    assert trainable == 1_744_000, trainable
    assert all(p.requires_grad == name.startswith("adapters.") for name, p in model.named_parameters())


def check_train(library):
    model, backbone, _, _ = build(library, "tiny")
    videos, tokens = inputs()
    for temporal in ("attn", "conv"):
        m = msta(backbone, temporal).train()
        before = {k: t.clone() for k, t in model.state_dict().items()}
        adapters_before = {k: t.clone() for k, t in m.trainable_state_dict().items()}
        grads = []
        for recompute in (False, True):  # the same gradients with activation checkpointing
            m.checkpoint_blocks = recompute
            m.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(videos, tokens), torch.tensor([0, 2])).backward()
            grads.append([p.grad.clone() for p in m.adapters.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        # Every parameter goes to the optimiser, with weight decay: the frozen ones must still not move.
        torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1).step()
        after = model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        assert all(not torch.equal(adapters_before[k], t) for k, t in m.trainable_state_dict().items()
                   if k.endswith("weight"))


def check_order(library):
    _, backbone, _, _ = build(library, "tiny")
    videos, _ = inputs()
    for temporal in ("attn", "conv", "none"):
        with torch.no_grad():
            m = msta(backbone, temporal)
            diff = (m.encode_video(videos) - m.encode_video(videos.flip(1))).abs().max().item()
        assert (diff > 1e-5) if temporal != "none" else (diff < 1e-5), (temporal, diff)


if __name__ == "__main__":
    checks = {"features": check_features, "count": check_count, "train": check_train, "order": check_order}
    for check in sys.argv[2:]:
        checks[check](sys.argv[1])
        print(f"{sys.argv[1]} {check}: ok", flush=True)
