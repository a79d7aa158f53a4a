"""The `toonjax` command: parses arguments and calls one library function per sub-command.

    toonjax train --config configs/dcgan.py:toyfaces --workdir runs/dcgan [--config.x=v]
        (--config dcgan.py:toyfaces from any directory: toonjax.tools.config_path)
    toonjax dataset toyfaces DEST [--n 5000] [--resolution 64] [--seed 0]
    toonjax dataset pack SRC DEST --resolution 256 [--transform center-crop] [--labels folders]
    toonjax dataset pack-unpaired PHOTOS CARTOONS DEST --resolution 256 [--val-photos 16]
    toonjax dataset toyphotos-cartoons DEST [--n 2000] [--resolution 64]   (CartoonGAN data)
    toonjax dataset emoji SRC DEST [--style google|twitter|openmoji] [--faces smileys,people]
        [--resolution 64]   (faces of an npm emoji package; toonjax.data.emoji)
    toonjax faces extract SRC OUT [--detector auto|animeface|yolo:FILE.onnx|cascade:FILE.xml]
        [--conf 0.7] ...
    toonjax demo --network NET [--toon T] [--translator T] [--cartoonizer C]   (Gradio page)
    toonjax convert SRC DEST            (NVlabs .pkl, TF .pkl or rosinality .pt -> DEST/)
    toonjax generate --network NET --seeds 0-7 [--trunc 0.7] [--class I] --outdir OUT
        (NET: a converted network, .pkl/.pt, or a StyleGAN2 or DCGAN training workdir)
    toonjax export NET --to rosinality|nvlabs-state-dict OUT.pt
    toonjax mix | interpolate | blend | sefa | sefa-apply | toonify   (toonify tools; see
        toonjax.tools.toonify_cli)
    toonjax convert-features inception pt_inception-2015-12-05-6726825d.pth OUT.npz
    toonjax convert-features vgg16|lpips vgg16-397923af.pth|vgg.pth OUT.npz   (projector loss)
    toonjax convert-features vgg19|resnet101 vgg19-dcbb9e9d.pth|resnet101-63fe2227.pth OUT.npz
        (content losses)
    toonjax project --network NET photo.png [--space w|w+] [--preset fast|reference]
        [--steps 1000] --outdir OUT          (--target photo.png: the same)
    toonjax metrics --network NET --data DATASET --metrics fid50k_full,kid50k_full --features F
    toonjax fid PATH_A PATH_B [--features F] [--no-cache]   (folders, zips or packed datasets)
    toonjax --version
    toonjax convert-cartoongan Hayao_net_G_float.pth DEST   (CartoonGAN authors' generator)
    toonjax cartoonize --network NET INPUT OUTPUT [--compare] [--max-size N] [--batch B]
    toonjax distill pairs --base BASE --toon TOON --n 20000 DEST | distill export WORKDIR DEST

Errors a user can fix (`toonjax.errors.ToonjaxError`) are printed as one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from toonjax.errors import ToonjaxError
from toonjax.tools import toonify_cli


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


def _cmd_dataset_pack_unpaired(args: argparse.Namespace) -> None:
    from toonjax.data import edges, unpaired

    low, _, high = args.canny.partition(",")
    try:
        params = edges.SmoothingParams(int(low), int(high or low), args.dilate, args.blur)
        params.check()
    except ValueError as e:
        raise unpaired.DatasetError(f"--canny/--dilate/--blur: {e}") from None
    unpaired.pack_unpaired(
        args.photos,
        args.cartoons,
        args.dest,
        resolution=args.resolution,
        transform=args.transform,
        resize_filter=args.resize_filter,
        val_photos=args.val_photos,
        params=params,
        overwrite=args.overwrite,
        verbose=True,
    )


def _cmd_dataset_toy_unpaired(args: argparse.Namespace) -> None:
    from toonjax.data import unpaired

    meta = unpaired.write_toy_unpaired(
        args.dest, n=args.n, resolution=args.resolution, n_val=args.val, overwrite=args.overwrite
    )
    print(
        f"wrote {meta.photos} toy photos (+{meta.val} held out) and {meta.cartoons} toy cartoons "
        f"(+ edge-smoothed) at {meta.resolution}x{meta.resolution} to {args.dest}"
    )


def _add_unpaired_parsers(ds) -> None:
    """`dataset pack-unpaired` and `dataset toyphotos-cartoons` (CartoonGAN's data)."""
    p = ds.add_parser(
        "pack-unpaired",
        help="pack a photo folder and a cartoon folder (+ edge-smoothed cartoons) for CartoonGAN",
    )
    p.add_argument("photos", help="folder or zip of photos")
    p.add_argument("cartoons", help="folder or zip of cartoons")
    p.add_argument("dest", help="output dataset directory (photos/, cartoons/, smooth/, val/)")
    p.add_argument("--resolution", type=int, required=True, help="output side, power of two")
    p.add_argument(
        "--transform",
        choices=["none", "center-crop", "center-crop-wide"],
        default="none",
        help="none: images must already be square; center-crop: largest centred square",
    )
    p.add_argument("--resize-filter", choices=["lanczos", "box", "area"], default="lanczos")
    p.add_argument(
        "--val-photos", type=int, default=0, help="hold out the first N photos for validation"
    )
    p.add_argument("--canny", default="100,200", help="Canny thresholds LOW,HIGH (100,200)")
    p.add_argument("--dilate", type=int, default=5, help="edge dilation kernel side (5)")
    p.add_argument("--blur", choices=["gaussian", "mean"], default="gaussian")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.set_defaults(func=_cmd_dataset_pack_unpaired)

    p = ds.add_parser(
        "toyphotos-cartoons", help="write the built-in unpaired toy photos and toy cartoons"
    )
    p.add_argument("dest", help="output dataset directory")
    p.add_argument("--n", type=int, default=2000, help="photos, and as many cartoons (2000)")
    p.add_argument("--val", type=int, default=32, help="held-out photos (32)")
    p.add_argument("--resolution", type=int, default=64, help="power of two, 16-256")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.set_defaults(func=_cmd_dataset_toy_unpaired)


def _cmd_faces_extract(args: argparse.Namespace) -> None:
    from toonjax.faces import extract

    classes = None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.replace(",", " ").split()]
        except ValueError as e:
            raise extract.DatasetError(
                f"--classes {args.classes!r}: give class ids like 0,2"
            ) from e
    opts = extract.Options(
        detector=args.detector,
        conf=args.conf,
        nms=args.nms,
        classes=classes,
        yolo_layout=args.yolo_layout,
        imgsz=args.imgsz,
        min_neighbors=args.min_neighbors,
        margin=args.margin,
        size=args.size,
        min_face=args.min_face,
        border=args.border,
        panels="none" if args.no_panels else args.panels,
        min_panel=args.min_panel,
        gutter_tol=args.gutter_tol,
        blur_threshold=args.blur_threshold,
        hash=args.hash,
        dedup_threshold=args.dedup_threshold,
    )
    extract.extract(args.src, args.out, opts)


def _add_faces_parser(sub) -> None:
    faces = sub.add_parser("faces", help="extract face crops from comic pages").add_subparsers(
        dest="faces_command", required=True
    )
    p = faces.add_parser(
        "extract",
        help="panels -> face detection -> square crops, filters, review sheets, keep.txt",
    )
    p.add_argument("src", help="folder or zip of page images (tall webtoon strips welcome)")
    p.add_argument("out", help="output folder (re-run to resume); pack it with `dataset pack`")
    p.add_argument(
        "--detector",
        default="auto",
        help="auto (= animeface, the [anime] extra), animeface, cascade:FILE.xml or a bundled "
        "cascade name (cascade:haarcascade_frontalface_default.xml), yolo:FILE.onnx",
    )
    p.add_argument(
        "--conf",
        type=float,
        default=0.7,
        help="YOLO score (obj x cls) or animeface likelihood threshold",
    )
    p.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--classes", default=None, help="YOLO class ids to keep, e.g. 0,2")
    p.add_argument("--yolo-layout", choices=["auto", "v5", "v8"], default="auto")
    p.add_argument("--imgsz", type=int, default=None, help="YOLO input side (default: model)")
    p.add_argument("--min-neighbors", type=int, default=5, help="cascade minNeighbors")
    p.add_argument("--margin", type=float, default=0.25, help="box growth per side (x max side)")
    p.add_argument("--size", type=int, default=256, help="output crop side")
    p.add_argument("--min-face", type=int, default=48, help="drop crops smaller than this (px)")
    p.add_argument(
        "--border",
        choices=["replicate", "reflect", "constant", "clip"],
        default="replicate",
        help="crops leaving the page: pad (replicate|reflect|constant) or clip",
    )
    p.add_argument("--panels", choices=["auto", "rows", "contours", "none"], default="auto")
    p.add_argument("--no-panels", action="store_true", help="detect on whole pages")
    p.add_argument("--min-panel", type=int, default=64, help="drop smaller panels (px)")
    p.add_argument("--gutter-tol", type=int, default=8, help="max neighbour diff in a gutter row")
    p.add_argument("--blur-threshold", type=float, default=50.0, help="min Laplacian variance")
    p.add_argument("--hash", choices=["phash", "dhash"], default="phash")
    p.add_argument(
        "--dedup-threshold", type=int, default=8, help="max Hamming distance (-1: exact only)"
    )
    p.set_defaults(func=_cmd_faces_extract)


def _cmd_convert(args: argparse.Namespace) -> None:
    from toonjax.convert import cartoongan, network
    from toonjax.errors import ConvertError

    try:
        bundle = network.convert(args.src)
    except ConvertError:
        if not cartoongan.is_authors_file(args.src):
            raise
        # the CartoonGAN authors' <Style>_net_G_float.pth: a translator directory
        _cmd_convert_cartoongan(args)
        return
    dest = network.save_network(args.dest, bundle, overwrite=args.overwrite)
    nets = ", ".join(k for k in network.NET_KEYS if k in bundle.nets)
    print(f"converted {args.src} ({bundle.format}: {nets}) to {dest}")


def _cmd_generate(args: argparse.Namespace) -> None:
    from toonjax.tools import generate

    seeds = generate.parse_seeds(args.seeds)
    paths = generate.write_images(
        args.network,
        seeds,
        args.outdir,
        truncation_psi=args.trunc,
        truncation_cutoff=args.trunc_cutoff,
        class_idx=args.class_idx,
        noise_mode=args.noise_mode,
    )
    print(f"wrote {len(paths)} images and grid.png to {args.outdir}")


def _cmd_export(args: argparse.Namespace) -> None:
    from toonjax.convert import export

    path, notes = export.export_network(args.network, args.to, args.out)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {path}")


def _add_network_parsers(sub) -> None:
    p = sub.add_parser("convert", help="convert a StyleGAN2 .pkl/.pt into a toonjax network dir")
    p.add_argument("src", help="stylegan2-ada-pytorch .pkl, TF StyleGAN2 .pkl or rosinality .pt")
    p.add_argument("dest", help="output directory (orbax checkpoint + network.json)")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("generate", help="images from a network (NVlabs generate.py seeds)")
    p.add_argument(
        "--network",
        required=True,
        help="directory from `convert`, a .pkl/.pt, or a StyleGAN2 or DCGAN training workdir",
    )
    p.add_argument("--seeds", required=True, help="e.g. 0-7 or 1,5,9-12")
    p.add_argument("--trunc", type=float, default=None, help="truncation psi (default 1)")
    p.add_argument("--trunc-cutoff", type=int, default=None, help="truncate only the first K ws")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="class (cond. nets)")
    p.add_argument(
        "--noise-mode", choices=["const", "random", "none"], default=None, help="default const"
    )
    p.add_argument("--outdir", required=True, help="writes seedNNNN.png per seed and grid.png")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("export", help="write a network as a plain PyTorch state dict (.pt)")
    p.add_argument("network", help="directory from `convert`, or a .pkl/.pt")
    p.add_argument("--to", required=True, choices=["rosinality", "nvlabs-state-dict"])
    p.add_argument(
        "out",
        help="output .pt file, or a folder: network-snapshot-KKKKKK.pt there (kimg of a run)",
    )
    p.set_defaults(func=_cmd_export)


def _cmd_convert_features(args: argparse.Namespace) -> None:
    if args.kind in ("vgg16", "vgg19", "lpips"):
        from toonjax.convert import vgg

        out = vgg.save_weights(args.out, args.kind, vgg.convert_weights(args.kind, args.src))
        print(f"converted {args.src} ({args.kind}) to {out}")
        return
    if args.kind == "resnet101":
        from toonjax.convert import resnet, vgg

        out = vgg.save_weights(args.out, args.kind, resnet.convert_weights(args.src))
        print(f"converted {args.src} ({args.kind}) to {out}")
        return
    from toonjax.metrics import inception

    out = inception.convert_features(args.kind, args.src, args.out)
    print(f"converted {args.src} to {out}")


def _cmd_project(args: argparse.Namespace) -> None:
    from toonjax.tools import project

    if args.targets and args.target:
        raise project.ProjectError(
            "targets given both as arguments and with --target; give them one way "
            f"(e.g. `toonjax project --network NET {' '.join(args.targets + args.target)} "
            "--outdir OUT`)"
        )
    targets = args.targets or args.target
    if not targets:
        raise project.ProjectError(
            "no target image: give it as `toonjax project --network NET photo.png --outdir OUT` "
            "(or with --target photo.png)"
        )
    project.project_files(
        args.network,
        targets,
        args.outdir,
        space=args.space,
        preset=args.preset,
        num_steps=args.steps,
        lpips_path=args.lpips,
        vgg16_path=args.vgg16,
        seed=args.seed,
        class_idx=args.class_idx,
        video=args.save_video,
    )


def _add_project_parser(sub) -> None:
    p = sub.add_parser("project", help="find the w / w+ (and noise) of target images")
    p.add_argument("--network", required=True, help="directory from `convert`, or a .pkl/.pt")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="image file(s), one batch")
    p.add_argument(
        "--target", nargs="+", default=[], help="the same as the TARGET arguments (older form)"
    )
    p.add_argument("--outdir", required=True, help="NAME_projected_w.npz, _proj/_side.png ...")
    p.add_argument("--space", choices=["w", "w+"], default="w")
    p.add_argument(
        "--preset",
        choices=["reference", "fast"],
        default="reference",
        help="reference: NVlabs projector.py (1000 steps); fast: 250 steps, early stop",
    )
    p.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    p.add_argument("--seed", type=int, default=303, help="target i uses seed + i")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="class (cond. nets)")
    p.add_argument(
        "--lpips", default=None, help="LPIPS weights (default $TOONJAX_FEATURES/lpips_vgg.npz)"
    )
    p.add_argument(
        "--vgg16", default=None, help="VGG16 weights (default $TOONJAX_FEATURES/vgg16.npz)"
    )
    p.add_argument("--save-video", action="store_true", help="also NAME_proj.mp4")
    p.set_defaults(func=_cmd_project)


def _cmd_metrics(args: argparse.Namespace) -> None:
    from toonjax.metrics import metrics

    records = metrics.calc_metrics(
        args.network,
        args.data,
        args.metrics,
        args.features,
        num_gen=args.num_gen,
        truncation_psi=args.trunc,
        classes=args.classes,
        mirror=args.mirror,
        batch_size=args.batch,
        seed=args.seed,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
    )
    for record in records:
        metrics.print_record(record)
    if records:
        print(f"appended to {', '.join(sorted({r['jsonl'] for r in records}))}")


def _cmd_fid(args: argparse.Namespace) -> None:
    from toonjax.metrics import metrics

    t0 = time.perf_counter()
    r = metrics.compare(
        args.path_a,
        args.path_b,
        args.features,
        batch_size=args.batch,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        verbose=True,  # progress on stderr: the first batch compiles for tens of seconds
    )
    print(f"FID {r['fid']:.6g}  KID {r['kid']:.6g}  ({r['n_a']} vs {r['n_b']} images)")
    print(f"  in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def _add_metrics_parsers(sub) -> None:
    p = sub.add_parser(
        "convert-features",
        help="convert feature-network weights (FID Inception; VGG16 / LPIPS for `project`; "
        "VGG19 / ResNet-101 for content losses)",
    )
    p.add_argument(
        "kind",
        choices=["inception", "vgg16", "vgg19", "resnet101", "lpips"],
        help="which network",
    )
    p.add_argument(
        "src",
        help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth, torchvision's "
        "vgg16-397923af.pth, vgg19-dcbb9e9d.pth or resnet101-63fe2227.pth, or the lpips "
        "package's weights/v0.1/vgg.pth",
    )
    p.add_argument("out", help="output .npz")
    p.set_defaults(func=_cmd_convert_features)

    features_help = (
        "FID Inception weights: .npz from convert-features, or pytorch-fid's .pth (default "
        "$TOONJAX_FEATURES/inception.npz, ~/.cache/toonjax/features when unset)"
    )
    cache_help = (
        "statistics cache (default $TOONJAX_CACHE/metrics, ~/.cache/toonjax/metrics when unset)"
    )
    p = sub.add_parser("metrics", help="FID/KID of a network against a packed dataset")
    p.add_argument("--network", required=True, help="directory from `convert`, or a .pkl/.pt")
    p.add_argument("--data", required=True, help="packed dataset (the reals)")
    p.add_argument(
        "--metrics", default="fid50k_full", help="comma list, e.g. fid50k_full,kid50k_full"
    )
    p.add_argument("--num-gen", type=int, default=None, help="generated images (overrides names)")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi (default 1)")
    p.add_argument(
        "--classes",
        default="dataset",
        help="conditional nets: dataset (labels drawn from "
        "--data, as the reference), uniform, or a class index",
    )
    p.add_argument("--mirror", action="store_true", help="reals include x-flipped copies")
    p.add_argument("--features", default=None, help=features_help)
    p.add_argument("--batch", type=int, default=64, help="images per feature batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help=cache_help)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("fid", help="FID and KID between two image folders, zips or datasets")
    p.add_argument("path_a")
    p.add_argument("path_b")
    p.add_argument("--features", default=None, help=features_help)
    p.add_argument("--batch", type=int, default=64, help="images per feature batch")
    p.add_argument("--cache-dir", default=None, help=cache_help)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.set_defaults(func=_cmd_fid)


def _cmd_convert_cartoongan(args: argparse.Namespace) -> None:
    from toonjax.convert import cartoongan

    bundle = cartoongan.convert_authors(args.src)
    dest = cartoongan.save_translator(args.dest, bundle, overwrite=args.overwrite)
    print(f"converted {args.src} (CartoonGAN authors' generator) to {dest}")


def _cmd_cartoonize(args: argparse.Namespace) -> None:
    from toonjax.tools import cartoonize

    summary = cartoonize.cartoonize_files(
        args.network,
        args.input,
        args.output,
        compare=args.compare,
        load_size=args.load_size,
        max_size=args.max_size,
        batch=args.batch,
        size_mode=args.size_mode,
        overwrite=args.overwrite,
        precision=args.precision,
    )
    print(summary.line())


def _add_cartoonize_parser(sub) -> None:
    p = sub.add_parser(
        "convert-cartoongan",
        help="convert a CartoonGAN authors' <Style>_net_G_float.pth into a translator directory",
    )
    p.add_argument("src", help="Hayao|Hosoda|Paprika|Shinkai_net_G_float.pth (legacy or zip)")
    p.add_argument("dest", help="output directory (orbax checkpoint + network.json)")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if toonjax wrote it")
    p.set_defaults(func=_cmd_convert_cartoongan)

    p = sub.add_parser("cartoonize", help="photos -> cartoons with a CartoonGAN translator")
    p.add_argument(
        "--network",
        required=True,
        help="authors' <Style>_net_G_float.pth, a convert-cartoongan directory, or a "
        "CartoonGAN training workdir",
    )
    p.add_argument("input", help="an image, a folder of images or a zip")
    p.add_argument("output", help="output folder: NAME.png per image (NAME_compare.png too)")
    p.add_argument("--compare", action="store_true", help="also write input | cartoon sheets")
    p.add_argument(
        "--load-size",
        type=int,
        default=None,
        help="resize the long side to N as the authors' test script does (its default is "
        "450: --load-size 450 gives its picture exactly); default: no resizing",
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=None,
        help="shrink only images whose long side is over N to N (the same resize); "
        "default: no resizing",
    )
    p.add_argument("--batch", type=int, default=8, help="images per network call (default 8)")
    p.add_argument(
        "--size-mode",
        choices=["reference", "bucket"],
        default=None,
        help="reference: each size as PyTorch runs it (the authors' picture); bucket: pad by "
        "reflection to bucket sizes (fewer compilations). Default: the network's convention",
    )
    p.add_argument("--precision", choices=["highest", "default"], default="highest")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_cartoonize)


def version() -> str:
    """The installed distribution's version, else `toonjax.__version__` (a source checkout)."""
    from importlib import metadata

    try:
        return metadata.version("toonjax")
    except metadata.PackageNotFoundError:
        import toonjax

        return toonjax.__version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toonjax", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"toonjax {version()}")
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
    _add_unpaired_parsers(ds)
    from toonjax.data import emoji_cli  # toonjax dataset emoji (#17)

    emoji_cli.add_parsers(ds)
    _add_faces_parser(sub)
    _add_network_parsers(sub)
    toonify_cli.add_parsers(sub)
    from toonjax.tools import demo_cli  # toonjax demo (#15)

    demo_cli.add_parsers(sub)
    _add_metrics_parsers(sub)
    _add_project_parser(sub)
    _add_cartoonize_parser(sub)
    from toonjax.tools import distill_cli  # toonjax distill pairs | export (#14)

    distill_cli.add_parsers(sub)
    p = sub.add_parser(
        "nearest",
        help="memorisation check: generated faces next to their nearest training images",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_nearest)
    return parser


def _cmd_nearest(args: argparse.Namespace) -> None:
    from toonjax.tools import nearest

    nearest.main(args.rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "train":
            from toonjax.tools import config_path
            from toonjax.train import launcher

            # `--config dcgan.py:toyfaces` from any directory (config_path's search path)
            launcher.run(["toonjax train", *config_path.resolve_config_args(argv[1:])])
            return 0
        if argv and argv[0] == "nearest":  # its own parser (toonjax.tools.nearest.main)
            from toonjax.tools import nearest

            return nearest.main(argv[1:])
        args = _build_parser().parse_args(toonify_cli.join_negative_values(argv))
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
