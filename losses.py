"""The training objective of MSTA (paper Sec. 3, "Spatio-temporal description-guided consistency constraint").

    L    = L_CE + alpha * L_CC,  alpha = 1
    L_CE = cross-entropy of the logits exp(logit_scale) cos(v, w_c) over the classes of the current label set
    L_CC = 1/C sum_c [ (1 - cos(w_c, D_s,c)) + (1 - cos(w_c, D_t,c)) ]
w_c is the trainable (adapted) text branch's embedding of the template "a video of {class}."; D_s,c and D_t,c
are the frozen text branch's means of the L2-normalised embeddings of the class's LLM-written spatial and temporal
descriptions. Those never change: prompts.description_features computes them once per label set.

Shape legend: B videos, C classes, K descriptions per class, L text length, E embedding.
"""
import torch.nn.functional as F


def classification_loss(logits, labels):
    """L_CE: logits (B, C) over the current label set, labels (B,) indices into it."""
    return F.cross_entropy(logits.float(), labels)


def consistency_loss(text_features, spatial_features, temporal_features):
    """L_CC = mean_c [2 - cos(w_c, D_s,c) - cos(w_c, D_t,c)]: text_features (C, E) from the trainable branch,
    spatial_features and temporal_features (C, E) from prompts.description_features. The D's need not be unit
    length (a mean of unit vectors is shorter); the cosine normalises them."""
    w = text_features.float()
    spatial = F.cosine_similarity(w, spatial_features.float(), dim=-1)    # (C,)
    temporal = F.cosine_similarity(w, temporal_features.float(), dim=-1)  # (C,)
    return (2 - spatial - temporal).mean()


def total_loss(classification, consistency, alpha=1.0):
    """L = L_CE + alpha * L_CC (alpha = 1 in the paper); consistency None: L_CC is off (L = L_CE)."""
    return classification if consistency is None else classification + alpha * consistency
