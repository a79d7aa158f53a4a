"""The benchmark suite: every benchmark of `launch/benchmark.py` in one command, sized for the
backend it finds, within a time budget, with the PyTorch references where they can run.

    python launch/benchmark.py --suite [--reference torch] [--budget-min 10] --out bench.json

Each benchmark runs in its own process (`launch/benchmark.py ... --json_out FILE`), so its peak
host memory is its own and one failure does not end the suite. Items run cheapest first; one
whose estimated time no longer fits the budget is skipped and says so. The JSON holds the
machine (backend, device, versions) and one record per benchmark; a Markdown table with the
same numbers is written beside it (`bench.md`), ready for BENCHMARKS.md.

References: the DCGAN step and the CartoonGAN networks need only `torch`; the StyleGAN2 items
and the projector need a local extract of NVlabs/stylegan2-ada-pytorch (`--sg2ada_src`); the
FID Inception needs `pytorch-fid`. A reference that cannot run is named in the record with
the reason, and toonjax's own number is still measured.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("cpu", "gpu", "tpu")

# Dense peak FLOP/s of known devices (TFLOP/s): float32 without tensor cores, and the 16-bit
# tensor-core / MXU rate (bfloat16 or float16, no sparsity), from the vendors' data sheets.
PEAK_TFLOPS = {
    "H200": (67.0, 989.0),
    "H100": (67.0, 989.0),  # SXM; the PCIe card is lower (51, 756)
    "A100": (19.5, 312.0),
    "L4": (30.3, 121.0),
    "A10G": (31.2, 125.0),
    "V100": (15.7, 125.0),
    "T4": (8.1, 65.0),
    "RTX 4090": (82.6, 165.0),
    "RTX 3090": (35.6, 71.0),
    "TPU v4": (None, 275.0),
    "TPU v5 lite": (None, 197.0),
    "TPU v5e": (None, 197.0),
    "TPU v5p": (None, 459.0),
    "TPU v6 lite": (None, 918.0),
}


@dataclasses.dataclass(frozen=True)
class Item:
    """One benchmark: its `launch/benchmark.py` flags per backend and its estimated seconds
    (toonjax and its reference, compile included) on each backend."""

    name: str
    flags: tuple[str, ...]
    sizes: dict  # backend -> extra flags (batch, steps, sizes)
    est_s: dict  # backend -> estimated seconds with the reference
    reference: str | None = None  # "torch" | "sg2ada" | "pytorch_fid"


def _cfg(name: str) -> str:
    return str(REPO / "configs" / name)


def _toy(res: int) -> tuple[str, ...]:
    # a small built-in toy set written under the suite's scratch folder (see run_suite)
    return (f"--config.data.path={{scratch}}/toyfaces-{res}", "--config.data.toyfaces_n=256")


SUITE: tuple[Item, ...] = (
    Item("dcgan_train_32", ("--config", _cfg("dcgan.py:toyfaces"), "--what", "train_step",
                            *_toy(32)),
         {"cpu": ("--steps", "10"), "gpu": ("--steps", "50"), "tpu": ("--steps", "50")},
         {"cpu": 40, "gpu": 40, "tpu": 60}, "torch"),
    Item("dcgan_train_64", ("--config", _cfg("dcgan.py:toyfaces,res64"), "--what", "train_step",
                            *_toy(64)),
         {"cpu": ("--steps", "10"), "gpu": ("--steps", "50"), "tpu": ("--steps", "50")},
         {"cpu": 60, "gpu": 40, "tpu": 60}, "torch"),
    Item("cartoonize_256", ("--what", "cartoonize", "--sizes", "256", "--batches", "1"),
         {"cpu": ("--steps", "5"), "gpu": ("--steps", "20"), "tpu": ("--steps", "20")},
         {"cpu": 40, "gpu": 30, "tpu": 40}, "torch"),
    Item("toonify_translator_256", ("--what", "toonify", "--noproject"),
         {"cpu": ("--steps", "5", "--batch", "8"), "gpu": ("--steps", "20", "--batch", "32"),
          "tpu": ("--steps", "20", "--batch", "32")},
         {"cpu": 60, "gpu": 40, "tpu": 60}),
    Item("inception_fid", ("--what", "inception"),
         {"cpu": ("--batch", "32", "--steps", "3"), "gpu": ("--batch", "256", "--steps", "10"),
          "tpu": ("--batch", "256", "--steps", "10")},
         {"cpu": 70, "gpu": 40, "tpu": 60}, "pytorch_fid"),
    Item("g_forward_256", ("--config", _cfg("stylegan2_ada.py:paper256"), "--what", "g_forward"),
         {"cpu": ("--batch", "4", "--steps", "3"), "gpu": ("--batch", "32", "--steps", "20"),
          "tpu": ("--batch", "32", "--steps", "20")},
         {"cpu": 80, "gpu": 40, "tpu": 60}, "sg2ada"),
    Item("sg2ada_iter_64", ("--config", _cfg("stylegan2_ada.py:toyfaces"), "--what",
                            "train_step"),
         {"cpu": ("--batch", "32", "--steps", "3"), "gpu": ("--batch", "64", "--steps", "10"),
          "tpu": ("--batch", "64", "--steps", "10")},
         {"cpu": 150, "gpu": 60, "tpu": 90}, "sg2ada"),
    Item("cartoonize_720x1280", ("--what", "cartoonize", "--sizes", "720x1280", "--batches",
                                 "1"),
         {"cpu": ("--steps", "3"), "gpu": ("--steps", "20"), "tpu": ("--steps", "20")},
         {"cpu": 90, "gpu": 30, "tpu": 40}, "torch"),
    Item("cartoongan_train_256", ("--config", _cfg("cartoongan.py:paper"), "--what",
                                  "train_step"),
         # batch 4 on CPU: the recipe's 8 needs about 18 GB of host memory there
         {"cpu": ("--batch", "4", "--steps", "2"), "gpu": ("--steps", "10"),
          "tpu": ("--steps", "10")},
         {"cpu": 150, "gpu": 60, "tpu": 90}, "torch"),
    Item("g_forward_1024", ("--config", _cfg("stylegan2_ada.py:stylegan2"), "--what",
                            "g_forward"),
         {"cpu": ("--batch", "1", "--steps", "2"), "gpu": ("--batch", "8", "--steps", "10"),
          "tpu": ("--batch", "8", "--steps", "10")},
         {"cpu": 150, "gpu": 60, "tpu": 90}, "sg2ada"),
    Item("project_256", ("--config", _cfg("stylegan2_ada.py:paper256"), "--what", "project"),
         {"cpu": ("--batch", "1", "--steps", "3"), "gpu": ("--batch", "8", "--steps", "20"),
          "tpu": ("--batch", "8", "--steps", "20")},
         {"cpu": 200, "gpu": 60, "tpu": 90}, "sg2ada"),
    Item("sg2ada_iter_256", ("--config", _cfg("stylegan2_ada.py:paper256"), "--what",
                             "train_step"),
         {"cpu": ("--batch", "8", "--steps", "1"), "gpu": ("--batch", "32", "--steps", "5"),
          "tpu": ("--batch", "32", "--steps", "5")},
         {"cpu": 600, "gpu": 90, "tpu": 120}, "sg2ada"),
)  # fmt: skip


def backend() -> str:
    import jax

    b = jax.default_backend()
    return b if b in BACKENDS else "gpu" if b in ("cuda", "rocm") else b


def machine() -> dict:
    """Backend, device name and count, versions, CPU: what a figure needs to be read."""
    import jax

    devs = jax.local_devices()
    out = dict(
        backend=backend(),
        device=devs[0].device_kind,
        device_count=len(devs),
        cpu_count=os.cpu_count(),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        date=time.strftime("%Y-%m-%d %H:%M"),
    )
    for mod in ("jax", "jaxlib", "flax", "torch"):
        try:
            from importlib.metadata import version

            out[mod] = version(mod)
        except Exception:
            out[mod] = None
    return out


def peak_tflops(device: str, reduced_precision: bool) -> float | None:
    """The device's dense peak (TFLOP/s) for float32 or 16-bit work, when known."""
    for key, (f32, f16) in PEAK_TFLOPS.items():
        if key.lower() in device.lower():
            return f16 if reduced_precision or f32 is None else f32
    return None


def reference_available(kind: str | None, sg2ada_src: str | None) -> str | None:
    """None when the reference `kind` can run here, else why not."""
    if kind is None:
        return "no reference"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install torch==2.13.0 for the CPU build)"
    if kind == "sg2ada" and not (sg2ada_src and Path(sg2ada_src, "training").is_dir()):
        return "needs --sg2ada_src, a local extract of NVlabs/stylegan2-ada-pytorch"
    if kind == "pytorch_fid" and importlib.util.find_spec("pytorch_fid") is None:
        return "pytorch-fid is not installed"
    return None


def plan(items, backend_name: str, budget_s: float, use_reference: bool,
         sg2ada_src: str | None = None) -> list[dict]:  # fmt: skip
    """What runs: per item its flags, whether its reference runs (and why not) and its
    estimate; items are taken in order while their estimates fit the budget, the rest are
    marked skipped. (The run itself re-checks the budget with the times measured.)"""
    out, total = [], 0.0
    for it in items:
        why_not = reference_available(it.reference, sg2ada_src) if use_reference else (
            "not asked (--reference torch)" if it.reference else "no reference")  # fmt: skip
        flags = [*it.flags, *it.sizes.get(backend_name, it.sizes["cpu"])]
        if why_not is None:
            flags += ["--reference", "torch"]
            if it.reference == "sg2ada":
                flags += ["--sg2ada_src", str(sg2ada_src)]
        est = it.est_s.get(backend_name, it.est_s["cpu"])
        if why_not is not None:  # toonjax alone takes about half
            est = est / 2
        fits = total + est <= budget_s
        total += est if fits else 0
        out.append(dict(name=it.name, flags=flags, est_s=est, reference_why_not=why_not,
                        skipped=None if fits else "over the budget"))  # fmt: skip
    return out


def _record(name: str, raw: dict, mach: dict) -> dict:
    """One table row from a `--json_out` result (a benchmark.Result as a dict)."""
    rec = dict(name=name, **{k: raw.get(k) for k in (
        "what", "img_per_s", "step_ms", "batch_size", "compile_s", "peak_host_mb",
        "peak_device_mb", "flops", "note")})  # fmt: skip
    ref = raw.get("reference") or None
    rec["reference"] = ref.get("name") if ref else None
    rec["reference_img_per_s"] = ref.get("img_per_s") if ref else None
    rec["ratio"] = raw["img_per_s"] / ref["img_per_s"] if ref and ref.get("img_per_s") else None
    if raw.get("flops") and raw.get("step_ms"):
        tflops = raw["flops"] / (raw["step_ms"] / 1e3) / 1e12
        rec["tflops"] = tflops
        note = (raw.get("note") or "").lower()
        reduced = "float16" in note or "bfloat16" in note or "num_fp16_res=" in note and (
            "num_fp16_res=0" not in note)  # fmt: skip
        peak = peak_tflops(mach.get("device", ""), reduced)
        rec["peak_fraction"] = tflops / peak if peak else None
    return rec


def run_suite(
    out: str | Path,
    *,
    budget_min: float = 10.0,
    use_reference: bool = False,
    sg2ada_src: str | None = None,
    torch_threads: int | None = None,
    items=SUITE,
    runner: Callable[[list[str], float, Path], dict | list] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs the suite and writes `out` (JSON) and `out` with .md (the table). Returns the JSON.

    `runner(flags, timeout_s, scratch)` runs one benchmark and returns its `--json_out`
    content (default: a `launch/benchmark.py` process); tests pass their own."""
    out = Path(out)
    mach = machine()
    budget_s = 60.0 * budget_min
    rows = plan(items, mach["backend"], budget_s, use_reference, sg2ada_src)
    runner = runner or _subprocess_runner(torch_threads)
    t0 = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="toonjax-suite-") as scratch:
        for row in rows:
            left = budget_s - (time.perf_counter() - t0)
            if row["skipped"] is None and row["est_s"] > left:
                row["skipped"] = f"over the budget ({left:.0f} s left, about {row['est_s']:.0f} s)"
            if row["skipped"]:
                log(f"suite: {row['name']}: skipped, {row['skipped']}")
                records.append(dict(name=row["name"], skipped=row["skipped"]))
                continue
            flags = [f.replace("{scratch}", scratch) for f in row["flags"]]
            log(f"suite: {row['name']}: python launch/benchmark.py {' '.join(flags)}")
            t = time.perf_counter()
            try:
                raw = runner(flags, max(left, 60.0) + 120.0, Path(scratch))
            except Exception as e:  # one benchmark's failure is recorded, the suite goes on
                msg = str(e).strip().splitlines()
                records.append(dict(name=row["name"], error=msg[-1] if msg else repr(e)))
                log(f"suite: {row['name']}: failed: {records[-1]['error']}")
                continue
            for r in raw if isinstance(raw, list) else [raw]:
                rec = _record(row["name"], r, mach)
                rec["wall_s"] = time.perf_counter() - t
                if row["reference_why_not"] and row["reference_why_not"] != "no reference":
                    rec["reference_why_not"] = row["reference_why_not"]
                records.append(rec)
                log(f"suite: {row['name']}: {format_row(rec)}")
    result = dict(machine=mach, budget_min=budget_min,
                  wall_s=time.perf_counter() - t0, results=records)  # fmt: skip
    _write_atomic(out, json.dumps(result, indent=1))
    _write_atomic(out.with_suffix(".md"), markdown(result))
    return result


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _subprocess_runner(torch_threads: int | None):
    def run(flags: list[str], timeout_s: float, scratch: Path) -> dict | list:
        fd, js = tempfile.mkstemp(suffix=".json", dir=scratch)
        os.close(fd)
        cmd = [sys.executable, str(REPO / "launch" / "benchmark.py"), *flags, "--json_out", js]
        if torch_threads:
            cmd += ["--torch_threads", str(torch_threads)]
        try:
            p = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True,
                               timeout=timeout_s)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s") from None
        if p.returncode != 0:
            raise RuntimeError((p.stderr or p.stdout).strip() or f"exit {p.returncode}")
        return json.loads(Path(js).read_text())

    return run


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def format_row(rec: dict) -> str:
    ratio = f"; toonjax / reference {rec['ratio']:.2f}x" if rec.get("ratio") else ""
    return (f"{_fmt(rec.get('img_per_s'), '.2f')} img/s, compile {_fmt(rec.get('compile_s'), '.1f')}"
            f" s, peak host {_fmt(rec.get('peak_host_mb'), '.0f')} MB{ratio}")  # fmt: skip


def markdown(result: dict) -> str:
    m = result["machine"]
    head = (
        f"Backend {m['backend']}: {m['device_count']}x {m['device']} ({m['processor']}, "
        f"{m['cpu_count']} CPUs); jax {m['jax']}, jaxlib {m['jaxlib']}, flax {m['flax']}, "
        f"torch {m['torch']}, Python {m['python']}; {m['date']}; whole suite "
        f"{result['wall_s']:.0f} s (budget {result['budget_min']:g} min).\n\n"
    )
    lines = [
        "| benchmark | toonjax img/s | ms per batch | batch | compile s | peak host MB | "
        "peak device MB | TFLOP/s (of peak) | reference img/s | toonjax / reference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in result["results"]:
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or "failed: " + r["error"]
            lines.append(f"| {r['name']} | {why} | | | | | | | | |")
            continue
        tf = "-"
        if r.get("tflops") is not None:
            frac = r.get("peak_fraction")
            tf = f"{r['tflops']:.3g}" + (f" ({100 * frac:.1f}%)" if frac else "")
        ref = _fmt(r.get("reference_img_per_s"), ".2f", r.get("reference_why_not") and "n/a" or "-")
        lines.append(
            f"| {r['name']} | {_fmt(r['img_per_s'], '.2f')} | {_fmt(r['step_ms'], '.1f')} | "
            f"{r['batch_size']} | {_fmt(r['compile_s'], '.1f')} | "
            f"{_fmt(r['peak_host_mb'], '.0f')} | {_fmt(r['peak_device_mb'], '.0f')} | {tf} | "
            f"{ref} | {_fmt(r.get('ratio'), '.2f')}{'x' if r.get('ratio') else ''} |"
        )
        note = r.get("note") or ""
        if r.get("reference"):
            note += f"; reference: {r['reference']}"
        if r.get("reference_why_not"):
            note += f"; reference not run: {r['reference_why_not']}"
        notes.append(f"- {r['name']}: {note.strip('; ')}")
    return head + "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
