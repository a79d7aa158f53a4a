"""Where `toonjax train --config FILE[:VARIANT]` finds its config file, from any directory.

Search path, first match wins:

1. FILE as given: absolute, or relative to the current directory (`configs/dcgan.py` from the
   repository root, or your own `my_config.py`);
2. the packaged configs: `toonjax/configs/` inside the installed package (when the wheel ships
   them there) and `configs/` of the source checkout the package runs from (`pip install -e .`),
   each tried with FILE as given and with its file name alone, so `dcgan.py`, `dcgan` and
   `configs/dcgan.py` all find `configs/dcgan.py` from anywhere.

A FILE without `.py` gets it (`dcgan:toyfaces`). A FILE found nowhere is one ConfigError naming
the search path and the packaged config names.
"""

from __future__ import annotations

from pathlib import Path

from toonjax.errors import ConfigError


def packaged_config_dirs() -> list[Path]:
    """The packaged config folders that exist: inside the installed package, then next to it
    in a source checkout."""
    import toonjax

    pkg = Path(toonjax.__file__).resolve().parent
    dirs = [pkg / "configs", pkg.parent / "configs"]
    return [d for d in dirs if d.is_dir() and any(d.glob("*.py"))]


def search_path() -> list[Path]:
    return [Path.cwd(), *packaged_config_dirs()]


def _candidates(file: str) -> list[str]:
    names = [file]
    if not file.endswith(".py"):
        names.append(file + ".py")
    return names


def find_config(spec: str) -> str:
    """`FILE[:VARIANT]` with FILE replaced by the absolute path of the file the search path
    finds (see the module docstring); a ConfigError naming the search path when none."""
    file, sep, variant = spec.partition(":")
    if not file:
        raise ConfigError(f"--config {spec!r}: give a config file, e.g. dcgan.py:toyfaces")
    for name in _candidates(file):
        p = Path(name).expanduser()
        if p.is_file():
            return str(p.absolute()) + sep + variant
    if not Path(file).expanduser().is_absolute():
        for d in packaged_config_dirs():
            for name in _candidates(file):
                for rel in dict.fromkeys((name, Path(name).name)):  # as given, then its name
                    p = d / rel
                    if p.is_file():
                        return str(p) + sep + variant
    dirs = search_path()
    packaged = sorted({p.name for d in dirs[1:] for p in d.glob("*.py") if p.name[0] != "_"})
    where = ", ".join(str(d) for d in dirs)
    have = (
        f"packaged configs: {', '.join(packaged)}"
        if packaged
        else "this installation ships no packaged configs; give the path of a config file"
    )
    raise ConfigError(f"--config {file}: no such config file; searched {where} ({have})")


def resolve_config_args(argv: list[str]) -> list[str]:
    """argv with the value of `--config FILE[:V]` / `--config=FILE[:V]` made absolute by
    `find_config` (`--config.FIELD=V` overrides are left alone)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--config", "-config") and i + 1 < len(argv):
            out += [a, find_config(argv[i + 1])]
            i += 2
            continue
        for prefix in ("--config=", "-config="):
            if a.startswith(prefix):
                a = prefix + find_config(a[len(prefix) :])
                break
        out.append(a)
        i += 1
    return out
