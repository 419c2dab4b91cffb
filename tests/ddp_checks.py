"""Run by tests/test_gpu_path.py under a two-process torchrun (gloo, CPU): train.py with one thing changed, per
mode. Each rank writes its stderr to <folder>/stderr<rank>.txt.

usage: torchrun --nproc_per_node=2 tests/ddp_checks.py MODE FOLDER [train.py arguments], MODE one of:
  count   collectives and host-device synchronisations per training step (tests/step_counts.py), written to
          FOLDER/steps<rank>.json
  train   train.py as it is
  resume  train.py, but a rank other than 0 cannot read checkpoints, as on a machine without the run folder
  fail    rank 1's second training step raises a RuntimeError, as a cuBLAS failure would
"""
import json
import os
import sys

mode, folder, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
rank = int(os.environ["RANK"])
err = open(os.path.join(folder, f"stderr{rank}.txt"), "w")
os.dup2(err.fileno(), 2)  # this rank's stderr, also for what C++ and os._exit leave unflushed

from harness import runs  # noqa: E402
import train  # noqa: E402


def setattr_(obj, name, value):
    setattr(obj, name, value)


if mode == "count":
    from step_counts import StepCounts
    counts = StepCounts()
    counts.patch(setattr_)
    runs.METER_EVERY = 3
    train.main(argv)
    with open(os.path.join(folder, f"steps{rank}.json"), "w") as f:
        json.dump(counts.steps, f)
elif mode == "resume":
    if rank != 0:
        def unreadable(path):
            raise runs.CheckpointError(f"no checkpoint at {path} (this machine has no run folder)")
        runs.read_checkpoint = unreadable
    train.run(argv)
elif mode == "fail":
    step_fn, calls = train.train_step, []

    def failing(*args, **kwargs):
        calls.append(1)
        if rank == 1 and len(calls) == 2:
            raise RuntimeError("cuBLAS failed (simulated)\nCUBLAS_STATUS_EXECUTION_FAILED")
        return step_fn(*args, **kwargs)
    train.train_step = failing
    train.run(argv)
else:
    train.run(argv)
