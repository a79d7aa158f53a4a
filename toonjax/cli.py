"""The `toonjax` command: parses arguments and calls one library function per sub-command.

    toonjax train --config configs/dcgan.py:toyfaces --workdir runs/dcgan [--config.x=v]
    toonjax dataset toyfaces DEST [--n 5000] [--resolution 64] [--seed 0]
    toonjax dataset pack SRC DEST --resolution 256 [--transform center-crop] [--labels folders]

Errors a user can fix (`toonjax.errors.ToonjaxError`) are printed as one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from toonjax.errors import ToonjaxError


def _cmd_dataset_toyfaces(args: argparse.Namespace) -> None:
    from toonjax.data import toyfaces

    meta = toyfaces.write_toyfaces(
        args.dest, n=args.n, resolution=args.resolution, seed=args.seed, overwrite=args.overwrite
    )
    print(f"wrote {meta.count} toy faces at {meta.resolution}x{meta.resolution} to {args.dest}")


def _cmd_dataset_pack(args: argparse.Namespace) -> None:
    from toonjax.data import pack

    pack.pack(
        args.src,
        args.dest,
        resolution=args.resolution,
        transform=args.transform,
        max_images=args.max_images,
        labels=args.labels,
        resize_filter=args.resize_filter,
        overwrite=args.overwrite,
        verbose=True,
        keep_list=args.keep_list,
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toonjax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "train",
        help="train a GAN from an ml-collections config",
        add_help=False,  # flags are parsed by absl (--config, --workdir, --config.x=v)
    )

    ds = sub.add_parser("dataset", help="build packed datasets").add_subparsers(
        dest="dataset_command", required=True
    )
    p = ds.add_parser("toyfaces", help="write the built-in procedural cartoon-face dataset")
    p.add_argument("dest", help="output dataset directory")
    p.add_argument("--n", type=int, default=5000, help="number of faces (default 5000)")
    p.add_argument("--resolution", type=int, default=64, help="power of two, 16-256")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.set_defaults(func=_cmd_dataset_toyfaces)

    p = ds.add_parser("pack", help="pack an image folder or zip into records")
    p.add_argument("src", help="image folder, zip, or NVlabs dataset zip")
    p.add_argument("dest", help="output dataset directory")
    p.add_argument("--resolution", type=int, required=True, help="output side, power of two")
    p.add_argument(
        "--transform",
        choices=["none", "center-crop", "center-crop-wide"],
        default="none",
        help="none: images must already be square; center-crop: largest centred square; "
        "center-crop-wide: centred 2:1 band letterboxed on black",
    )
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument(
        "--labels",
        default="auto",
        help="auto (use SRC/dataset.json when present), none, dataset.json, or folders",
    )
    p.add_argument("--resize-filter", choices=["lanczos", "box", "area"], default="lanczos")
    p.add_argument(
        "--keep-list",
        default=None,
        help="text file of relative paths to pack (default: SRC/keep.txt when present)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.set_defaults(func=_cmd_dataset_pack)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "train":
            from toonjax.train import launcher

            launcher.run(["toonjax train", *argv[1:]])
            return 0
        args = _build_parser().parse_args(argv)
        args.func(args)
        return 0
    except ToonjaxError as e:
        print(f"toonjax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("toonjax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
