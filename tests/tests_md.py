"""Writes docs/tests.md, the map of the test suite, from the test files' own docstrings: each file's module docstring,
its tests, and which of them are in the slow tier (@pytest.mark.slow). Run `python tests/tests_md.py` after changing
a test file; `python tests/tests_md.py --check` exits 1 when docs/tests.md is not what it would write (a test in
tests/test_readme.py runs it), so the page cannot drift from the tests."""
import ast
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "tests.md")
HEAD = """# Tests

[Back to the README](../README.md)

<!-- Written by `python tests/tests_md.py` from the test files' docstrings: edit those, then run it. -->

Two tiers, both on the CPU without network. While working: `python -m pytest -m "not slow"` (the method, both
backbones against their golden values, the metric path, the data readers and the commands' argument checks).
Everything, as CI runs it (`.ci/run`): `python -m pytest`; the slow tier alone is `-m slow` (runs of train.py as a
user types them, torchrun, `--resume`, the benchmark, the offline demo). The README's "Tests" section gives the
times. Shared helpers and fixtures (small videos and dataset trees, tiny checkpoints in the released formats, a stub
model of known logits) live in `tests/conftest.py`; the facts of the published class lists and split files travel
as counts and digests in `tests/fixtures/`. A test skips only for a missing optional package, and says which.

How we know the fast tier can fail: twelve bugs were planted one at a time in a copy of the project (the temporal
attention's softmax over the wrong axis, L_CC's temporal term dropped, L_CE's labels shifted by one class, views
averaged as logits instead of probabilities, top-1 read from the second-ranked class, the harmonic mean without its
factor 2, base and novel halves swapped, HMDB51's train and test tags swapped, frames grouped along the wrong axes,
test frames at segment starts instead of centres, the position table resampled with align_corners=False, an
unreadable video's count dropped), and the fast tier failed for each.
"""


def is_slow(node):
    return any(ast.unparse(d) in ("pytest.mark.slow", "slow") for d in node.decorator_list)


def section(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    doc = ast.get_docstring(tree) or ""
    slow_file = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                    and "slow" in ast.unparse(n.value) for n in tree.body)
    tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    fast = [n.name for n in tests if not (slow_file or is_slow(n))]
    slow = [n.name for n in tests if slow_file or is_slow(n)]
    lines = [f"## {os.path.basename(path)}", "", doc, ""]
    for label, names in (("Fast tier", fast), ("Slow tier", slow)):
        if names:
            lines += [f"{label} ({len(names)}): " + ", ".join(f"`{n}`" for n in names) + ".", ""]
    return "\n".join(lines)


def page():
    files = sorted(glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
    return HEAD + "\n" + "\n".join(section(p) for p in files).rstrip("\n") + "\n"


if __name__ == "__main__":
    text = page()
    if sys.argv[1:] == ["--check"]:
        with open(PAGE, encoding="utf-8") as f:
            sys.exit(0 if f.read() == text else "docs/tests.md is out of date: run python tests/tests_md.py")
    with open(PAGE, "w", encoding="utf-8") as f:
        f.write(text)
