"""The text side of MSTA's training: class prompts and the LLM-written class descriptions (paper Sec. 3).

class_tokens: the trainable branch's input, the template "a video of {class}." per class. Descriptions: each
class's spatial and temporal sentences, read from our descriptions/<dataset>.json or from the authors' published
{N}_{s|t}_description_{tag}.json files (load_descriptions), and encoded once by the frozen text branch into the
targets D_s,c and D_t,c of the consistency loss L_CC (description_features; the loss itself is in losses.py).

Shape legend: C classes, K descriptions per class, L text length, E embedding.
"""
import glob
import json
import os

import torch
import torch.nn.functional as F

import clip


def class_tokens(classnames, context_length=77):
    """The trainable branch's input: the template "a video of {class}." for each class -> (C, L), L the model's
    context length (77 for CLIP, 32 for ViCLIP); a longer class name is cut, keeping the end token."""
    return clip.tokenize([f"a video of {name}." for name in classnames], context_length, truncate=True)


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


def encode_descriptions(msta, descriptions, context_length):
    """(spatial, temporal) sentences per class -> their frozen features (D_s, D_t), each (C, E), computed once.
    truncate=True: ours fit CLIP's 77 (tested) and all but one ViCLIP's 32 (README "Reproducing the paper"); one
    of the authors' published sentences does not fit 77."""
    tokens = lambda sentences: [clip.tokenize(s, context_length, truncate=True) for s in sentences]  # noqa: E731
    return tuple(description_features(msta, tokens(kind)) for kind in descriptions)  # 2 x (C, E)


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
    published order (ViFi-CLIP's labels CSV, video/layouts.py class_names), `all_classnames` (default: classnames); in the
    _base / _novel files (subset="base" or "novel"), of the published base or novel label list (ViFi-CLIP's
    *_base_labels.csv / *_novel_labels.csv), which must then be `classnames` itself, as when those CSVs are the
    labels. Without a _base / _novel file the full one serves a subset, given all_classnames (the sentences are
    the same: checked on the published files)."""
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
