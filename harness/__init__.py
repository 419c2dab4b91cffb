"""The run harness: everything around the method that a command needs to run it well.

settings.py resolves a command line once (per-protocol defaults, --recipe, the data source, run names), with
recipe.py reading the authors' logged recipes; runs.py makes run folders, logs, checkpoints and results; memory.py
chooses micro-batches and words the out-of-memory line; report.py writes predictions, per-class accuracy and the
confusion picture; compare.py puts runs side by side; curves.py writes history.csv and curves.png.

Imports the method files, data.py and video/; only the commands (train.py, evaluate.py, prepare.py, benchmark.py)
import harness/.
"""
