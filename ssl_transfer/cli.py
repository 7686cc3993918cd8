"""`ssl-transfer` console script: one entry point, sub-commands mapped to typed functions.

Problems with the user's input (recipe, paths, data) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ssl_transfer.errors import UserError

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
    knn = res.metrics.get("eval", {}).get("knn")
    if knn:
        print(f"kNN (k={knn['k']}, T={knn['temperature']}) on {knn['n_test']} test images: top-1 {100 * knn['top1']:.2f}%  top-5 {100 * knn['top5']:.2f}%")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows: list[tuple[str, str]]
    if args.what == "methods":
        from ssl_transfer.methods import METHODS

        rows = [(n, (METHODS.get(n).__doc__ or "").strip().splitlines()[0]) for n in METHODS]
    elif args.what == "backbones":
        import timm

        from ssl_transfer.backbones import SMALL_CNNS

        rows = [(n, f"small CNN, embed_dim {SMALL_CNNS.get(n)(1).embed_dim}, for 8-32 px inputs") for n in SMALL_CNNS]
        rows.append(("<timm name>", f"any of timm's {len(timm.list_models())} models, e.g. resnet18, vit_tiny_patch16_224"))
    elif args.what == "datasets":
        from ssl_transfer.data import SOURCES

        rows = [(n, SOURCES.get(n).description) for n in SOURCES]
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
    parser = argparse.ArgumentParser(prog="ssl-transfer", description="Self-supervised pretraining, evaluation and export of image encoders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
        ("pretrain", "pretrain an encoder from a recipe; writes runs/<name>/", cmd_pretrain),
        ("run", "pretrain, then evaluate (recipe's eval section) and export", cmd_run),
    ]
    for name, help_text, fn in commands:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_run_args(p)
        p.set_defaults(fn=fn)
    p = sub.add_parser("list", help="list registered methods, backbones, datasets or bundled recipes")
    p.add_argument("what", choices=["methods", "backbones", "datasets", "recipes"])
    p.set_defaults(fn=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides given after an option (`--resume a.b=1`) land here
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.fn(args)
    except UserError as e:
        print(f"ssl-transfer: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("ssl-transfer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
