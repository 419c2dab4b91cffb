"""The README's "file.py:N" references (the method table) point at the code they name, so they cannot drift."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In the README's order: the text each referenced line must hold.
EXPECTED = [
    ("adapters.py", "z = scaled_residual(block(z, mask), block.ln_1(z)"),
    ("adapters.py", "class LayerAdapter("),
    ("adapters.py", "def text(self, u):"),
    ("adapters.py", "def vision(self, u, T, layout"),
    ("adapters.py", "class TemporalAttention("),
    ("adapters.py", "class TemporalConv("),
    ("adapters.py", "def scaled_residual("),
    ("adapters.py", "class GradScale("),
    ("adapters.py", "def logits(self, video_features, text_features):"),
    ("losses.py", "def classification_loss("),
    ("losses.py", "def consistency_loss("),
    ("losses.py", "def total_loss("),
    ("losses.py", "def description_features("),
    ("train.py", "spatial_feats = losses.description_features(model"),
]


def test_readme_line_references_point_at_the_named_code():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    refs = [(f, int(n)) for f, n in re.findall(r"`(\w+\.py):(\d+)`", readme)]
    assert [f for f, _ in refs] == [f for f, _ in EXPECTED]
    for (name, line), (_, text) in zip(refs, EXPECTED):
        lines = open(os.path.join(ROOT, name), encoding="utf-8").read().splitlines()
        where = [i + 1 for i, l in enumerate(lines) if text in l]
        assert line in where, f"README says {name}:{line}; {text!r} is on line(s) {where}"
