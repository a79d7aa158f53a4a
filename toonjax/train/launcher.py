"""absl flags for training (`--config FILE[:variant]`, `--workdir DIR`, `--config.x=v`).

`toonjax train ...` and `python launch/train.py ...` both call `run(argv)`; the training
logic lives in `toonjax.train.train_and_evaluate`.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from toonjax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file and variant, e.g. configs/dcgan.py:toyfaces", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, samples, metrics.")


def run(argv: list[str]) -> None:
    """Parses `argv` (argv[0] is the program name) and trains."""
    from toonjax.train import train_and_evaluate

    try:
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
    except flags.Error as e:
        raise ConfigError(str(e).splitlines()[0]) from e
    except Exception as e:  # a config file that fails to load (missing file, bad variant, ...)
        msg = str(e).strip().splitlines()
        raise ConfigError(f"{msg[-1] if msg else type(e).__name__}") from e
    if _CONFIG.value is None:
        raise ConfigError("--config is required, e.g. --config configs/dcgan.py:toyfaces")
    if not _WORKDIR.value:
        raise ConfigError("--workdir is required, e.g. --workdir runs/dcgan")
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
