"""Tests of the backbone clients, clients/openclip_backbone.py and clients/hf_backbone.py (docs/adapters.md):
adapters.py and one client, copied alone into an empty folder, wrap that library's CLIP built with random weights
(no download).

Each check runs in a subprocess whose working folder holds only copies of adapters.py and the client, so nothing
of this project can be imported there: tests/client_checks.py (run with `python -c`) for zeroed-adapter equivalence
to the library's own features, the parameter count, one training step and frame order; and the two examples of
docs/adapters.md, executed as written. The libraries come from requirements-test.txt.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = {"openclip": ("open_clip", "openclip_backbone.py"), "hf": ("transformers", "hf_backbone.py")}  # in clients/


def run_alone(folder, client, code, *args):
    """python -c code in `folder`, which holds only copies of adapters.py and the client: the finished process."""
    for name in ("adapters.py", os.path.join("clients", client)):
        shutil.copy(os.path.join(ROOT, name), folder)
    assert sorted(os.listdir(folder)) == sorted(["adapters.py", client])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # no download: every model here is built from a config
    # -E: PYTHONPATH and the like are ignored, so the only importable folder of ours is the working one.
    return subprocess.run([sys.executable, "-E", "-c", code, *args], cwd=folder, env=env, capture_output=True,
                          text=True)


@pytest.mark.slow
@pytest.mark.parametrize("library", CLIENTS)
def test_client_copied_alone_wraps_the_library(library, tmp_path):
    package, client = CLIENTS[library]
    pytest.importorskip(package)
    with open(os.path.join(ROOT, "tests", "client_checks.py")) as f:
        checks = f.read()
    out = run_alone(tmp_path, client, checks, library, "features", "count", "train", "order")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split("\n")[:4] == [f"{library} {c}: ok" for c in ("features", "count", "train", "order")]


def doc_examples():
    """{client file: code} of docs/adapters.md's python blocks, each naming its client in an import."""
    with open(os.path.join(ROOT, "docs", "adapters.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    return {re.search(r"^from (\w+_backbone) import", code, re.M)[1] + ".py": code for code in blocks}


@pytest.mark.slow
@pytest.mark.parametrize("library", CLIENTS)
def test_doc_example_runs_as_written(library, tmp_path):
    package, client = CLIENTS[library]
    code = doc_examples()[client]  # each client has its example (a KeyError otherwise), checked even without
    pytest.importorskip(package)  # the library, which running it needs
    out = run_alone(tmp_path, client, code)
    assert out.returncode == 0, out.stdout + out.stderr
    # What the example says it prints (the comment after each print call) is what it prints.
    promised = re.findall(r"^print\(.*\)  # (.*)$", code, re.M)
    assert promised and out.stdout.splitlines() == promised
    assert os.path.getsize(tmp_path / "adapters.pt") > 6_900_000  # 1,744,000 fp32 adapter tensors and their keys


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path):
    """The README's open_clip example (section "Use the adapters in your own project"), as written."""
    pytest.importorskip("open_clip")
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if "openclip_backbone" in b]
    assert len(blocks) == 1
    out = run_alone(tmp_path, "openclip_backbone.py", blocks[0])
    assert out.returncode == 0, out.stdout + out.stderr
    promised = re.findall(r"^print\(.*\)  # (.*)$", blocks[0], re.M)
    assert promised and out.stdout.splitlines() == promised
