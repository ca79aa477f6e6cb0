"""Benchmarks: `python -m sassl.bench stylizer|train|loader|eval|start|index|explorer|gpu`, one file each.

Each benchmark module holds its measuring function (bench_*), its subcommand's flags (add_parser) and the
handler that prints or writes the result (run); common.py holds what they share. The old code paths that a
benchmark compares against live in that benchmark's file, named so (OldPathFloatCrops,
old_path_features_in_memory; LightlyMoCoReference is the lightly-built reference step). Ratios are measured
within one run, so they hold on the machine that ran it. gpu.py is the one GPU check
(`python -m sassl.bench gpu --help`); it imports only torch, numpy, PIL and sassl's core.
"""
