"""`ssl-transfer` console script: one entry point, sub-commands mapped to typed functions.

Problems with the user's input (recipe, paths, data) print one line on stderr and exit with status 2;
a run stopped by a non-finite loss or gradient prints one line and exits with status 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ssl_transfer.errors import NonFiniteError, Stopped, UserError

OVERRIDES_HELP = "dotted overrides applied after the recipe file, e.g. trainer.max_epochs=3 optim.lr=1e-3"


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML path, bundled recipe name (see `list recipes`), or a run dir to resume")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help=OVERRIDES_HELP)
    p.add_argument("--resume", action="store_true", help="continue from <run dir>/checkpoints/last.ckpt")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run dir of the same name first")
    p.add_argument("--print-recipe", action="store_true", help="print the resolved recipe as YAML and exit")


def _maybe_print(args: argparse.Namespace) -> bool:
    if not args.print_recipe:
        return False
    import yaml

    from ssl_transfer.recipe import load_recipe

    print(yaml.safe_dump(load_recipe(args.recipe, args.overrides).to_dict(), sort_keys=False), end="")
    return True


def cmd_pretrain(args: argparse.Namespace) -> int:
    if _maybe_print(args):
        return 0
    from ssl_transfer.train import pretrain

    res = pretrain(args.recipe, args.overrides, resume=args.resume, overwrite=args.overwrite)
    loss = res.metrics.get("train/loss_epoch")
    print(f"run dir: {res.run_dir}" + (f"  (final epoch loss {loss:.4g})" if loss is not None else ""))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if _maybe_print(args):
        return 0
    from ssl_transfer.train import first_and_last_loss, run

    res = run(args.recipe, args.overrides, resume=args.resume, overwrite=args.overwrite)
    first, last = first_and_last_loss(res.run_dir)
    print(f"\nrun dir: {res.run_dir}")
    ratio = f" ({first / last:.1f}x lower)" if 0 < last < first else ""
    print(f"train loss: first epoch {first:.4g} -> last epoch {last:.4g}{ratio}")
    result = res.metrics.get("eval")
    if result:
        _print_eval(result)
    return 0


def _print_eval(result: dict) -> None:
    from ssl_transfer.evaluation.report import summary_table
    from ssl_transfer.train import headline

    knn = headline(result, "knn")
    if knn:
        print(
            f"kNN (k={knn['k']}, T={knn['temperature']}) on {knn['n_test']} test images: top-1 "
            f"{100 * knn['top1']:.2f}%  top-5 {100 * knn['top5']:.2f}%"
        )
    print(f"\ntop-1 test accuracy (%) on {result['data']['source']}:")
    print(summary_table(result))


def _str_list(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def _int_list(text: str, name: str, allow_all: bool = False) -> list[int | None]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if allow_all and part == "all":
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise UserError(
                f"--{name}: expected comma-separated integers{' or all' if allow_all else ''}, got {part!r}"
            ) from None
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssl_transfer.evaluation.protocol import evaluate
    from ssl_transfer.recipe import load_recipe

    run_recipe = Path(args.encoder) / "recipe.yaml"
    rec = load_recipe(run_recipe) if run_recipe.is_file() else None
    data: dict = {}
    if args.dataset:
        p = Path(args.dataset)
        if p.suffix == ".npz":
            data = {"source": "npz", "path": str(p)}
        elif p.is_dir():
            data = {"source": "imagefolder", "root": str(p)}
        else:
            data = {"source": args.dataset}
    elif rec is not None:
        data = (rec.eval.data or rec.data).model_dump(mode="json")
    else:
        raise UserError("--dataset is needed unless ENCODER is a run dir (whose recipe names its data)")
    data = load_recipe({"data": data}, [f"data.{o}" for o in args.data]).data.model_dump(mode="json")
    out = Path(args.out) if args.out else (Path(args.encoder) / "eval" if run_recipe.is_file() else Path("eval"))
    given = {
        "protocols": _str_list(args.protocols),
        "labels_per_class": _int_list(args.labels_per_class, "labels-per-class", allow_all=True)
        if args.labels_per_class
        else None,
        "seeds": _int_list(args.seeds, "seeds") if args.seeds else None,
        "knn": {k: v for k, v in (("k", args.k), ("temperature", args.temperature)) if v is not None} or None,
        "finetune": {
            k: v for k, v in (("strategies", _str_list(args.finetune)), ("epochs", args.epochs)) if v is not None
        }
        or None,
    }
    options = rec.eval.model_dump(mode="json", exclude={"data"}) if rec is not None and not args.dataset else {}
    for key, value in given.items():
        if value is not None:
            options[key] = {**options.get(key, {}), **value} if isinstance(value, dict) else value
    result = evaluate(args.encoder, data, options, out_dir=out)
    _print_eval(result)
    t = result["transfer"]
    if t["resize"] or t["channels"] != "same":
        print(f"input adaptation: resize {t['resize'] or 'none'}; channels {t['channels']}")
    print(f"\nwritten: {out / 'eval.json'}, {out / 'report.md'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssl_transfer.export import FORMATS, default_export_path, export_encoder

    if args.format not in FORMATS:
        raise UserError(f"--format: {FORMATS.unknown_message(args.format)}")
    src = Path(args.source)
    out = Path(args.out) if args.out else default_export_path(src if src.is_dir() else src.parent, args.format)
    res = export_encoder(args.source, args.format, out)
    print(f"{args.format}: {res.path}  (metadata: {res.meta_path})")
    print(f"reloaded and checked: max |embedding difference| {res.max_abs_diff:.2e} on 5 images (limit 1e-4)")
    if args.format == "timm":
        import json

        t = json.loads(res.meta_path.read_text())["timm"]
        print(
            f"load with: timm.create_model({t['model_name']!r}, pretrained=True, "
            f"pretrained_cfg_overlay=<'timm.pretrained_cfg_overlay' in {res.meta_path.name}>"
            f"{', **model_args' if t['model_args'] else ''}) or timm.create_model('local-dir:{res.path}', "
            "pretrained=True)"
        )
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ssl_transfer.embed import embed_folder

    res = embed_folder(
        args.encoder,
        args.images_dir,
        args.out,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        bad_images=args.bad_images,
    )
    print(f"{res.count} embeddings of dim {res.dim} -> {res.embeddings}  (row order: {res.files}; details: {res.meta})")
    if res.skipped:
        print(f"skipped {res.skipped} unreadable file(s); listed in {res.meta}")
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    from ssl_transfer.data.shards import write_shards
    from ssl_transfer.data.sources import folder_listing, verified

    listing = verified(
        folder_listing(args.images_dir, "images_dir"), f"images_dir={args.images_dir}", args.bad_images, "all"
    )
    info = write_shards(listing, args.out, chunk_bytes=args.chunk_bytes, num_workers=args.workers)
    labelled = f"{len(info.classes)} classes" if info.classes else "unlabeled"
    print(f"{info.count} images ({labelled}) -> {info.chunks} LitData chunk(s) in {info.out}")
    if listing.skipped:
        print(f"skipped {len(listing.skipped)} unreadable file(s), e.g. {listing.skipped[0][0]}")
    print(f"train from them with: data.source=shards data.root={info.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows: list[tuple[str, str]]
    if args.what == "methods":
        from ssl_transfer.registry import methods_in_source

        rows = sorted(methods_in_source().items())
    elif args.what == "backbones":
        from ssl_transfer.backbone_names import CIFAR_RESNETS, SMALL_CNN_WIDTHS

        rows = [(n, f"small CNN, embed_dim {w[-1]}, for 8-32 px inputs") for n, w in SMALL_CNN_WIDTHS.items()]
        rows += [
            (n, f"timm ResNet-{n[6:8]} with a 3x3 stride-1 stem and no max-pool, embed_dim {d}, for 32 px inputs")
            for n, d in CIFAR_RESNETS.items()
        ]
        rows.append(("<timm name>", "any model of timm.list_models(), e.g. resnet18, vit_tiny_patch16_224"))
    elif args.what == "datasets":
        from ssl_transfer.registry import calls_in_source

        rows = list(calls_in_source(Path(__file__).parent / "data" / "sources.py", "source").items())
    elif args.what == "fields":
        from ssl_transfer.recipe import describe_fields

        rows = []
        for r in describe_fields(args.section, with_methods=False):
            where = f" [{r['method']}]" if r["method"] else ""
            rows.append((r["key"], f"{r['type']} = {r['default']!r}{where}  {r['description']}".rstrip()))
    else:
        from ssl_transfer.recipe import find_recipe, list_recipes

        rows = []
        for n in list_recipes():
            first = find_recipe(n).read_text().splitlines()[:1]
            rows.append((n, first[0].lstrip("# ") if first and first[0].startswith("#") else ""))
    width = max(len(n) for n, _ in rows)
    for n, d in rows:
        print(f"{n:<{width}}  {d}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-transfer", description="Self-supervised pretraining, evaluation and export of image encoders."
    )
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only: no progress bar or epoch lines"
    )
    talk.add_argument(
        "-v", "--verbose", action="store_true", help="also Lightning's own info lines and the model summary"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
        ("pretrain", "pretrain an encoder from a recipe; writes runs/<name>/", cmd_pretrain),
        ("run", "pretrain, then evaluate (recipe's eval section) and export", cmd_run),
    ]
    for name, help_text, fn in commands:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_run_args(p)
        p.set_defaults(fn=fn)
    p = sub.add_parser(
        "evaluate",
        help="evaluate any encoder: kNN, linear probe, fine-tuning, scratch, label budgets",
        description="Evaluate an encoder (run dir, encoder file, timm:NAME or torchvision:NAME) on a dataset. Options "
        "not given come from a run dir's recipe (its eval section), else from the recipe defaults shown.",
    )
    p.add_argument("encoder", help="run dir, encoder.safetensors/.json, timm:NAME or torchvision:NAME")
    p.add_argument(
        "--dataset",
        help="data source name (see `list datasets`), a .npz file, or an image folder; default: the run's data",
    )
    p.add_argument(
        "--data",
        nargs="*",
        default=[],
        metavar="key=value",
        help="data section fields, e.g. root=data/cifar10 image_size=32",
    )
    from ssl_transfer.recipe import EvalConfig  # pydantic only: the defaults shown are the schema's

    d = EvalConfig()
    base = "default"
    p.add_argument("--protocols", help=f"comma list of knn, linear, finetune, scratch ({base} {','.join(d.protocols)})")
    p.add_argument("--labels-per-class", help=f"comma list of label budgets per class, e.g. 1,10,100,all ({base} all)")
    p.add_argument(
        "--seeds",
        help=f"comma list of seeds, one label draw and training run per seed ({base} {','.join(map(str, d.seeds))})",
    )
    p.add_argument("--k", type=int, help=f"kNN neighbours ({base} {d.knn.k})")
    p.add_argument(
        "--temperature", type=float, help=f"kNN vote temperature T: weights exp(sim/T) ({base} {d.knn.temperature})"
    )
    p.add_argument(
        "--finetune",
        help=f"comma list of fine-tuning strategies: full, head, llrd, freeze:K ({base} "
        f"{','.join(d.finetune.strategies)})",
    )
    p.add_argument("--epochs", type=int, help=f"fine-tuning epochs, at least 300 steps ({base} {d.finetune.epochs})")
    p.add_argument("--out", help="output folder for eval.json and report.md (default: RUN_DIR/eval or ./eval)")
    p.set_defaults(fn=cmd_evaluate)
    p = sub.add_parser(
        "export",
        help="export an encoder as safetensors, torchscript, pt2, onnx or a timm model folder",
        description="Export a run's encoder (or any exported encoder) and check the export against it.",
    )
    p.add_argument("source", help="run dir or encoder file (.safetensors/.pt/.onnx/timm folder)")
    p.add_argument(
        "--format", required=True, metavar="FORMAT", help="safetensors, torchscript, pt2 (torch.export), onnx or timm"
    )
    p.add_argument(
        "--out", help="output path (suffix set by the format; a folder for timm); default RUN_DIR/export/encoder.<ext>"
    )
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser(
        "embed",
        help="embed a folder of images with an encoder into a .npy file",
        description="Embed every image under IMAGES_DIR (recursively) with ENCODER. Rows stream to a memory-mapped "
        ".npy with progress on stderr; after a kill, the same command continues where it was.",
    )
    p.add_argument("encoder", help="run dir, exported encoder (any format) or timm:NAME")
    p.add_argument("images_dir")
    p.add_argument(
        "--out", default="embeddings.npy", help="output .npy (N, D) float32; .files.txt and .json are written beside it"
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers reading the images")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--bad-images", choices=["skip", "error"], default="skip", help="unreadable files: skip and count, or stop"
    )
    p.set_defaults(fn=cmd_embed)
    p = sub.add_parser(
        "shard",
        help="write an image folder as LitData shards (data.source=shards)",
        description="Write every image under IMAGES_DIR (root/<class>/... keeps labels) as LitData shards in OUT: "
        "the files' own bytes, in listing order, with labels and class names beside them. Copy OUT to an object "
        "store and point data.root at its URL to stream it from there.",
    )
    p.add_argument("images_dir")
    p.add_argument("out")
    p.add_argument("--chunk-bytes", default="64MB", help="size of one shard chunk (LitData's chunk_bytes)")
    p.add_argument("--workers", type=int, default=1, help="processes writing chunks (order is kept)")
    p.add_argument(
        "--bad-images", choices=["skip", "error"], default="skip", help="unreadable files: skip and count, or stop"
    )
    p.set_defaults(fn=cmd_shard)
    p = sub.add_parser("list", help="list registered methods, backbones, datasets, bundled recipes or recipe fields")
    p.add_argument("what", choices=["methods", "backbones", "datasets", "recipes", "fields"])
    p.add_argument(
        "section",
        nargs="?",
        help="fields: only this section (optim, augment, ...) or method (simclr: its method.* fields)",
    )
    p.set_defaults(fn=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides given after an option (`--resume a.b=1`) land here
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.quiet or args.verbose:
        from ssl_transfer.training.console import set_verbosity

        set_verbosity(0 if args.quiet else 2)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"ssl-transfer: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"ssl-transfer: training stopped: {e}", file=sys.stderr)
        return 3
    except Stopped as e:
        print(f"ssl-transfer: stopped by {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("ssl-transfer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
