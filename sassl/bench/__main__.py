"""`python -m sassl.bench WHAT ...`: the benchmarks' command line (sassl.bench)."""
from __future__ import annotations

import argparse
import sys

import sassl.bench
from sassl.bench import eval as evaluation, explorer, gpu, index, loader, start, stylizer, train

# subcommand -> the module that holds its benchmark, its flags (add_parser) and its handler (run)
BENCHMARKS = {"stylizer": stylizer, "train": train, "start": start, "index": index, "loader": loader,
              "eval": evaluation, "explorer": explorer}


def parser() -> argparse.ArgumentParser:
    """`python -m sassl.bench`'s flags: each benchmark module adds its own subcommand (add_parser)."""
    ap = argparse.ArgumentParser(prog="python -m sassl.bench", description=sassl.bench.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    for module in BENCHMARKS.values():
        module.add_parser(sub)
    sub.add_parser("gpu", help="the GPU check: python -m sassl.bench gpu --help", add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu"]:  # its own flags (sassl.bench.gpu)
        return gpu.main(argv[1:])
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
