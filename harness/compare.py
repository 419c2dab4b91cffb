"""One table across finished runs: `python evaluate.py --compare runs/*`.

Reads each run folder's results.json (train.py's run folders, evaluate.py's eval-* and mean-of-N folders), finds
the settings that differ between the runs, and groups the runs that differ only in --seed or --split: the paper
reports base-to-novel and zero-shot numbers as means over three seeds or splits (Sec. 4.1), and its tables are
ablations that change one setting at a time. Prints one markdown table, a row per group: the settings that
differ, n, and each test set's top-1 and top-5 as mean ± std over the group; writes the same table to a file
(compare.md by default). A folder that is no finished run (no results.json yet, or an unreadable one) is skipped
with one line on stderr.

std is the population standard deviation (ddof=0), the one evaluate.summarize gives a zero-shot run's three
splits, so the same numbers get the same spread wherever the project prints one.
"""
import json
import os
import statistics
import sys
from collections import defaultdict

DEFAULT_OUTPUT = "compare.md"
# The first line of every file written here: such a file may be rewritten, any other is the user's and is not.
MARK = "<!-- written by evaluate.py --compare, which may rewrite this file -->"
# Arguments that change how a run ran or where it wrote, never its numbers.
IGNORED = {"output", "resume", "overwrite", "workers", "threads", "explicit", "classnames", "eval_every",
           "max_steps", "tensorboard", "eval_batch_size", "checkpoint", "compare", "compare_output",
           "micro_batch", "grad_checkpointing", "print_config"}  # memory and bookkeeping: the same result
GROUPED = ("seed", "split")  # runs that differ only in these are repeats of one setting
FLAT = ("dataset", "protocol", "shots", "split", "seed", "epochs")  # what every results.json carries at its top


class CompareError(Exception):
    """Nothing to compare, or an output file that is the user's: one line, exit status 2."""


class RunError(Exception):
    """A folder that is no finished run: skipped, with this one line."""


def read_run(path):
    """{name, settings, metrics} of one finished run folder (or its results.json); RunError otherwise."""
    folder = os.path.dirname(path) if path.endswith(".json") else path
    file = path if path.endswith(".json") else os.path.join(path, "results.json")
    if not os.path.exists(path):
        raise RunError("no such folder")
    if not os.path.isfile(file):
        if os.path.isfile(os.path.join(folder, "checkpoint.pt")) or os.path.isfile(os.path.join(folder, "log.txt")):
            raise RunError("an unfinished run (no results.json: its final test has not run)")
        raise RunError("not a run folder (no results.json)")
    try:
        with open(file) as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # json's errors are ValueErrors
        raise RunError(f"{file} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    try:
        if not record["rows"]:
            raise KeyError("rows")
        return dict(name=os.path.normpath(folder), settings=settings(record), metrics=metrics(record))
    except (KeyError, TypeError, AttributeError, ValueError):  # a JSON file of another shape
        raise RunError(f"{file} is not a results.json of train.py or evaluate.py (no test rows)") from None


def show(key, value):
    """A setting as the table shows it: blocks [1, 4] -> "1-4", 0.01 -> "0.01", None -> "-"."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "-".join(map(str, value)) if key == "blocks" else ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings(record):
    """The run's settings: train.py's arguments (evaluate.py's run_args), and the final test's views."""
    args = record.get("args") or record.get("run_args") or {k: record[k] for k in FLAT if k in record}
    out = {k: show(k, v) for k, v in args.items() if k not in IGNORED}
    out["views"] = show("views", record.get("views"))
    if record.get("zero_shot_clip"):
        out["zero_shot_clip"] = "yes"
    return out


def metrics(record):
    """{column: value} for one run: top-1 and top-5 per test set, and the protocol's summary where it adds one.
    A run with a single test set calls it "test", so runs on split 1 and split 2 fill the same columns."""
    rows = record["rows"]
    names = list(dict.fromkeys(r["row"] for r in rows))  # rows of several checkpoints repeat names: averaged
    values = defaultdict(list)
    for r in rows:
        key = "test" if len(names) == 1 else r["row"]
        values[f"{key} top-1"].append(float(r["top1"]))
        values[f"{key} top-5"].append(float(r["top5"]))
    out = {k: statistics.fmean(v) for k, v in values.items()}
    summary = record["summary"]
    if "hm" in summary:
        out["HM"] = float(summary["hm"])  # base2novel: harmonic mean of base and novel
    elif len(names) > 1:
        out["mean top-1"] = float(summary["top1"])  # zero-shot: the mean over the three splits
    return out


def group(runs):
    """(groups, differing): runs grouped by every differing setting except GROUPED, in the order given."""
    keys = list(dict.fromkeys(k for r in runs for k in r["settings"]))
    differing = [k for k in keys if len({r["settings"].get(k, "-") for r in runs}) > 1]
    groups = defaultdict(list)
    for r in runs:
        groups[tuple(r["settings"].get(k, "-") for k in differing if k not in GROUPED)].append(r)
    return list(groups.values()), differing


def mean_std(values, n):
    """"mean ± std" (population std), a bare value for one run, and the count when some runs lack it."""
    if not values:
        return "-"
    text = f"{statistics.fmean(values):.2f}"
    if len(values) > 1:
        text += f" ± {statistics.pstdev(values):.2f}"
    return text + (f" (n={len(values)})" if len(values) < n else "")


def table(runs):
    """The markdown lines: the table, which runs each row holds, and the settings every run shares."""
    groups, differing = group(runs)
    settings_cols = [k for k in differing if k not in GROUPED] + [k for k in GROUPED if k in differing]
    columns = list(dict.fromkeys(c for r in runs for c in r["metrics"]))
    lines = ["| # | " + " | ".join(settings_cols + ["n"] + columns) + " |",
             "|---" * (len(settings_cols) + len(columns) + 2) + "|"]
    for i, g in enumerate(groups, 1):
        cells = [", ".join(dict.fromkeys(r["settings"].get(k, "-") for r in g)) for k in settings_cols]
        cells += [str(len(g))] + [mean_std([r["metrics"][c] for r in g if c in r["metrics"]], len(g))
                                  for c in columns]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines += ["", "Mean ± population std (ddof=0) over the n runs of a row, which differ only in "
              f"{' or '.join(GROUPED)}; top-1 and top-5 in %."]
    lines += [f"- row {i}: {', '.join(r['name'] for r in g)}" for i, g in enumerate(groups, 1)]
    same = {k: v for k, v in runs[0]["settings"].items() if k not in differing and v != "-"}
    if same:
        lines += ["", "Same in every run: " + ", ".join(f"{k} {v}" for k, v in same.items()) + "."]
    return lines


def check_output(path, overwrite=False):
    """Refuse (before anything is read) to replace a file this command did not write."""
    if os.path.isdir(path):
        raise CompareError(f"--compare-output {path} is a folder: give a file name")
    if os.path.exists(path) and not overwrite:
        with open(path, errors="replace") as f:
            if f.readline().strip() != MARK:
                raise CompareError(f"{path} exists and was not written by --compare; nothing was changed. Give "
                                   "--compare-output FILE, or --overwrite to replace it")


def main(paths, output=None, overwrite=False):
    """Print the table of the finished runs among `paths`, write it to `output`; returns the runs read."""
    output = output or DEFAULT_OUTPUT
    check_output(output, overwrite)
    runs = []
    for path in paths:
        try:
            runs.append(read_run(path))
        except RunError as e:
            print(f"skipped {path}: {e}", file=sys.stderr, flush=True)
    if not runs:
        raise CompareError(f"no finished run to compare among the {len(paths)} path(s) given (a finished run "
                           "folder holds results.json)")
    lines = [f"# {len(runs)} run(s) compared", ""] + table(runs)
    print("\n".join(lines))
    tmp = output + ".tmp"
    with open(tmp, "w") as f:
        f.write(MARK + "\n" + "\n".join(lines) + "\n")
    os.replace(tmp, output)
    print(f"\ntable written to {output}")
    return runs
