"""A run's training curves: history.csv (one row per epoch) and curves.png (loss, train and test top-1 by epoch).

train.py calls write_history after every epoch and plot at the end. history.csv is rewritten whole from the
history kept in the checkpoint, so after a kill and --resume it holds exactly the checkpointed epochs, never a
half-written or repeated one. matplotlib is optional (an extra, not in requirements.txt's list): it is imported
only here, only when plotting, and without it the run says so once and skips the picture.
"""
import csv
import os

# Column order of history.csv; any other key a row carries (e.g. base2novel's test_base) follows these.
COLUMNS = ("epoch", "loss", "train_top1", "test_top1", "test_top5", "lr", "clips_per_s")


def write_history(folder, history):
    """history.csv: one row per finished epoch; test columns are empty in epochs without a test."""
    keys = [k for k in COLUMNS if any(k in row for row in history)]
    keys += sorted({k for row in history for k in row} - set(keys))
    tmp = os.path.join(folder, "history.csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in history:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    os.replace(tmp, os.path.join(folder, "history.csv"))  # a kill never leaves half a file


def plot(folder, history, final=None, title=""):
    """curves.png from the history rows; final = (epoch, top-1, "5x3") marks the final multi-view test.
    Returns the path, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no window: works on servers without a display
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    ax_loss.plot(epochs, [r["loss"] for r in history], "o-", ms=3, color="tab:red")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, [r["train_top1"] for r in history], "o-", ms=3, label="train (running, augmented)")
    tested = [r for r in history if "test_top1" in r]
    if tested:
        ax_acc.plot([r["epoch"] for r in tested], [r["test_top1"] for r in tested], "s-", ms=4,
                    label="test, single view")
    if final is not None:
        ax_acc.plot([final[0]], [final[1]], "*", ms=12, color="tab:green", label=f"final test, {final[2]} views")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy", ylim=(0, 100))
    ax_acc.legend(fontsize=8, loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = os.path.join(folder, "curves.png")
    fig.savefig(path)
    plt.close(fig)
    return path
