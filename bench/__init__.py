"""The benchmark's parts (`python benchmark.py`): measure.py times and probes a step, bench/flops.py counts its FLOPs,
loading.py measures the data loader, tables.py prints the tables and checks the targets."""
