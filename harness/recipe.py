"""`train.py --recipe paper`: the authors' logged configuration, read from the table protocols.json "recipes" (data,
not code); harness/settings.py applies it to train.py's arguments.

The table has one row of values shared by every run ("all") and one per (protocol, dataset) the authors released
logs for; a row lists the --shots and --split values it has runs for. For base-to-novel, --split N picks
ViFi-CLIP's N-th published 16-shot base draw (fs_base_sN_train.txt), the logs' s1, s2, s3. Precedence: a flag
typed on the command line, then the recipe, then train.py's per-protocol defaults. The authors' description
files and ViFi-CLIP's lists are not shipped: the table's "get" names the two commands that fetch them.
"""
import os

import prompts
from video import layouts

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project root, where paper/ is cloned


class RecipeError(layouts.DatasetError):
    """A recipe asked for a run the authors did not log, or its files are absent: one line for the user."""


def table(name):
    return layouts.protocol_facts()["recipes"][name]


def names():
    return sorted(layouts.protocol_facts()["recipes"])


def values(name, protocol, dataset, shots, split):
    """{argument: value} of recipe `name` for one run: the row shared by every run, then the (protocol, dataset)
    row, with the paths formatted for the shots and split. Raises RecipeError when the authors logged no such run."""
    recipe = table(name)
    row = recipe.get(protocol, {}).get(dataset)
    if row is None:
        logged = "; ".join(f"{p}: {', '.join(recipe[p])}" for p in ("few-shot", "base2novel"))
        raise RecipeError(f"--recipe {name}: the authors logged no {protocol} run on {dataset} (logged: {logged})")
    if "shots" in row and shots not in row["shots"]:
        raise RecipeError(f"--recipe {name}: {protocol} {dataset} was logged with --shots "
                          f"{', '.join(map(str, row['shots']))}, not {shots}")
    if split not in row["split"]:
        raise RecipeError(f"--recipe {name}: {protocol} {dataset} was logged with --split "
                          f"{', '.join(map(str, row['split']))}, not {split}")
    where = {k: os.path.join(HERE, v) for k, v in recipe["where"].items()}
    merged = {**recipe["all"], **{k: v for k, v in row.items() if k not in ("shots", "split")}}
    return {k: v.format(shots=shots, split=split, **where) if isinstance(v, str) else v for k, v in merged.items()}


def authors_descriptions(folder, dataset, protocol, num):
    """The authors' pair of description files, {num}_{s,t}_description_{tag}[_base].json, in `folder`."""
    tag = prompts.AUTHORS_TAGS.get(dataset, dataset) + ("_base" if protocol == "base2novel" else "")
    return [os.path.join(folder, f"{num}_{k}_description_{tag}.json") for k in "st"]


def check_files(name, paths):
    """Refuse, in one line naming the commands that get them, when any of the recipe's input files is absent."""
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        get = " && ".join(table(name)["get"])
        raise RecipeError(f"--recipe {name} needs {absent[0]} (and {len(absent) - 1} more file(s)): get "
                          f"ViFi-CLIP's lists and the authors' descriptions with: cd {HERE} && {get}")
