"""Per-op timings of compiled XLA programs: where a benchmark's time goes.

`launch/benchmark.py --profile DIR` uses it: before JAX starts, `dump_flags(DIR)` asks XLA to
write every compiled program's optimized HLO as text (`DIR/hlo`); the whole benchmark then runs
under `jax.profiler.trace(DIR/trace)`; `op_table(DIR)` reads the trace (`jax`'s own XSpace
reader, no TensorFlow) and sums, per program and HLO instruction, the time of every execution
of that instruction (`hlo_op` events of XLA's runtime, one per thunk run); the HLO text tells
what each instruction is (a convolution, a matrix product, a fusion and what it computes, the
output shape) and which JAX operation it came from (`op_name` metadata). Warm-up and reference
steps are in the trace too, so shares (of all XLA time) are what to read, and `ms/run` (the
mean time of one execution). Two limits of XLA:CPU's events: it runs independent instructions
side by side on its threads, so the sum can exceed the wall time; and a matrix product it
hands to Eigen (`dot`, not a `__ynn_fusion`) is timed at its dispatch only, not its work.

    python launch/benchmark.py --config configs/dcgan.py:toyfaces,res64 --what train_step \
        --steps 5 --profile /tmp/prof         # prints the table, writes /tmp/prof/ops.md
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from pathlib import Path

_INSTR = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>\S+(?:\s*\{[^}]*\})?|\([^=]*?\))\s+"
    r"(?P<op>[\w\-]+)\("
)
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_KIND = re.compile(r"kind=(k\w+)")
_OPNAME = re.compile(r'op_name="([^"]*)"')
_SRC = re.compile(r'source_file="([^"]*)"\s+source_line=(\d+)')
_DULL = {"parameter", "constant", "bitcast", "tuple", "get-tuple-element"}


def dump_flags(out_dir: str | os.PathLike) -> None:
    """Adds XLA's HLO dump (optimized programs as text, under out_dir/hlo) to XLA_FLAGS. Must
    run before JAX initialises its backend."""
    hlo = Path(out_dir).absolute() / "hlo"
    extra = f"--xla_dump_to={hlo} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + extra).strip()


@dataclasses.dataclass
class Instr:
    op: str  # opcode; for a fusion, "fusion:" + what it computes
    shape: str
    op_name: str  # JAX's name of the operation it came from
    source: str


def _short_shape(shape: str) -> str:
    return re.sub(r"\{[^}]*\}", "", shape)


def parse_hlo(text: str) -> tuple[str, dict[str, Instr]]:
    """The module's name and, per instruction of the entry and nested computations, what it is."""
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    module = first.split()[1].rstrip(",") if first.startswith("HloModule") else ""
    comps: dict[str, list[str]] = {}
    current = None
    instrs: dict[str, tuple[str, str, str, str]] = {}  # name -> (op, shape, line, computation)
    for line in text.splitlines():
        s = line.strip()
        if s.endswith("{") and "=" not in s.split("(")[0] and not s.startswith("HloModule"):
            current = s.split()[1 if s.startswith("ENTRY") else 0].lstrip("%")
            comps[current] = []
            continue
        m = _INSTR.match(line)
        if m and current is not None:
            instrs[m["name"]] = (m["op"], _short_shape(m["shape"]), line, current)
            comps[current].append(m["op"])
    out = {}
    for name, (op, shape, line, _) in instrs.items():
        desc = op
        if op == "fusion" or op == "custom-call":
            called = _CALLS.search(line)
            inner = [o for o in comps.get(called[1], []) if o not in _DULL] if called else []
            heavy = [o for o in ("convolution", "dot", "reduce-window", "reduce", "scatter")
                     if o in inner]  # fmt: skip
            kind = _KIND.search(line)
            what = ",".join(heavy) or ",".join(sorted(set(inner))[:3]) or "?"
            desc = f"fusion:{what}" + (f" ({kind[1]})" if kind else "")
        opname = _OPNAME.search(line)
        src = _SRC.search(line)
        out[name] = Instr(
            desc,
            shape,
            opname[1] if opname else "",
            f"{Path(src[1]).name}:{src[2]}" if src else "",
        )
    return module, out


def read_hlo(hlo_dir: str | os.PathLike) -> dict[tuple[str, int | None], dict[str, Instr]]:
    """(module name, program id) -> instruction name -> Instr, from XLA's after-optimizations
    dumps (`module_0004.jit_step.cpu_after_optimizations.txt`: program 4; two jitted lambdas
    share a name, not an id)."""
    mods: dict[tuple[str, int | None], dict[str, Instr]] = {}
    for f in sorted(Path(hlo_dir).glob("*after_optimizations.txt")):
        module, instrs = parse_hlo(f.read_text(errors="replace"))
        m = re.match(r"module_(\d+)\.", f.name)
        mods.setdefault((module, int(m[1]) if m else None), {}).update(instrs)
    return mods


def op_times(trace_dir: str | os.PathLike) -> dict[tuple[str, int | None, str], list[float]]:
    """(program name, program id, HLO instruction) -> the durations (ms) of its executions."""
    from jax._src.profiler import ProfileData

    files = sorted(Path(trace_dir).glob("**/*.xplane.pb"))
    if not files:
        raise FileNotFoundError(f"{trace_dir}: no profiler trace (*.xplane.pb) was written")
    times: dict[tuple[str, int | None, str], list[float]] = collections.defaultdict(list)
    for f in files:
        for plane in ProfileData.from_file(str(f)).planes:
            for line in plane.lines:
                for ev in line.events:
                    stats = dict(ev.stats)
                    op, mod = stats.get("hlo_op"), stats.get("hlo_module")
                    if op is None or mod is None:
                        continue
                    pid = stats.get("program_id")
                    key = (str(mod), None if pid is None else int(pid), str(op))
                    times[key].append(ev.duration_ns / 1e6)
    return times


def op_table(out_dir: str | os.PathLike, top: int = 25) -> str:
    """A Markdown table of the `top` instructions by total time, with the totals per kind."""
    out_dir = Path(out_dir)
    times = op_times(out_dir / "trace")
    mods = read_hlo(out_dir / "hlo")
    total = sum(sum(v) for v in times.values()) or 1.0
    rows = sorted(times.items(), key=lambda kv: -sum(kv[1]))
    by_kind: dict[str, float] = collections.Counter()
    for (mod, pid, op), v in rows:
        info = mods.get((mod, pid), {}).get(op)
        kind = info.op.split(" (")[0] if info else "?"
        by_kind[kind] += sum(v)
    lines = [
        f"XLA time in the trace: {total / 1e3:.2f} s over {len(times)} instructions.",
        "",
        "| share | ms/run | runs | program | instruction | what | shape | from (JAX op) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (mod, pid, op), v in rows[:top]:
        info = mods.get((mod, pid), {}).get(op) or Instr("?", "", "", "")
        src = info.op_name.split("/")[-1] if info.op_name else ""
        src = f"{src} ({info.source})" if info.source else src
        lines.append(
            f"| {100 * sum(v) / total:.1f}% | {sum(v) / len(v):.1f} | {len(v)} | {mod}#{pid} | {op} "
            f"| {info.op} | {info.shape} | {src} |"
        )
    lines += ["", "| kind | share |", "|---|---|"]
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1])[:12]:
        lines.append(f"| {kind} | {100 * t / total:.1f}% |")
    by_class: dict[str, float] = collections.Counter()
    for kind, t in by_kind.items():
        by_class[op_class(kind)] += t
    lines += ["", "| class | share |", "|---|---|"]
    for cls in CLASSES:
        lines.append(f"| {cls} | {100 * by_class.get(cls, 0.0) / total:.1f}% |")
    return "\n".join(lines) + "\n"


CLASSES = ("convolution", "matrix product", "copy/transpose", "elementwise", "reduction", "other")


def op_class(kind: str) -> str:
    """A coarse class of an instruction kind (`fusion:convolution`, `copy`, `fusion:add,...`)."""
    parts = set(kind.removeprefix("fusion:").split(","))
    if parts & {"convolution"}:
        return "convolution"
    if parts & {"dot"}:
        return "matrix product"
    if parts & {"reduce", "reduce-window"}:
        return "reduction"
    if parts & {"copy", "transpose", "reverse"}:
        return "copy/transpose"
    elementwise = {"add", "multiply", "subtract", "divide", "broadcast", "pad", "slice", "select",
                   "compare", "maximum", "minimum", "exponential", "tanh", "negate", "sqrt",
                   "rsqrt", "power", "abs", "sign", "convert", "log", "concatenate", "and", "or",
                   "clamp", "exponential-minus-one", "log-plus-one", "dynamic-slice", "iota"}  # fmt: skip
    if parts and parts <= elementwise:
        return "elementwise"
    return "other"
