"""The project's shape, read from its own imports (README "Files"): which files may import which, no import cycle,
no chain of imports longer than 8 modules, no use of another module's private names, and the argparse Namespace
read only where a command line is resolved.

The rule, stated once here and in the README:
  - the method files (adapters, losses, clip, viclip, weights, prompts) import only each other (besides torch, the
    standard library and the tokenizer's text packages);
  - the video pipeline (video/ and data.py) imports only the method files and itself, never harness/;
  - harness/ imports the method, the pipeline and itself;
  - only the commands (train, evaluate, prepare, benchmark) and the benchmark's parts (bench/) import anything;
  - the clients (clients/) import none of this project's modules: each is copied alone beside adapters.py.
Imports inside functions count.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("video", "harness", "bench", "clients")
METHOD = {"adapters", "losses", "clip", "viclip", "weights", "prompts"}
COMMANDS = {"train", "evaluate", "prepare", "benchmark"}
# Where the argparse Namespace may be read: the commands and train.py's one configuration module.
NAMESPACE_READERS = COMMANDS | {"harness.settings"}


def modules():
    """{module name: path} of every Python file of the project outside tests/."""
    out = {f[:-3]: os.path.join(ROOT, f) for f in os.listdir(ROOT) if f.endswith(".py")}
    for folder in FOLDERS:
        for f in os.listdir(os.path.join(ROOT, folder)):
            if f.endswith(".py") and f != "__init__.py":
                out[f"{folder}.{f[:-3]}"] = os.path.join(ROOT, folder, f)
    return out


def layer(name):
    if name in METHOD:
        return "method"
    if name == "data" or name.startswith("video."):
        return "pipeline"
    if name.startswith("harness."):
        return "harness"
    if name.startswith("clients."):
        return "client"
    return "command"  # the commands and bench/


ALLOWED = {"method": {"method"}, "pipeline": {"method", "pipeline"}, "harness": {"method", "pipeline", "harness"},
           "client": set(), "command": {"method", "pipeline", "harness", "command"}}


def imports(path, known):
    """[(imported project module, {names taken from it})] of a file, function-level imports included."""
    tree = ast.parse(open(path).read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, set()) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in known:
                found.append((node.module, {a.name for a in node.names}))
            else:
                found += [(f"{node.module}.{a.name}", set()) for a in node.names if f"{node.module}.{a.name}" in known]
    return found


def graph():
    known = modules()
    return known, {name: imports(path, known) for name, path in known.items()}


def test_the_root_holds_at_most_twelve_python_files():
    root = [f for f in os.listdir(ROOT) if f.endswith(".py")]
    assert len(root) <= 12, sorted(root)
    assert {"adapters.py", "losses.py", "clip.py", "data.py", "train.py", "evaluate.py"} <= set(root)


def test_every_folder_says_what_it_holds():
    for folder in FOLDERS:
        doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, folder, "__init__.py")).read()))
        assert doc and len(doc) > 80, folder


def test_imports_point_one_way():
    _, edges = graph()
    wrong = [(a, b) for a, deps in edges.items() for b, _ in deps if layer(b) not in ALLOWED[layer(a)]]
    assert not wrong, wrong


def test_no_import_cycle_and_no_chain_longer_than_eight():
    _, edges = graph()
    deps = {a: sorted({b for b, _ in d if b != a}) for a, d in edges.items()}
    longest = {}

    def depth(node, path):
        assert node not in path, "import cycle: " + " -> ".join(path[path.index(node):] + [node])
        if node not in longest:
            longest[node] = 1 + max((depth(d, path + [node]) for d in deps[node]), default=0)
        return longest[node]

    for node in deps:
        depth(node, [])
    assert max(longest.values()) <= 8, sorted(longest.items(), key=lambda kv: -kv[1])[:3]


def test_no_module_uses_another_modules_private_names():
    known, edges = graph()
    leaks = []
    for name, deps in edges.items():
        leaks += [(name, dep, n) for dep, names in deps for n in names if n.startswith("_")]
        tree = ast.parse(open(known[name]).read())
        aliases = {a.asname or a.name.split(".")[-1] for node in ast.walk(tree)
                   if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names
                   if (getattr(node, "module", None) and f"{node.module}.{a.name}" in known) or a.name in known}
        leaks += [(name, node.value.id, node.attr) for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not leaks, leaks


def test_the_namespace_stays_in_the_commands():
    """No function outside the commands and harness/settings.py takes `args` or reads `args.<name>`."""
    known, _ = graph()
    readers = []
    for name, path in known.items():
        if name in NAMESPACE_READERS or name.startswith("bench."):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = [a.arg for a in node.args.args + node.args.kwonlyargs]
                if "args" in params:
                    readers.append(f"{name}.{node.name}")
    assert not readers, readers
