"""absl flags for training (`--config FILE[:variant]`, `--workdir DIR`, `--config.x=v`).

`toonjax train ...` and `python launch/train.py ...` both call `run(argv)`; the training
logic lives in `toonjax.train.train_and_evaluate`. In a multi-process run (every process runs
the same command, see `toonjax.train.distributed`) this also ends the run together: a clean end
waits for every process, an error in one is published so the others stop at once.
"""

from __future__ import annotations

import re

from absl import flags
from ml_collections import config_flags

from toonjax.errors import ConfigError

USAGE = """usage: toonjax train --config FILE[:VARIANT] --workdir DIR [--config.FIELD=VALUE ...]

Trains (or resumes) the GAN a config describes; checkpoints, sample grids and metrics go to DIR.

  --config     an ml-collections config file and variant, e.g. configs/dcgan.py:toyfaces
               (variants and what to expect are in the config file's docstring)
  --workdir    the run directory; running the same command again resumes from its checkpoints
               (a local path, or gs://BUCKET/PATH with toonjax[gcs]: checkpoints in the bucket)
  --config.X   override any config field, e.g. --config.batch_size=64 --config.optim.g_lr=1e-4

Many processes (a TPU VM slice, SLURM tasks, processes started by hand): every process runs the
same command; --config.distributed=auto|on|off, --config.coordinator_address=HOST:PORT
--config.num_processes=N --config.process_id=I (README "Scaling out", launch/tpu_pod.sh,
launch/slurm.sbatch). --config.compile_cache_dir=DIR|off: JAX's persistent compilation cache.
"""


def _parse(argv: list[str]):
    """Parses argv on a fresh FlagValues (so repeated in-process runs do not clash)."""
    fv = flags.FlagValues()
    config = config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file and variant, e.g. configs/dcgan.py:toyfaces",
        flag_values=fv,
        lock_config=True,
        sys_argv=argv,  # config_flags looks here for `--config.x=v` overrides
    )
    workdir = flags.DEFINE_string(
        "workdir",
        None,
        "Run directory (or gs://BUCKET/PATH): checkpoints, samples, metrics.",
        flag_values=fv,
    )
    fv(argv)
    value = config.value  # config_flags loads lazily: surface load errors here
    if value is not None:
        value.get("model")
    return value, workdir.value


def run(argv: list[str]) -> None:
    """Parses `argv` (argv[0] is the program name) and trains."""
    from toonjax.train import train_and_evaluate

    if any(a in ("-h", "--help", "-help") for a in argv[1:]):
        print(USAGE)
        return
    argv = _join_config_value(argv)
    from toonjax.tools import config_path

    argv = [argv[0], *config_path.resolve_config_args(argv[1:])]  # `dcgan.py:...` from anywhere
    try:
        config, workdir = _parse(argv)
    except (KeyError, AttributeError) as e:  # --config.FIELD=... naming no field
        raise ConfigError(_unknown_field_message(e, argv)) from e
    except Exception as e:  # flag syntax, a missing config file, a config that raises, ...
        raise ConfigError(_one_line(e)) from e
    if config is None:
        raise ConfigError("--config is required, e.g. --config configs/dcgan.py:toyfaces")
    if not workdir:
        raise ConfigError("--workdir is required, e.g. --workdir runs/dcgan")
    from toonjax.train import distributed

    try:
        train_and_evaluate(config, workdir)
    except SystemExit as e:  # SIGTERM / Ctrl-C: every process saved the same step
        rt = distributed.current()
        rt.finish() if e.code in (130, 143) else rt.report_failure(e)
        raise
    except BaseException as e:
        # In a multi-process run the others learn of it at once (and stop with a line naming
        # this process); a no-op in a single process.
        distributed.current().report_failure(e)
        raise
    distributed.current().finish()  # leave the multi-process runtime together


def _unknown_field_message(e: Exception, argv: list[str]) -> str:
    """One clean line for an override naming no field. ml_collections raises a KeyError whose
    text is "'field'\\nDid you mean "other" instead of "field"?" (sometimes escaped once more)."""
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    m_field = re.search(r"'(\w+)\\?'", text)
    field = m_field.group(1) if m_field else text.splitlines()[0].strip("\"'\\")
    m = re.search(r'Did you mean "([^"]+)"', text)
    flags_given = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    flag = next((f for f in flags_given if f.endswith("." + field)), f"--config.{field}")
    hint = "; the config file lists its fields"
    if m:
        hint = f"; did you mean {flag[: -len(field)]}{m.group(1)}?"
    return f"{flag}: the config has no field {field!r}{hint}"


def _one_line(e: Exception) -> str:
    """The informative line of a config-loading error (config_flags wraps them in tracebacks)."""
    text = str(e)
    if "No such file or directory" in text:
        path = text.split("No such file or directory:")[-1].strip().strip("'\"")
        return f"{path}: no such config file (give a path like configs/dcgan.py:toyfaces)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else type(e).__name__
    for prefix in ("ValueError: ", "KeyError: ", "TypeError: ", "OSError: ", "IOError: "):
        if last.startswith(prefix):
            last = last[len(prefix) :]
    return last


def _join_config_value(argv: list[str]) -> list[str]:
    """`--config FILE` -> `--config=FILE`: config_flags only honours `--config.x=v` overrides
    when the config flag is given in the `=` form."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("--config", "-config") and i + 1 < len(argv):
            out.append(f"--config={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out
