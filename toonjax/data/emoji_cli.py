"""`toonjax dataset emoji SRC DEST ...` (parser and call; the work is `toonjax.data.emoji`).

    npm pack emoji-datasource-google        # toonjax downloads nothing: npm does
    toonjax dataset emoji emoji-datasource-google-16.0.0.tgz data/emoji64 --faces smileys,people
    toonjax dataset emoji openmoji-17.0.0.tgz data/openmoji128 --resolution 128

Registered by `toonjax.cli` with `emoji_cli.add_parsers(ds)` on the `dataset` sub-commands.
"""

from __future__ import annotations

import argparse


def _cmd_dataset_emoji(args: argparse.Namespace) -> None:
    from toonjax.data import emoji

    emoji.make_emoji_dataset(
        args.src,
        args.dest,
        style=args.style,
        faces=args.faces,
        resolution=args.resolution,
        background=args.background,
        skin_tones=args.skin_tones,
        upscale=args.upscale,
        overwrite=args.overwrite,
        verbose=True,
    )


def add_parsers(ds) -> None:
    """Adds `emoji` to the `dataset` sub-command parsers `ds`."""
    p = ds.add_parser(
        "emoji",
        help="pack the emoji faces of an npm emoji package (Noto, Twemoji, OpenMoji)",
        description="Pack the faces of a published emoji set, chosen from the package's own "
        "metadata, composited on a background. Download the package first with npm, e.g. "
        "`npm pack emoji-datasource-google` (Noto, Apache-2.0), `npm pack "
        "emoji-datasource-twitter` (Twemoji, CC-BY-4.0) or `npm pack openmoji` (CC-BY-SA-4.0, "
        'SVG: needs pip install "toonjax[emoji]"). DEST/NOTICE carries the licence.',
    )
    p.add_argument("src", help="the .tgz `npm pack` wrote, or its unpacked folder")
    p.add_argument("dest", help="output dataset directory")
    p.add_argument(
        "--style",
        choices=["google", "twitter", "openmoji"],
        default=None,
        help="the emoji set (default: the package's); must match SRC",
    )
    p.add_argument(
        "--faces",
        default="smileys,people",
        help="comma-separated groups: smileys (Smileys & Emotion face-*), people (person), "
        "roles (person-role), fantasy (person-fantasy), or any subcategory name "
        "(default smileys,people)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=64,
        help="output side, a power of two (default 64; the google/twitter bitmaps are 64x64)",
    )
    p.add_argument(
        "--background",
        default="white",
        help="colour the transparent pictures are composited on: white, black, grey, R,G,B "
        "or #RRGGBB (default white)",
    )
    p.add_argument(
        "--skin-tones",
        choices=["all", "none"],
        default="all",
        help="all: include the skin-tone variants (default); none: the default ones only",
    )
    p.add_argument(
        "--upscale",
        action="store_true",
        help="allow bitmaps smaller than --resolution to be enlarged (soft pictures)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.set_defaults(func=_cmd_dataset_emoji)
