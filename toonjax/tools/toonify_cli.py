"""Argument parsing of the toonify-tool sub-commands of `toonjax` (mix, interpolate, blend, sefa,
sefa-apply, toonify); each calls one library function of toonjax.tools.{mixing,blend,sefa,
toonify}.

    toonjax mix --network NET --rows 1,2,3 --cols 4,5,6 --styles 0-6 --outdir OUT
    toonjax interpolate --network NET --seeds 0,1,2 --frames 60 --space z|w --outdir OUT
    toonjax blend --base A --toon B --swap-res 32 [--width 0] [--mapping toon|base] OUT
    toonjax blend --base A --toon B --sweep 4,8,16,32 --seeds 0-3 OUT      (OUT/sweep.png)
    toonjax sefa --network NET [--layers all|0-1|2-5|6-] [--normalize] [--top 10] OUT.npz
    toonjax sefa-apply --network NET --directions D.npz --index 0 --degrees -5,0,5 --outdir OUT
    toonjax toonify --translator NET photo.jpg OUT [--paste-back] [--align ...]   (one pass)
    toonjax toonify --base FFHQ --toon BLENDED photo.jpg OUT [--align auto|ffhq68|ffhq5|haar|none]
        [--no-align] [--preset fast] [--steps N] [--space w+|w] [--lpips F] [--vgg16 F]
        (toonjax.tools.toonify; --align: toonjax.faces.align)
"""

from __future__ import annotations

import argparse

NET_HELP = "directory from `convert`, or a .pkl/.pt"


def _seed_list(text: str, flag: str) -> list[int]:
    from toonjax.tools import generate

    try:
        return generate.parse_seeds(text)
    except generate.GenerateError as e:
        raise generate.GenerateError(str(e).replace("--seeds", flag)) from None


def _cmd_mix(args: argparse.Namespace) -> None:
    from toonjax.tools import mixing

    rows, cols = _seed_list(args.rows, "--rows"), _seed_list(args.cols, "--cols")
    bundle = mixing.as_bundle(args.network)
    n = mixing.num_ws(bundle)
    if args.styles is None:  # the reference's 0-6, within what the network has
        styles = list(range(min(7, n)))
    else:
        styles = mixing.parse_indices(args.styles, n, "--styles", allow_none=True)
    res = mixing.write_style_mixing(
        bundle,
        rows,
        cols,
        styles,
        args.outdir,
        truncation_psi=args.trunc,
        noise_mode=args.noise_mode,
        class_idx=args.class_idx,
    )
    n = len(res.row_seeds) * len(res.col_seeds)
    print(f"wrote {n} mixed images, the row/col images and grid.png to {args.outdir}")


def _cmd_interpolate(args: argparse.Namespace) -> None:
    from toonjax.tools import mixing

    video, strip, n = mixing.write_interpolation(
        args.network,
        _seed_list(args.seeds, "--seeds"),
        args.outdir,
        frames=args.frames,
        space=args.space,
        fps=args.fps,
        strip=args.strip,
        truncation_psi=args.trunc,
        noise_mode=args.noise_mode,
        class_idx=args.class_idx,
        loop=args.loop,
    )
    print(f"wrote {video} ({n} frames) and {strip}")


def _cmd_blend(args: argparse.Namespace) -> None:
    from toonjax.tools import blend, generate

    if (args.swap_res is None) == (args.sweep is None):
        raise generate.GenerateError("blend: give either --swap-res R or --sweep R1,R2,...")
    if args.sweep is not None:
        try:
            res = [int(r) for r in args.sweep.replace(" ", "").split(",") if r]
        except ValueError:
            raise generate.GenerateError(f"--sweep {args.sweep!r}: give e.g. 4,8,16,32") from None
        for r in res:
            blend.check_swap_res(r)
        path = blend.write_blend_sweep(
            args.base,
            args.toon,
            args.out,
            res,
            _seed_list(args.seeds, "--seeds"),
            width=args.width,
            mapping=args.mapping,
            truncation_psi=args.trunc,
            noise_mode=args.noise_mode,
            class_idx=args.class_idx,
        )
        print(f"wrote {path} (rows: swap-res {', '.join(map(str, res))}; cols: seeds)")
        return
    try:
        dest = blend.write_blend(
            args.base, args.toon, args.out, args.swap_res, args.width, args.mapping, args.overwrite
        )
    except blend.OutputExistsError as e:  # the library names its keyword; say the flag here
        raise generate.GenerateError(
            f"{e.path}: already exists; pass --overwrite to replace it (a toonjax network "
            "directory: only those are replaced)"
        ) from None
    print(
        f"wrote {dest}: blocks below {args.swap_res}x{args.swap_res} from --toon, the rest from "
        f"--base, mapping and w_avg from --{args.mapping}"
    )


def _cmd_sefa(args: argparse.Namespace) -> None:
    from toonjax.tools import sefa

    d = sefa.factorize(
        args.network, args.layers, normalize=args.normalize, torgb=args.torgb, top=args.top
    )
    path = d.save(args.out)
    vals = ", ".join(f"{v:.4g}" for v in d.eigenvalues[:5])
    print(f"wrote {len(d.directions)} directions on ws {d.layers} to {path} (eigenvalues {vals})")


def _cmd_sefa_apply(args: argparse.Namespace) -> None:
    from toonjax.tools import sefa

    path = sefa.write_sefa_grid(
        args.network,
        args.directions,
        args.index,
        sefa.parse_degrees(args.degrees),
        _seed_list(args.seeds, "--seeds"),
        args.outdir,
        truncation_psi=args.trunc,
        noise_mode=args.noise_mode,
        class_idx=args.class_idx,
    )
    print(f"wrote {path} (rows: seeds, cols: degrees)")


def _cmd_toonify(args: argparse.Namespace) -> None:
    from toonjax.tools import toonify

    method = args.method or ("translator" if args.translator else "project")
    if method == "translator":
        if not args.translator:
            raise toonify.ToonifyError("--method translator needs --translator NET")
        if args.base or args.toon:
            raise toonify.ToonifyError(
                "--base/--toon belong to --method project; the translator path takes only "
                "--translator (drop them, or add --method project)"
            )
        for flag, given in (("--steps", args.steps is not None), ("--space", args.space)):
            if given:
                raise toonify.ToonifyError(f"{flag} belongs to --method project")
        toonify.toonify_translator(
            args.translator,
            args.photo,
            args.out,
            align_method=args.align,
            margin=args.margin,
            size=args.size,
            paste_back=args.paste_back,
            feather=args.feather,
            step=args.step,
        )
        return
    if not (args.base and args.toon):
        raise toonify.ToonifyError(
            "toonify needs --translator NET (one forward pass) or --base FFHQ --toon BLENDED "
            "(--method project)"
        )
    if args.translator:
        raise toonify.ToonifyError("--translator belongs to --method translator")
    if args.paste_back or args.size is not None:
        raise toonify.ToonifyError("--paste-back and --size belong to --method translator")
    toonify.toonify(
        args.base,
        args.toon,
        args.photo,
        args.out,
        align_method=args.align,
        margin=args.margin,
        preset=args.preset,
        steps=args.steps,
        space=args.space or "w+",
        lpips=args.lpips,
        vgg16=args.vgg16,
        seed=args.seed,
        progress=args.progress,
    )


def _add_gen_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi (default 1)")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="class (cond. nets)")


def add_parsers(sub) -> None:
    """Adds mix, interpolate, blend, sefa, sefa-apply and toonify to the `toonjax` sub-parsers."""
    p = sub.add_parser("mix", help="style-mixing grid (NVlabs style_mixing.py layout)")
    p.add_argument("--network", required=True, help=NET_HELP)
    p.add_argument("--rows", required=True, help="row seeds, e.g. 1,2,3 or 0-5")
    p.add_argument("--cols", required=True, help="col seeds (their ws replace the rows')")
    p.add_argument(
        "--styles", default=None, help="ws indices taken from the cols: 0-6 (default), all, none"
    )
    _add_gen_options(p)
    p.add_argument("--outdir", required=True, help="writes ROW-COL.png per cell and grid.png")
    p.set_defaults(func=_cmd_mix)

    p = sub.add_parser("interpolate", help="latent interpolation video (mp4) and PNG strip")
    p.add_argument("--network", required=True, help=NET_HELP)
    p.add_argument("--seeds", required=True, help="seeds visited in order, e.g. 0,1,2")
    p.add_argument("--frames", type=int, default=60, help="frames per transition (default 60)")
    p.add_argument("--space", choices=["z", "w"], default="z", help="slerp in z or lerp in w")
    p.add_argument("--loop", action="store_true", help="return to the first seed")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--strip", type=int, default=8, help="frames in strip.png (default 8)")
    _add_gen_options(p)
    p.add_argument("--outdir", required=True, help="writes interpolation.mp4 and strip.png")
    p.set_defaults(func=_cmd_interpolate)

    p = sub.add_parser(
        "blend", help="network blending: low resolutions from --toon, the rest from --base"
    )
    p.add_argument("--base", required=True, help="high-resolution model (e.g. the FFHQ one)")
    p.add_argument("--toon", required=True, help="low-resolution model (e.g. its cartoon tune)")
    p.add_argument("--swap-res", type=int, default=None, help="first resolution from --base")
    p.add_argument("--sweep", default=None, help="swap resolutions for a grid, e.g. 4,8,16,32")
    p.add_argument("--seeds", default="0-3", help="seeds of the --sweep grid (default 0-3)")
    p.add_argument("--width", type=float, default=0.0, help="0: hard; >0: logistic, in octaves")
    p.add_argument("--mapping", choices=["toon", "base"], default="toon", help="mapping + w_avg")
    _add_gen_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("out", help="network directory (with --sweep: a folder for sweep.png)")
    p.set_defaults(func=_cmd_blend)

    p = sub.add_parser("sefa", help="SeFa latent directions (eigenvectors of A^T A)")
    p.add_argument("--network", required=True, help=NET_HELP)
    p.add_argument("--layers", default="all", help="ws indices: all, 0-1, 2-5, 6- ...")
    p.add_argument("--normalize", action="store_true", help="unit-norm rows of A (genforce)")
    p.add_argument("--torgb", action="store_true", help="also stack the ToRGB affines")
    p.add_argument("--top", type=int, default=None, help="keep the K largest (default all)")
    p.add_argument("out", help="output .npz")
    p.set_defaults(func=_cmd_sefa)

    p = sub.add_parser("sefa-apply", help="grid of ws moved along a SeFa direction")
    p.add_argument("--network", required=True, help=NET_HELP)
    p.add_argument("--directions", required=True, help=".npz from `toonjax sefa`")
    p.add_argument("--index", type=int, default=0, help="direction (0 = largest eigenvalue)")
    p.add_argument("--degrees", default="-5,-2.5,0,2.5,5", help="steps along it (columns)")
    p.add_argument("--seeds", default="0-3", help="rows (default 0-3)")
    _add_gen_options(p)
    p.add_argument("--outdir", required=True, help="writes sefa_<index>.png")
    p.set_defaults(func=_cmd_sefa_apply)

    p = sub.add_parser(
        "toonify",
        help="photo -> face crop -> the distilled --translator (one forward pass), or "
        "projection into --base rendered with --toon (--method project)",
    )
    p.add_argument(
        "--translator",
        default=None,
        help="one forward pass: a distill training workdir (latest checkpoint, or --step) or a "
        "directory from `toonjax distill export`",
    )
    p.add_argument(
        "--method",
        choices=["translator", "project"],
        default=None,
        help="translator (default with --translator) or project (default with --base/--toon)",
    )
    p.add_argument("--base", default=None, help="project: photo model the face is projected into")
    p.add_argument("--toon", default=None, help="project: same architecture (a blend) renders it")
    p.add_argument("photo", help="image file with a face")
    p.add_argument(
        "out",
        help="folder: aligned, toon, side_by_side .png and align.npz (+ pasted.png) with "
        "--translator; aligned, projected, toon, side_by_side .png, latents.npz with project",
    )
    p.add_argument(
        "--paste-back",
        action="store_true",
        help="translator: also write pasted.png, the cartoon face warped back into the photo",
    )
    p.add_argument(
        "--feather", type=float, default=0.1, help="--paste-back: soft edge (x crop side, 0.1)"
    )
    p.add_argument(
        "--size", type=int, default=None, help="translator: crop side (default: its training one)"
    )
    p.add_argument("--step", type=int, default=None, help="translator: a workdir's checkpoint")
    p.add_argument(
        "--align",
        choices=["auto", "ffhq68", "ffhq5", "haar", "none"],
        default="auto",
        help="face crop: FFHQ's from dlib's 68 (ffhq68) or 5 (ffhq5) landmarks (the `align` "
        "extra), the Haar cascade's box (haar), the centre square (none); auto (default): "
        "ffhq68 if installed and a face is found, else haar",
    )
    p.add_argument(
        "--no-align", dest="align", action="store_const", const="none", help="= --align none"
    )
    p.add_argument(
        "--margin", type=float, default=0.4, help="--align haar: box growth per side (x its side)"
    )
    p.add_argument("--preset", choices=["fast", "reference"], default="fast")
    p.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    p.add_argument("--space", choices=["w+", "w"], default=None, help="project: w+ (default) or w")
    p.add_argument("--seed", type=int, default=0, help="projector noise seed")
    p.add_argument(
        "--lpips", default=None, help="LPIPS weights (default $TOONJAX_FEATURES/lpips_vgg.npz)"
    )
    p.add_argument(
        "--vgg16", default=None, help="VGG16 weights (default $TOONJAX_FEATURES/vgg16.npz)"
    )
    p.add_argument("--progress", action="store_true", help="projector distance per chunk")
    p.set_defaults(func=_cmd_toonify)


def join_negative_values(argv: list[str]) -> list[str]:
    """`--degrees -5,0,5` -> `--degrees=-5,0,5` (argparse takes '-5,0,5' for an option)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--degrees" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"--degrees={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out
