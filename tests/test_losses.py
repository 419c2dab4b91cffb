"""Tests of losses.py: L_CE, L_CC against hand-computed values, and the frozen description features."""
import math

import pytest
import torch
import torch.nn.functional as F

import clip
from adapters import MSTA
from losses import classification_loss, consistency_loss, total_loss
from prompts import description_features


def test_classification_loss_hand_value():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])  # softmax (1/4, 3/4) and (1/2, 1/2)
    loss = classification_loss(logits, torch.tensor([1, 0]))
    torch.testing.assert_close(loss, torch.tensor((-math.log(0.75) - math.log(0.5)) / 2))


def test_consistency_loss_hand_value():
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0]])           # trainable branch, one row per class (C, E)
    spatial = torch.tensor([[0.0, 3.0], [2.0, 0.0]])     # cos: 0 and 1/sqrt(2) (lengths do not matter)
    temporal = torch.tensor([[0.5, 0.0], [-1.0, -1.0]])  # cos: 1 and -1
    expected = ((2 - 0 - 1) + (2 - 1 / math.sqrt(2) + 1)) / 2  # = 1.6464...
    torch.testing.assert_close(consistency_loss(w, spatial, temporal), torch.tensor(expected))
    assert consistency_loss(w, w, w).abs() < 1e-6  # equal directions: no penalty


def test_total_loss_and_gradient_reaches_only_the_trainable_branch():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    w = torch.randn(3, 8, requires_grad=True)
    spatial, temporal = torch.randn(3, 8), torch.randn(3, 8)
    loss = total_loss(classification_loss(logits, labels), consistency_loss(w, spatial, temporal), alpha=0.5)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels) + 0.5 * consistency_loss(w, spatial, temporal))
    torch.testing.assert_close(total_loss(classification_loss(logits, labels), None, 0.5),
                               F.cross_entropy(logits, labels))  # L_CC off: L = L_CE
    loss.backward()
    w_ = w.detach().clone().requires_grad_(True)  # the gradient of 0.5 L_CC written out: L_CE does not reach w
    (0.5 * (2 - F.cosine_similarity(w_, spatial, dim=-1) - F.cosine_similarity(w_, temporal, dim=-1)).mean()).backward()
    torch.testing.assert_close(w.grad, w_.grad)


def test_description_features_are_frozen_means_of_normalised_embeddings():
    torch.manual_seed(0)
    model = MSTA(clip.build_random("random-tiny"), num_frames=4, rank=32, blocks=(2, 4))
    descriptions = [["a person moves a brush over the eyes.", "close-up of a face.", "a mirror."],
                    ["a toy on a string goes up and down."]]  # K_c differs between classes
    per_class = [clip.tokenize(d) for d in descriptions]
    got = description_features(model, per_class)
    assert got.shape == (2, 64) and not got.requires_grad
    with torch.no_grad():
        expected = torch.stack([F.normalize(model.clip.encode_text(t), dim=-1).mean(0) for t in per_class])
    torch.testing.assert_close(got, expected)
    # A (C, K, L) tensor gives the same as a list; small batches give the same as one batch.
    stacked = torch.stack([per_class[0][:2], per_class[0][1:]])  # (2, 2, L)
    torch.testing.assert_close(description_features(model, stacked, batch_size=1),
                               description_features(model, list(stacked)))
    # The frozen branch: changing the adapters changes nothing.
    with torch.no_grad():
        for p in model.adapters.parameters():
            p.add_(1.0)
    torch.testing.assert_close(description_features(model, per_class), got, rtol=0, atol=0)
    with pytest.raises(ValueError):
        description_features(model, [per_class[0], per_class[0][:0]])
