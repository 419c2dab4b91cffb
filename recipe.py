"""`train.py --recipe paper`: the authors' logged configuration, applied to train.py's arguments from the table
protocols.json "recipes" (data, not code), and `--print-config`, every argument resolved, as one JSON object.

The table has one row of values shared by every run ("all") and one per (protocol, dataset) the authors released
logs for; a row lists the --shots and --split values it has runs for. For base-to-novel, --split N picks
ViFi-CLIP's N-th published 16-shot base draw (fs_base_sN_train.txt), the logs' s1, s2, s3. Precedence: a flag
typed on the command line, then the recipe, then train.py's per-protocol defaults. The authors' description
files and ViFi-CLIP's lists are not shipped: the table's "get" names the two commands that fetch them.
"""
import json
import os

import data
import prompts

HERE = os.path.dirname(os.path.abspath(__file__))
FILE_ARGS = ("train_list", "test_list", "labels_csv", "novel_list", "novel_labels_csv")


class RecipeError(data.DatasetError):
    """A recipe asked for a run the authors did not log, or its files are absent: one line for the user."""


def table(name):
    return data.protocol_facts()["recipes"][name]


def names():
    return sorted(data.protocol_facts()["recipes"])


def apply(args):
    """Set every value of the recipe row for (args.protocol, args.dataset) that was not typed (args.explicit)."""
    recipe = table(args.recipe)
    row = recipe.get(args.protocol, {}).get(args.dataset)
    if row is None:
        logged = "; ".join(f"{p}: {', '.join(recipe[p])}" for p in ("few-shot", "base2novel"))
        raise RecipeError(f"--recipe {args.recipe}: the authors logged no {args.protocol} run on {args.dataset} "
                          f"(logged: {logged})")
    if "shots" in row and args.shots not in row["shots"]:
        raise RecipeError(f"--recipe {args.recipe}: {args.protocol} {args.dataset} was logged with --shots "
                          f"{', '.join(map(str, row['shots']))}, not {args.shots}")
    if args.split not in row["split"]:
        raise RecipeError(f"--recipe {args.recipe}: {args.protocol} {args.dataset} was logged with --split "
                          f"{', '.join(map(str, row['split']))}, not {args.split}")
    where = {k: os.path.join(HERE, v) for k, v in recipe["where"].items()}
    values = {**recipe["all"], **{k: v for k, v in row.items() if k not in ("shots", "split")}}
    for key, value in values.items():
        if key not in args.explicit:  # paths are filled in; the prompt's {class} stays for the class name
            setattr(args, key, value.format(shots=args.shots, split=args.split, **where)
                    if key in FILE_ARGS + ("descriptions",) else value)


def check_files(args):
    """Refuse, in one line naming the commands that get them, when the recipe's input files are absent."""
    need = [getattr(args, k) for k in FILE_ARGS if getattr(args, k, None)]
    if args.alpha != 0:  # the authors' pair {N}_{s,t}_description_{tag}[_base].json, N = --num-descriptions
        tag = prompts.AUTHORS_TAGS.get(args.dataset, args.dataset) + ("_base" if args.protocol == "base2novel" else "")
        need += [os.path.join(args.descriptions, f"{args.num_descriptions}_{k}_description_{tag}.json")
                 for k in "st"]
    absent = [p for p in need if not os.path.isfile(p)]
    if absent:
        get = " && ".join(table(args.recipe)["get"])
        raise RecipeError(f"--recipe {args.recipe} needs {absent[0]} (and {len(absent) - 1} more file(s)): get "
                          f"ViFi-CLIP's lists and the authors' descriptions with: cd {HERE} && {get}")


def logged_numbers(name, protocol, dataset, shots, split):
    """The authors' logged top-1 of the run that recipe `name` reproduces for (protocol, dataset, shots, split):
    {"last", "best"[, "novel"], "log"} from protocols.json (see its "logged_about"), or None when none was logged."""
    shots = None if protocol == "base2novel" else shots  # base-to-novel: the 16-shot draw is the split
    for row in table(name).get("logged", []):
        if (row["protocol"], row["dataset"], row.get("shots"), row["split"]) == (protocol, dataset, shots, split):
            return row
    return None


def config(args):
    """Every resolved argument as one JSON object (argparse names; blocks as [first, last])."""
    skip = ("explicit", "print_config", "max_steps")
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k not in skip}
    return json.dumps(values, sort_keys=True)
