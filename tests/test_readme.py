"""The README's references to code name a file and a symbol (`adapters.py` `MSTA.logits`, or `runs.choose_threads`
for harness/runs.py); each must name a class, function or constant that file defines, so the README cannot point at
code that moved. Every file path the manual names in backticks exists."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The method table, in the README's order: each equation and the code that implements it.
METHOD_TABLE = [
    ("adapters.py", "MSTA.adapted_blocks"),
    ("adapters.py", "LayerAdapter"),
    ("adapters.py", "LayerAdapter.text"),
    ("adapters.py", "LayerAdapter.vision"),
    ("adapters.py", "TemporalAttention"),
    ("adapters.py", "TemporalConv"),
    ("adapters.py", "scaled_residual"),
    ("adapters.py", "GradScale"),
    ("adapters.py", "MSTA.logits"),
    ("losses.py", "classification_loss"),
    ("losses.py", "consistency_loss"),
    ("train.py", "accumulate_step"),
    ("losses.py", "total_loss"),
    ("prompts.py", "description_features"),
    ("train.py", "main"),
    ("prompts.py", "encode_descriptions"),
]

FOLDERS = ("video", "harness", "bench", "clients")
FILE_EXTENSIONS = {"py", "png", "csv", "txt", "json", "md", "pt", "pth", "mp4", "avi", "jpg", "gz", "tmp", "part",
                   "safetensors"}


def readme():
    return open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def defined(filename):
    """Every name a file defines at its top level, plus Class.member for the members of its classes."""
    tree = ast.parse(open(os.path.join(ROOT, filename), encoding="utf-8").read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names.update(f"{node.name}.{m.name}" for m in node.body if isinstance(m, ast.FunctionDef))
                names.update(f"{node.name}.{t.id}" for m in node.body if isinstance(m, ast.Assign)
                             for t in m.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(t.id for t in ast.walk(target) if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):  # a name a file re-exports is still found through it
            names.update(a.asname or a.name for a in node.names)
    return names


def test_method_table_names_the_code_by_file_and_symbol():
    refs = re.findall(r"`(\w+\.py)` `([\w.]+)`", readme())
    assert refs == METHOD_TABLE
    for filename, symbol in refs:
        assert symbol in defined(filename), f"README names {filename} {symbol}, which {filename} does not define"


def manual():
    """The README and every page of docs/, as one text."""
    docs = os.path.join(ROOT, "docs")
    pages = [os.path.join(docs, f) for f in sorted(os.listdir(docs)) if f.endswith(".md")]
    return "\n".join([readme()] + [open(p, encoding="utf-8").read() for p in pages])


def test_no_line_number_references():
    """Line numbers drift with every edit above them: the README and docs/ name symbols instead."""
    assert not re.findall(r"`\w+\.py:\d+`", manual())


def test_links_between_pages_resolve():
    """Every relative link of the README and docs/*.md points at a file of the project."""
    docs = sorted(f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    pages = ["README.md"] + [os.path.join("docs", f) for f in docs]
    for page in pages:
        text = open(os.path.join(ROOT, page), encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target))
            assert os.path.exists(path), f"{page} links {target}, which does not exist"


def test_module_dot_symbol_references_exist():
    """Every `module.symbol` in the README and docs/ whose module is a file of this project names something it
    defines."""
    modules = {f[:-3]: f for f in os.listdir(ROOT) if f.endswith(".py")}
    for folder in FOLDERS:  # `runs.choose_threads` is harness/runs.py's, `decode.read_frames` video/decode.py's
        modules.update({f[:-3]: os.path.join(folder, f) for f in os.listdir(os.path.join(ROOT, folder))
                        if f.endswith(".py") and f != "__init__.py" and f[:-3] not in modules})
    refs = re.findall(r"`(\w+)\.([A-Za-z_]\w*)(?:\.(\w+))?[(`]", manual())
    checked = 0
    for module, name, member in refs:
        if module not in modules or name in FILE_EXTENSIONS:  # `curves.png` is a file, not a symbol
            continue
        names = defined(modules[module])
        symbol = f"{name}.{member}" if member and f"{name}.{member}" in names else name
        assert symbol in names, f"the manual names {module}.{symbol}, which {modules[module]} does not define"
        checked += 1
    assert checked >= 5  # the README does name code this way: the check ran


def test_files_section_states_each_files_true_length():
    """The Files section's budget ("`adapters.py` (370 lines) and `losses.py` (32)"): every count is the file's."""
    section = readme().split("## Files", 1)[1].split("\n## ", 1)[0]
    counts = re.findall(r"`([\w/]+\.py)` \((\d+)(?: lines)?\)", section)
    assert len(counts) >= 8
    for filename, n in counts:
        with open(os.path.join(ROOT, filename), encoding="utf-8") as f:
            assert sum(1 for _ in f) == int(n), f"README says {filename} has {n} lines"


def test_call_order_map_names_real_symbols():
    """The Files section's map of one training step: every module.symbol in it is defined where it says."""
    section = readme().split("## Files", 1)[1].split("\n## ", 1)[0]
    block = section.split("One training step, in call order", 1)[1].split("```")[1]
    homes = {"data": "data.py", "train": "train.py", "losses": "losses.py", "prompts": "prompts.py",
             "evaluate": "evaluate.py", "MSTA": "adapters.py", "decode": "video/decode.py",
             "transforms": "video/transforms.py"}
    refs = re.findall(r"\b(\w+)\.(\w+(?:\.\w+)?)", block)
    assert len(refs) >= 12
    refs = [(m, s) for m, s in refs if s not in FILE_EXTENSIONS]  # (adapters.py) is a file
    for module, symbol in refs:
        if module == "MSTA":
            module, symbol = "MSTA", f"MSTA.{symbol}"
        names = defined(homes[module])
        assert symbol in names or symbol.split(".")[0] in names, f"{module}.{symbol} is not in {homes[module]}"


def test_tests_page_is_written_from_the_test_files():
    """docs/tests.md is what `python tests/tests_md.py` writes from the test files' docstrings and markers."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, os.path.join("tests", "tests_md.py"), "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
