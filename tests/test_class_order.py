"""Class orders: each built-in dataset read from a made-up official layout gives the published label list (ViFi-CLIP's
labels/*.csv), and the authors' description files, keyed by that list's indices, reach the right class through
train.py's own path (data.class_names -> train.read_descriptions -> prompts.load_descriptions)."""
import argparse
import hashlib
import json
import os
import random

import pytest

import data
import prompts
import train
from video import layouts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = {"ucf101": "ucf_101_labels.csv", "hmdb51": "hmdb_51_labels.csv", "kinetics400": "kinetics_400_labels.csv",
       "kinetics600": "kinetics_600_labels.csv", "ssv2": "ssv2_labels.csv"}
with open(os.path.join(ROOT, "tests", "fixtures", "published_orders.json")) as f:
    ORDERS = json.load(f)
TAGS = {"ucf101": "ucf_101", "hmdb51": "hmdb", "kinetics400": "k400", "kinetics600": "k600", "ssv2": "ssv2"}


def layout(name, root):
    """A made-up official layout holding every class (no videos: the class order needs none), written in a
    shuffled order so that nothing but the published order can come out."""
    names = list(layouts.protocol_facts()[name]["classes"])
    random.Random(0).shuffle(names)
    if name == "ucf101":  # classInd.txt: '<1-based index> <CamelCase name>', the official numbering
        lists = os.path.join(root, "ucfTrainTestlist")
        os.makedirs(lists)
        camel = {c: c.replace(" ", "") for c in names}
        camel["Handstand Pushups"] = "HandstandPushups"  # classInd's spelling (the folders say HandStand)
        index = {c: i + 1 for i, c in enumerate(layouts.protocol_facts()[name]["classes"])}
        with open(os.path.join(lists, "classInd.txt"), "w") as f:
            f.writelines(f"{index[c]} {camel[c]}\r\n" for c in names)
        for part in ("trainlist01.txt", "testlist01.txt"):
            open(os.path.join(lists, part), "w").close()
    elif name == "hmdb51":  # one split file per class, named by the class folder
        splits = os.path.join(root, "testTrainMulti_7030_splits")
        os.makedirs(splits)
        for c in names:
            open(os.path.join(splits, f"{c.replace(' ', '_')}_test_split1.txt"), "w").close()
    elif name == "ssv2":  # labels.json maps each template (no brackets) to its label index as a string
        os.makedirs(os.path.join(root, "labels"))
        index = {c: str(i) for i, c in enumerate(layouts.protocol_facts()[name]["classes"])}
        with open(os.path.join(root, "labels", "labels.json"), "w") as f:
            json.dump({c: index[c] for c in names}, f)
        with open(os.path.join(root, "labels", "validation.json"), "w") as f:
            json.dump([], f)
    else:  # Kinetics: class folders under val/
        for c in names:
            os.makedirs(os.path.join(root, "val", c))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_class_order_from_an_official_layout_is_the_published_one(tmp_path, name):
    layout(name, str(tmp_path))
    names = data.class_names(name, str(tmp_path))
    expected = ORDERS[name]
    assert len(names) == expected["count"]
    assert hashlib.sha256("\n".join(names).encode()).hexdigest() == expected["sha256"]
    assert all(names[int(i)] == c for i, c in expected["at"].items())


def test_hmdb51_is_not_sorted():
    names = layouts.protocol_facts()["hmdb51"]["classes"]
    assert names[20:22] == ["kick ball", "kick"] and names[44:46] == ["sword exercise", "sword"]
    assert names[5:7] == ["climb", "climb stairs"] and names != sorted(names)


def test_a_tree_of_other_classes_keeps_its_own_order(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for c in ("kick", "kick_ball", "my_class"):
        (splits / f"{c}_test_split1.txt").write_text("")
    assert data.class_names("hmdb51", str(tmp_path)) == ["kick", "kick ball", "my class"]


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_authors_descriptions_reach_their_class_through_train_py(tmp_path, name):
    """Description files in the authors' exact format ({N}_{s|t}_description_{tag}.json, keys "0".."C-1" of the
    published list, each a list of N sentences) whose sentences name their class: every class must get its own."""
    layout(name, str(tmp_path / "data"))
    order = layouts.protocol_facts()[name]["classes"]  # what the authors' keys index
    folder = tmp_path / "description"
    folder.mkdir()
    for kind in "st":
        (folder / f"2_{kind}_description_{TAGS[name]}.json").write_text(json.dumps(
            {str(i): [f"A video about {c}.", f"{kind}: {c}, again."] for i, c in enumerate(order)}))
    dataset = {"kinetics400": "k400", "kinetics600": "k600"}.get(name, name)
    args = argparse.Namespace(dataset=dataset, data_root=str(tmp_path / "data"), protocol="few-shot",
                              descriptions=str(folder), num_descriptions=2, train_list=None, test_list=None)
    classnames = data.class_names(dataset, args.data_root)
    spatial, temporal = train.read_descriptions(args.dataset, args.dataset, args.data_root, args.protocol, classnames,
                                                args.num_descriptions, args.descriptions)
    for c, s, t in zip(classnames, spatial, temporal):
        assert s == [f"A video about {c}.", f"s: {c}, again."] and t[1] == f"t: {c}, again.", c
