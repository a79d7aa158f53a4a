"""Argument parsing of `toonjax demo` (toonjax.tools.demo, issue #15).

toonjax demo --network NET [--toon TOON] [--translator T] [--cartoonizer C]
    [--directions dirs.npz] [--host 127.0.0.1] [--port 7860] [--share]
toonjax demo --random        (random-weight 64x64 networks: the page in seconds, no training)
"""

from __future__ import annotations

import argparse
import tempfile

# toonjax.tools.demo's defaults, repeated so that `toonjax --help` imports no jax (a test checks
# that they agree).
SEFA_TOP, CARTOON_SIDE, MAX_UPLOAD_MB, MAX_PIXELS = 5, 256, 10, 40_000_000


def _random_engine(args: argparse.Namespace, demo):
    """Random-weight networks at 64x64: base, a perturbed copy as the toon, a translator and a
    cartoonizer (the same random translator) written to a temporary directory."""
    base = demo.random_generator(demo.toy_G_kwargs(64), seed=0, source="random base (64x64)")
    toon = demo.perturbed(base)
    tmp = tempfile.mkdtemp(prefix="toonjax-demo-random-")
    tr = demo.write_random_translator(f"{tmp}/translator", 64)
    return demo.DemoEngine(
        base, toon, translator=tr, cartoonizer=tr, sefa_top=args.sefa_top,
        align=args.align if args.align != "auto" else "haar", cartoon_side=args.cartoon_side,
        max_pixels=args.max_pixels,
        names={"network": "random base (64x64, random weights)", "toon": "random toon"},
    )  # fmt: skip


def _cmd_demo(args: argparse.Namespace) -> None:
    from toonjax.tools import demo

    missing = demo.gradio_missing_message()
    if missing:
        raise demo.DemoError(missing)
    if args.random:
        engine = _random_engine(args, demo)
    else:
        if args.network is None:
            raise demo.DemoError(
                f"give --network (a generator); make the README's toy one with: "
                f"{demo.MAKE['network']}"
            )
        engine = demo.DemoEngine.load(
            args.network, toon=args.toon, translator=args.translator,
            cartoonizer=args.cartoonizer, directions=args.directions, sefa_top=args.sefa_top,
            lpips=args.lpips, align=args.align, project_steps=args.project_steps,
            cartoon_side=args.cartoon_side, max_pixels=args.max_pixels,
        )  # fmt: skip
    warm = engine.warmup()
    app = demo.build_app(
        engine,
        demo.AppOptions(concurrency_limit=args.concurrency, queue_size=args.queue_size),
    )
    url = f"http://{args.host}:{args.port}"
    print(demo.main_banner(engine, warm, url), flush=True)
    demo.launch(
        app, host=args.host, port=args.port, share=args.share, max_upload_mb=args.max_upload_mb
    )


def add_parsers(sub) -> None:
    """Adds `demo` to the `toonjax` sub-parsers."""
    p = sub.add_parser(
        "demo", help="web page: generate, SeFa edit, blend, toonify and cartoonize (Gradio)"
    )
    p.add_argument("--network", help="the generator (dir, .pkl, .pt or training workdir)")
    p.add_argument("--toon", help="its fine-tune or blend (same architecture): the Blend tab")
    p.add_argument("--translator", help="distilled translator (distill export / workdir)")
    p.add_argument("--cartoonizer", help="CartoonGAN network (.pth, translator dir, workdir)")
    p.add_argument("--directions", help="SeFa directions .npz (default: factorised at start)")
    p.add_argument("--sefa-top", type=int, default=SEFA_TOP, help="direction sliders shown")
    p.add_argument(
        "--align", default="auto", choices=["auto", "ffhq68", "ffhq5", "haar", "none"],
        help="face alignment of uploads for toonify (as toonjax toonify --align)",
    )  # fmt: skip
    p.add_argument("--lpips", help="LPIPS weights: projection fallback without --translator")
    p.add_argument("--project-steps", type=int, default=None, help="projection steps (fallback)")
    p.add_argument("--cartoon-side", type=int, default=CARTOON_SIDE, help="cartoonize long side")
    p.add_argument("--random", action="store_true", help="random-weight 64x64 networks (no files)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB)
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest upload, pixels")
    p.add_argument("--concurrency", type=int, default=1, help="model jobs at a time (all users)")
    p.add_argument("--queue-size", type=int, default=16, help="jobs waiting at most")
    p.set_defaults(func=_cmd_demo)
