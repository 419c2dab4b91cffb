"""The training objective of MSTA (paper Sec. 3, "Spatio-temporal description-guided consistency constraint").

    L    = L_CE + alpha * L_CC,  alpha = 1
    L_CE = cross-entropy of the logits exp(logit_scale) cos(v, w_c) over the classes of the current label set
    L_CC = 1/C sum_c [ (1 - cos(w_c, D_s,c)) + (1 - cos(w_c, D_t,c)) ]
w_c is the trainable (adapted) text branch's embedding of the template "a video of {class}."; D_s,c and D_t,c
are the frozen text branch's means of the L2-normalised embeddings of the class's LLM-written spatial and temporal
descriptions. Those never change, so description_features() computes them once per label set, to be cached.

Shape legend: B videos, C classes, K descriptions per class, L text length, E embedding.
"""
import torch
import torch.nn.functional as F


def classification_loss(logits, labels):
    """L_CE: logits (B, C) over the current label set, labels (B,) indices into it."""
    return F.cross_entropy(logits.float(), labels)


def consistency_loss(text_features, spatial_features, temporal_features):
    """L_CC = mean_c [2 - cos(w_c, D_s,c) - cos(w_c, D_t,c)]: text_features (C, E) from the trainable branch,
    spatial_features and temporal_features (C, E) from description_features(). The D's need not be unit length
    (a mean of unit vectors is shorter); the cosine normalises them."""
    w = text_features.float()
    spatial = F.cosine_similarity(w, spatial_features.float(), dim=-1)    # (C,)
    temporal = F.cosine_similarity(w, temporal_features.float(), dim=-1)  # (C,)
    return (2 - spatial - temporal).mean()


def total_loss(logits, labels, text_features, spatial_features, temporal_features, alpha=1.0):
    """L = L_CE + alpha * L_CC (alpha = 1 in the paper)."""
    return classification_loss(logits, labels) + alpha * consistency_loss(
        text_features, spatial_features, temporal_features)


@torch.no_grad()
def description_features(msta, tokens_per_class, batch_size=256):
    """D_c for each class: the frozen branch's mean of the L2-normalised embeddings of its descriptions.

    tokens_per_class: a (C, K, L) tensor, or a list of C tensors (K_c, L) when classes have different numbers of
    descriptions. Returns (C, E) in fp32. Call once for the spatial and once for the temporal descriptions of a
    label set and keep the results: they never change during training.
    """
    per_class = list(tokens_per_class)  # (C, K, L) -> C x (K, L)
    counts = [len(t) for t in per_class]
    if min(counts) == 0:
        raise ValueError("every class needs at least one description")
    tokens = torch.cat(per_class).to(msta.clip.logit_scale.device)  # (sum K_c, L)
    # Batches bound memory; encode_text(adapted=False) is the frozen CLIP text encoder.
    features = torch.cat([msta.encode_text(chunk, adapted=False) for chunk in tokens.split(batch_size)])
    features = F.normalize(features.float(), dim=-1)                  # (sum K_c, E)
    return torch.stack([f.mean(0) for f in features.split(counts)])   # (C, E)


# ----------------------------------------------------------------------------------------- the descriptions
class DescriptionError(ValueError):
    """Descriptions missing for a class, or no description file for a dataset: one line for the user."""


def load_descriptions(dataset, classnames, num=2, folder="descriptions", all_classnames=None):
    """The first `num` spatial and temporal descriptions of each class -> (spatial, temporal), two lists of C
    lists of sentences, in the order of `classnames` (any subset of the dataset's classes, e.g. base classes).

    Reads our format, <folder>/<dataset>.json keyed by class name (descriptions/README.md), or else the authors'
    published pair {N}_s_description_{dataset}.json / {N}_t_description_{dataset}.json, keyed by class index
    "0".."C-1" in the dataset's full class order, `all_classnames` (default: classnames)."""
    import glob, json, os  # standard library only: this file stays copyable on its own
    ours = os.path.join(folder, f"{dataset}.json")
    if os.path.isfile(ours):
        with open(ours, encoding="utf-8") as f:
            table = json.load(f)
        lookup = {name.lower(): entry for name, entry in table.items()}
        missing = [c for c in classnames if c.lower() not in lookup]
        if missing:
            raise DescriptionError(f"{ours} has no descriptions for {len(missing)} class(es), e.g. {missing[:3]}")
        rows = [lookup[c.lower()] for c in classnames]
        return [r["spatial"][:num] for r in rows], [r["temporal"][:num] for r in rows]
    pairs = {}  # N -> {kind: path}: the authors publish 2-, 4- and 8-sentence files
    for path in glob.glob(os.path.join(folder, f"*_[st]_description_{dataset}.json")):
        n, kind = os.path.basename(path).split("_")[:2]
        pairs.setdefault(int(n), {})[kind] = path
    complete = sorted(n for n, p in pairs.items() if len(p) == 2 and n >= num)
    if not complete:
        raise DescriptionError(f"no descriptions for {dataset}: expected {ours} or the authors' pair "
                               f"{{N}}_s_description_{dataset}.json and {{N}}_t_... with N >= {num} in {folder}")
    index = {name: str(i) for i, name in enumerate(all_classnames or classnames)}
    result = []
    for kind in ("s", "t"):
        with open(pairs[complete[0]][kind], encoding="utf-8") as f:
            table = json.load(f)
        missing = [c for c in classnames if index.get(c) not in table]
        if missing:
            raise DescriptionError(f"{pairs[complete[0]][kind]} has no descriptions for {missing[:3]}")
        # One published Kinetics-400 entry is a single string, not a list: treat it as one sentence.
        result.append([[table[index[c]]] if isinstance(table[index[c]], str) else table[index[c]][:num]
                       for c in classnames])
    return result[0], result[1]
