"""The description files: every class of every dataset has 4 + 4 distinct, specific sentences that fit CLIP's
context, and both our format and the authors' published one load through prompts.load_descriptions."""
import hashlib
import json
import os
import re

import pytest

import clip
import data
import prompts
from video import layouts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "descriptions")
COUNTS = {"ucf101": 101, "hmdb51": 51, "k400": 400, "k600": 600, "ssv2": 174}
# The published class lists (ViFi-CLIP's label CSVs) as count, sha256 and a few names: tests/fixtures.
with open(os.path.join(ROOT, "tests", "fixtures", "published_orders.json")) as f:
    ORDERS = json.load(f)
ORDER_KEY = {"ucf101": "ucf101", "hmdb51": "hmdb51", "k400": "kinetics400", "k600": "kinetics600", "ssv2": "ssv2"}


def load(name):
    with open(os.path.join(FOLDER, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_every_class_has_four_plus_four_good_sentences(name):
    table = load(name)
    assert len(table) == COUNTS[name]
    seen = {}
    for cls, entry in table.items():
        assert set(entry) == {"spatial", "temporal"}, cls
        for kind in ("spatial", "temporal"):
            sentences = entry[kind]
            assert len(sentences) == 4, (cls, kind)
            for s in sentences:
                assert isinstance(s, str) and s.strip() == s and len(s.split()) >= 5, (cls, s)
                assert "\n" not in s
                # Not a bare template: a sentence must say more than the class name.
                stripped = re.sub(re.escape(cls.lower()), "", s.lower())
                assert len(stripped.split()) >= 4, (cls, s)
                assert s.lower() not in seen, f"{cls!r} and {seen.get(s.lower())!r} share {s!r}"
                seen[s.lower()] = cls
    # Every sentence fits the 77-token context: tokenize raises on overflow unless truncate=True.
    sentences = [s for entry in table.values() for kind in ("spatial", "temporal") for s in entry[kind]]
    tokens = clip.tokenize(sentences)
    assert tokens.shape == (len(sentences), 77)


def test_kinetics600_reuses_kinetics400_sentences():
    k400, k600 = load("k400"), load("k600")
    shared = [c for c in k600 if c in k400]
    assert len(shared) == 368  # the Kinetics-600 class names that Kinetics-400 has too
    for c in shared:
        assert k600[c] == k400[c], c
    new = [c for c in k600 if c not in k400]
    assert len(new) == 232


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_keys_are_the_published_classes_in_order(name):
    keys, want = list(load(name)), ORDERS[ORDER_KEY[name]]
    assert len(keys) == want["count"] and all(keys[int(i)] == c for i, c in want["at"].items())
    assert hashlib.sha256("\n".join(keys).encode()).hexdigest() == want["sha256"]


def test_protocol_class_sets_are_covered():
    facts = layouts.protocol_facts()
    for name, key in (("ucf101", "ucf101"), ("hmdb51", "hmdb51"), ("k400", "kinetics400"), ("ssv2", "ssv2")):
        assert set(facts[key]["base"]) <= set(load(name))
    assert facts["kinetics400"]["classes"] == list(load("k400"))
    assert facts["kinetics600"]["classes"] == list(load("k600"))
    for split in facts["kinetics600"]["zero_shot"]:
        assert len(split) == 160 and set(split) <= set(load("k600"))


def test_synthetic_descriptions_cover_the_synthetic_classes():
    names = data.build_dataset("synthetic", None, "full", 1, train=False, num_frames=4, resolution=32).classnames
    spatial, temporal = prompts.load_descriptions("synthetic", names, 2, FOLDER)
    assert len(spatial) == len(temporal) == len(names) and all(len(s) == 2 for s in spatial + temporal)


def test_loader_takes_first_n_of_each_kind_by_name():
    table = load("hmdb51")
    names = ["wave", "brush hair"]  # any subset, any order (base-to-novel trains on a subset)
    spatial, temporal = prompts.load_descriptions("hmdb51", names, 3, FOLDER)
    assert spatial[0] == table["wave"]["spatial"][:3] and temporal[1] == table["brush hair"]["temporal"][:3]


def test_authors_published_format_loads_unchanged(tmp_path):
    """{N}_{s|t}_description_{dataset}.json keyed "0".."C-1" by class index in the dataset's full order."""
    classes = list(load("ucf101"))
    for kind in ("s", "t"):
        payload = {str(i): [f"{kind} sentence {j} of class {i}." for j in range(8)] for i in range(len(classes))}
        (tmp_path / f"8_{kind}_description_ucf101.json").write_text(json.dumps(payload))
    subset = [classes[5], classes[0]]
    spatial, temporal = prompts.load_descriptions("ucf101", subset, 2, str(tmp_path), all_classnames=classes)
    assert spatial == [["s sentence 0 of class 5.", "s sentence 1 of class 5."],
                       ["s sentence 0 of class 0.", "s sentence 1 of class 0."]]
    assert temporal[1] == ["t sentence 0 of class 0.", "t sentence 1 of class 0."]


def test_missing_class_is_a_clear_error(tmp_path):
    with pytest.raises(prompts.DescriptionError, match="no descriptions"):
        prompts.load_descriptions("hmdb51", ["not a class"], 2, FOLDER)


@pytest.mark.parametrize("dataset, tag", [("ucf101", "ucf_101"), ("hmdb51", "hmdb"), ("k400", "k400"),
                                          ("k600", "k600"), ("ssv2", "ssv2")])
def test_authors_file_names_load_for_every_dataset(tmp_path, dataset, tag):
    """The authors' own names, {N}_{s|t}_description_{tag}[_base|_novel].json, in their format: "0".."C-1" keys,
    lists of sentences (one Kinetics-400 entry is a bare string). The full file's keys index the dataset's full
    class list; the _base/_novel files' keys index the published base/novel label list (checked on their files:
    2_s_description_ucf_101_base.json "0" describes Typing, id 0 of ucf_101_base_labels.csv)."""
    full = ["archery", "bowling", "climb", "climb stairs", "diving", "yo yo"]  # the dataset's order
    base, novel = ["diving", "archery", "climb stairs"], ["yo yo", "climb", "bowling"]  # published label CSV orders

    def write(n, suffix, names):
        for kind in ("s", "t"):
            table = {str(i): [f"{kind}{n} {name} {j}." for j in range(n)] for i, name in enumerate(names)}
            table["0"] = table["0"][0] if kind == "s" else table["0"]  # a bare string, as one of theirs
            (tmp_path / f"{n}_{kind}_description_{tag}{suffix}.json").write_text(json.dumps(table))
    for n in (2, 8):
        write(n, "", full)
    write(2, "_base", base)
    write(2, "_novel", novel)
    folder = str(tmp_path)
    spatial, temporal = prompts.load_descriptions(dataset, ["climb", "archery"], 2, folder, all_classnames=full)
    assert spatial == [["s2 climb 0.", "s2 climb 1."], ["s2 archery 0."]]
    assert temporal == [["t2 climb 0.", "t2 climb 1."], ["t2 archery 0.", "t2 archery 1."]]
    spatial, temporal = prompts.load_descriptions(dataset, full, 8, folder)  # N = 8: the 8-sentence files
    assert spatial[3] == [f"s8 climb stairs {j}." for j in range(8)] and temporal[5][7] == "t8 yo yo 7."
    for subset, names in (("base", base), ("novel", novel)):  # classnames = the published label list
        spatial, temporal = prompts.load_descriptions(dataset, names, 2, folder, subset=subset)
        assert [s[-1].split(" ", 1)[1] for s in spatial] == [f"{name} {1 if i else 0}."
                                                            for i, name in enumerate(names)]
        assert temporal[2] == [f"t2 {names[2]} 0.", f"t2 {names[2]} 1."]
    for suffix in ("_base", "_novel"):
        for kind in ("s", "t"):
            (tmp_path / f"2_{kind}_description_{tag}{suffix}.json").unlink()
    # Without the _base file, the full file serves the base classes given the full list, never by position.
    spatial, _ = prompts.load_descriptions(dataset, base, 2, folder, all_classnames=full, subset="base")
    assert spatial[0] == ["s2 diving 0.", "s2 diving 1."]
    with pytest.raises(prompts.DescriptionError):
        prompts.load_descriptions(dataset, base, 2, folder, subset="base")
    with pytest.raises(prompts.DescriptionError):  # a subset read as if it were the full list
        prompts.load_descriptions(dataset, base, 2, folder)
