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
    tokens = torch.cat(per_class).to(next(msta.parameters()).device)  # (sum K_c, L)
    # Batches bound memory; encode_text(adapted=False) is the frozen CLIP text encoder.
    features = torch.cat([msta.encode_text(chunk, adapted=False) for chunk in tokens.split(batch_size)])
    features = F.normalize(features.float(), dim=-1)                  # (sum K_c, E)
    return torch.stack([f.mean(0) for f in features.split(counts)])   # (C, E)


# ----------------------------------------------------------------------------------------- the descriptions
class DescriptionError(ValueError):
    """Descriptions missing for a class, or no description file for a dataset: one line for the user."""


# The authors' file-name tag of each dataset: {N}_{s|t}_description_{tag}[_base|_novel].json in their repository.
AUTHORS_TAGS = {"ucf101": "ucf_101", "hmdb51": "hmdb", "k400": "k400", "k600": "k600", "ssv2": "ssv2"}


def load_descriptions(dataset, classnames, num=2, folder="descriptions", all_classnames=None, subset=None):
    """The first `num` spatial and temporal descriptions of each class -> (spatial, temporal), two lists of C
    lists of sentences, in the order of `classnames` (any subset of the dataset's classes, e.g. base classes).

    Reads our format, <folder>/<dataset>.json keyed by class name (descriptions/README.md), or else the authors'
    published pairs {N}_s_description_{tag}.json / {N}_t_description_{tag}.json, tag their name for the dataset
    (AUTHORS_TAGS: ucf_101, hmdb, k400, k600, ssv2; our dataset name is accepted too), the smallest N >= num.
    Their files are keyed by class index "0".."C-1": in the full file, of the dataset's full class list in the
    standard order, `all_classnames` (default: classnames); in the _base / _novel files (subset="base" or
    "novel"), of the published base or novel label list (ViFi-CLIP's *_base_labels.csv / *_novel_labels.csv),
    which must then be `classnames` itself, as when those CSVs are the labels. Without a _base / _novel file the
    full one serves a subset, given all_classnames (the sentences are the same: checked on the published files)."""
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

    def pairs(suffix):  # N -> {kind: path} of complete pairs with N >= num: the authors publish N = 2, 4 and 8
        found = {}
        for tag in dict.fromkeys((AUTHORS_TAGS.get(dataset, dataset), dataset)):
            for path in glob.glob(os.path.join(folder, f"*_[st]_description_{tag}{suffix}.json")):
                n, kind = os.path.basename(path).split("_")[:2]
                if n.isdigit() and int(n) >= num:
                    found.setdefault(int(n), {})[kind] = path
        return {n: p for n, p in found.items() if len(p) == 2}
    variant = pairs(f"_{subset}") if subset else {}
    full = pairs("")
    if variant:  # keys index the published base / novel label list: `classnames`
        files, order = variant[min(variant)], classnames
    elif full and (not subset or all_classnames):
        files, order = full[min(full)], all_classnames or classnames
    else:
        tag = AUTHORS_TAGS.get(dataset, dataset)
        need = f"{{N}}_s_description_{tag}_{subset}.json (or the full file and the full class list)" if subset \
            else f"the authors' pair {{N}}_s_description_{tag}.json and {{N}}_t_..."
        raise DescriptionError(f"no descriptions for {dataset}: expected {ours} or {need} with N >= {num} in "
                               f"{folder}")
    index = {name: str(i) for i, name in enumerate(order)}
    result = []
    for kind in ("s", "t"):
        with open(files[kind], encoding="utf-8") as f:
            table = json.load(f)
        if len(table) != len(order):  # another class list than the one the keys index: the mapping would be wrong
            raise DescriptionError(f"{files[kind]} has {len(table)} classes, the class list it is read with "
                                   f"{len(order)}")
        missing = [c for c in classnames if index.get(c) not in table]
        if missing:
            raise DescriptionError(f"{files[kind]} has no descriptions for {missing[:3]}")
        # One published Kinetics-400 entry is a single string, not a list: treat it as one sentence.
        result.append([[table[index[c]]] if isinstance(table[index[c]], str) else table[index[c]][:num]
                       for c in classnames])
    return result[0], result[1]
