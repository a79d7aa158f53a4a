"""Argument parsing of `toonjax distill` (toonjax.tools.distill, toonjax.train.distill).

toonjax distill pairs --base BASE --toon TOON --n 20000 [--resolution 256] [--psi 0.5,1.0]
    [--mixing 0.0] [--seed 0] [--batch 8] [--noise const|random] [--filter layout:T] DEST
toonjax distill export WORKDIR DEST        (a trained translator as a translator directory)
"""

from __future__ import annotations

import argparse


def _cmd_pairs(args: argparse.Namespace) -> None:
    from toonjax.tools import distill

    distill.generate_pairs(
        args.base,
        args.toon,
        args.dest,
        args.n,
        resolution=args.resolution,
        psi=distill.parse_psi(args.psi),
        mixing=args.mixing,
        seed=args.seed,
        batch=args.batch,
        noise=args.noise,
        layout_threshold=distill.parse_filter(args.filter),
        shard_size=args.shard_size,
        overwrite=args.overwrite,
    )


def _cmd_export(args: argparse.Namespace) -> None:
    from toonjax.train import distill

    dest = distill.export_translator(args.workdir, args.dest, overwrite=args.overwrite)
    print(f"wrote the translator of {args.workdir} to {dest}")


def add_parsers(sub) -> None:
    """Adds `distill pairs` and `distill export` to the `toonjax` sub-parsers."""
    d = sub.add_parser(
        "distill", help="toonify in one forward pass: (base, toon) pairs, export"
    ).add_subparsers(dest="distill_command", required=True)

    p = d.add_parser(
        "pairs", help="render the same latents with --base and --toon into a paired set"
    )
    p.add_argument("--base", required=True, help="the photo network (dir, .pkl, .pt, workdir)")
    p.add_argument("--toon", required=True, help="its toon blend or fine-tune (same architecture)")
    p.add_argument("--n", type=int, required=True, help="pairs to keep (7,000-26,000 for real)")
    p.add_argument(
        "--resolution", type=int, default=None,
        help="the networks' resolution (default) or a smaller power of two (area-downsampled)",
    )  # fmt: skip
    p.add_argument("--psi", default="0.5,1.0", help="truncation range LOW,HIGH (default 0.5,1.0)")
    p.add_argument("--mixing", type=float, default=0.0, help="style-mixing probability")
    p.add_argument("--seed", type=int, default=0, help="sample i's latent is f(seed, i)")
    p.add_argument("--batch", type=int, default=8, help="samples rendered at once")
    p.add_argument(
        "--noise", choices=["const", "random"], default="const",
        help="const: the base's noise_const maps; random: per-sample maps (both nets alike)",
    )  # fmt: skip
    p.add_argument(
        "--filter", default="none",
        help="none, or layout:T to drop pairs whose 8x8 layouts differ by more than T",
    )  # fmt: skip
    p.add_argument("--shard-size", type=int, default=1000, help="pairs per shard (resume unit)")
    p.add_argument("--overwrite", action="store_true", help="start DEST again from nothing")
    p.add_argument("dest", help="the paired set to write or continue")
    p.set_defaults(func=_cmd_pairs)

    p = d.add_parser("export", help="a distill workdir's translator -> a translator directory")
    p.add_argument("workdir", help="training workdir (latest checkpoint) or WORKDIR/checkpoints/N")
    p.add_argument("dest", help="translator directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a directory toonjax wrote")
    p.set_defaults(func=_cmd_export)
