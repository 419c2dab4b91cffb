"""benchmark.py's report: the screen table, the memory table and the rule for what fits a GPU, the target
checks, and the Markdown docs/performance.md shows. Reads only the results dict (benchmark.json), so
`python benchmark.py --report benchmark.json` prints a saved run again.

The rule: a step of micro-batches of m videos needs the weights + the fp32 gradient and AdamW's two moments of
every trainable parameter + what a step holds whatever its batch (the class text branch and L_CC, "fixed") + m
clips' activations + RESERVE for the CUDA context and the allocator's slack; it fits a GPU of G GB if that is at
most G. Micro-batches change the memory, not the result (train.py --micro-batch).
"""
from bench import loading

VIEWS = (5, 3)  # UCF101's test views, clips x crops (evaluate.VIEWS): 15 views per video
DESCRIPTIONS = 2  # of each kind (spatial, temporal) per class, train.py's --num-descriptions default
TARGETS = dict(time=0.5, memory=0.4, measures=1.5, sparse=3.0, utilisation=1.5)  # what check() asks
GPUS = (12, 24, 48, 80)  # GB of the GPUs the memory table answers for
GLOBAL_BATCH = 32  # the paper's global batch
RESERVE = 1.0  # GB a GPU loses to the CUDA context and the allocator's slack beyond the tensors: a rule of thumb
GB = 2 ** 30  # bytes


def ratio(a, b):
    return a / b if a is not None and b else None


def ceilings(results):
    """{precision: the best rate of any op that any row of that precision ran}: the ceiling no such row's FLOP
    rate can exceed. A bf16 row's fp32 ops (the logits, the loss) count for its bound too: the rows' own
    precision decides, not the op's."""
    best = {}
    for row in [*results["train"].values(), results.get("inference", {})]:
        for c in row.get("ceiling", {}).values():
            precision = row.get("precision")
            if c["flops_per_s"] > best.get(precision, {}).get("flops_per_s", 0):
                best[precision] = dict(c, row=row.get("config"))
    return best


def fit(m, cfg, mem):
    """GB a step of micro-batches of m videos needs: weights + gradients and AdamW state of the trainable
    parameters + what a step holds whatever its batch + m clips' activations + RESERVE."""
    return (cfg["weight_bytes"] + cfg["state_bytes"] + mem["fixed_bytes"] + m * mem["per_clip_bytes"]) / GB + RESERVE


def memory_tables(results, markdown=False):
    """The memory table (activations per clip and for the global batch, GB) and what fits each GPU."""
    rows = []
    for cfg in results.get("memory", {}).values():
        if "error" in cfg:
            continue
        for mem in cfg["rows"]:
            sizes = [max([m for m in (32, 16, 8, 4, 2, 1) if fit(m, cfg, mem) <= g], default=None) for g in GPUS]
            rows.append([cfg["backbone"].replace("random-", ""), f"r {cfg['rank']}, blocks {cfg['blocks'][0]}-"
                         f"{cfg['blocks'][1]}", mem["precision"], "yes" if mem["checkpointing"] else "no",
                         f"{mem['per_clip_bytes'] / GB:.3f}", f"{mem['fixed_bytes'] / GB:.2f}",
                         f"{(mem['fixed_bytes'] + GLOBAL_BATCH * mem['per_clip_bytes']) / GB:.1f}",
                         f"{fit(GLOBAL_BATCH, cfg, mem):.1f}"]
                        + [("all 32" if m == 32 else f"micro {m}") if m else "no" for m in sizes])
    head = ["backbone", "adapters", "precision", "checkpointing", "GB per clip", "GB fixed",
            f"GB batch {GLOBAL_BATCH}", f"GPU GB, batch {GLOBAL_BATCH} in one pass"] + [f"{g} GB GPU" for g in GPUS]
    if not rows:
        return []
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return ["  ".join(str(x).rjust(w) for x, w in zip(r, widths)) for r in [head, *rows]]


def check(results):
    """The efficiency targets (TARGETS), read from this run's numbers: [dict(passed, value, text)]."""
    train_rows, lines = results["train"], []
    fs, full, off, vit = (train_rows.get(k, {}) for k in ("msta-few-shot", "full-ft", "off-all", "vit"))

    def add(value, target, text):
        lines.append(dict(passed=target(value) if value is not None else None, value=value,
                          text=text.format(value) if value is not None else text.split(":")[0] + ": not measured"))
    add(ratio(fs.get("time_s"), full.get("time_s")), lambda r: r <= TARGETS["time"],
        "MSTA few-shot step time / full fine-tuning: {:.2f}x (target <= %sx)" % TARGETS["time"])
    add(ratio(fs.get("peak_bytes"), full.get("peak_bytes")), lambda r: r <= TARGETS["memory"],
        "MSTA few-shot peak memory / full fine-tuning: {:.2f}x (target <= %sx)" % TARGETS["memory"])
    add(ratio(off.get("time_s"), fs.get("time_s")), lambda r: r >= TARGETS["measures"],
        "efficiency measures together: {:.2f}x faster than all off (target >= %sx)" % TARGETS["measures"])
    add(results.get("data", {}).get("sparse_speedup"), lambda r: r >= TARGETS["sparse"],
        "sparse decoding: {:.2f}x faster than decoding every frame (target >= %sx)" % TARGETS["sparse"])
    add(ratio(vit.get("utilisation"), fs.get("utilisation")), lambda r: r <= TARGETS["utilisation"],
        "FLOP utilisation: plain ViT fwd+bwd / MSTA few-shot: {:.2f}x (target within %sx)" % TARGETS["utilisation"])
    return lines


def table(results):
    """The screen report."""
    m, s, rows = results["machine"], results["settings"], results["train"]
    out = [f"MSTA benchmark: {s['model']} with random weights on {s['device']} ({m.get('gpu', m['cpu'])}, "
           f"{m['torch_threads']} threads), torch {m['torch']}; native bf16: {'yes' if m['native_bf16'] else 'no'} "
           f"({m['native_bf16_by']})",
           f"{s['precision']}, batch {s['batch']} videos x {s['frames']} frames, {s['classes']} classes (UCF101) "
           f"+ {DESCRIPTIONS}+{DESCRIPTIONS} descriptions each; median of {s['steps']} step(s) after {s['warmup']} "
           f"warm-up; {results.get('seconds', 0):.0f} s in all"]
    busy = m.get("other_processes_cpu_share")
    if busy is not None:
        out.append(f"other processes used {100 * busy:.0f}% of the CPUs during the run"
                   + (": the machine was busy, so the timings are disturbed" if busy > 0.1 else ""))
    out += [f"not run: {why}" for why in results.get("skipped", [])]
    out += ["", "1. ceiling, the best rate of any matmul/convolution/attention op of the steps, run alone: " + (
        ", ".join(f"{k} {v['flops_per_s'] / 1e9:,.1f} GFLOP/s ({v['op'].replace('aten.', '')} {v['shapes']})"
                  for k, v in results["ceiling"].items()) or "not measured")]
    full, fs = rows.get("full-ft", {}), rows.get("msta-few-shot", {})
    mib = lambda b: f"{b / 2**20:,.0f}" if b is not None else "-"  # noqa: E731
    x = lambda a, b: f"{a / b:.2f}x" if a is not None and b else "-"  # noqa: E731
    out += ["", "2. training step (train.accumulate_step + AdamW; the reference row: forward+backward only)",
            f"{'':40s} {'trainable':>10s} {'step s':>7s} {'vs full':>7s} {'vs MSTA':>7s} {'peak MiB':>9s} "
            f"{'vs full':>7s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'of ceil':>7s}"]
    for name, row in rows.items():
        if name == "off-all":
            out.append("     efficiency measures off (ablation):")
        if "error" in row:
            out.append(f"{row['label']:40s} FAILED: {row['error'].splitlines()[-1] if row['error'] else ''}")
            continue
        tr = f"{row['trainable_params'] / 1e6:.2f}M" if row["kind"] != "vit" else "all"
        util = f"{100 * row['utilisation']:6.1f}%" if "utilisation" in row else "-"
        x_full = x(row["peak_bytes"], full.get("peak_bytes"))
        out.append(f"{row['label']:40s} {tr:>10s} {row['time_s']:7.2f} {x(row['time_s'], full.get('time_s')):>7s} "
                   f"{x(row['time_s'], fs.get('time_s')):>7s} {mib(row['peak_bytes']):>9s} "
                   f"{x_full:>7s} {row['flops'] / 1e9:7.0f} "
                   f"{row['flops_per_s'] / 1e9:8.1f} {util:>7s}")
    s32, s16 = rows.get("stream-fp32", {}), rows.get("stream-bf16", {})
    if "adapter_error" in s32 and "adapter_error" in s16:
        out.append(f"     bf16: the adapters' contribution to the video feature is off by "
                   f"{100 * s32['adapter_error']:.1f}% (fp32 stream) / {100 * s16['adapter_error']:.1f}% "
                   "(bf16 stream) against fp32")
    out.append("     peak MiB: the most bytes of tensors the first step allocated and held at once (weights "
               "excluded)" + ("; CUDA max_memory_allocated in the JSON" if s["device"] == "cuda" else ""))
    if "compile" not in rows:
        out.append("     torch.compile: not a row (--compile runs it); measured on a 2-core CPU not to pay, so "
                   "train.py has no --compile switch (docs/performance.md)")
    inf = results.get("inference", {})
    if "single" in inf:
        out += ["", f"3. inference, MSTA few-shot, class text features cached ({inf['precision']})"]
        for key, what in (("single", "single view"), ("multi", f"{VIEWS[0]}x{VIEWS[1]} views")):
            if key not in inf:
                out.append(f"   {what:14s} not run (on a CPU only with --all)")
                continue
            r = inf[key]
            out.append(f"   {what:14s} {r['videos']} video(s) x {r['views']:2d} views per batch: "
                       f"{r['clips_per_s']:7.2f} clips/s, {r['videos_per_s']:7.3f} videos/s, "
                       f"{100 * r.get('utilisation', 0):.1f}% of ceiling")
    elif inf:
        out += ["", f"3. inference FAILED: {inf.get('error', '').splitlines()[-1:]}"]
    mem = memory_tables(results)
    if mem:
        out += ["", f"4. memory: activations of one clip, what a step holds whatever its batch (fixed), the global "
                    f"batch of {GLOBAL_BATCH}, and the largest micro-batch that fits each GPU (weights + "
                    f"gradients and AdamW state + fixed + micro-batch x per clip + {RESERVE:.0f} GB reserve)"] + mem
    out += loading.report(results, rows)
    out += ["", "target checks:"]
    out += [f"{'PASS' if c['passed'] else 'MISS' if c['passed'] is False else 'N/A '}  {c['text']}"
            for c in results["targets"]]
    if results.get("data_targets"):
        out += ["", "loader target checks (CPU, one worker core):"]
        out += [f"{'PASS' if c['passed'] else 'FAIL'}  {c['text']}" for c in results["data_targets"]]
    return "\n".join(out)


def markdown(results):
    """docs/performance.md's memory table, as Markdown."""
    m = results["machine"]
    return "\n".join([f"Measured by `python benchmark.py` ({m['cpu']}, torch {m['torch']}, native bf16: "
                      f"{'yes' if m['native_bf16'] else 'no'}); GB = 2^30 bytes.", "", *memory_tables(results, True)])


def progress(name, row, seconds):
    """The line printed as each row finishes."""
    if "error" in row:
        status = "FAILED"
    elif "time_s" in row:
        status = f"{row['time_s']:.2f} s/step" + (f", peak {row['peak_bytes'] / 2**20:,.0f} MiB"
                                                  if row.get("peak_bytes") else "")
    elif "rows" in row:
        status = ", ".join(f"{r['precision']}{' ckpt' if r['checkpointing'] else ''} "
                           f"{r['per_clip_bytes'] / GB:.3f} GB/clip" for r in row["rows"])
    else:
        status = "done"
    return f"  {name:22s} {status} ({seconds:.0f} s)"
