"""toonjax's own cache folder: `$TOONJAX_CACHE`, else `~/.cache/toonjax`.

Under it: `metrics/` (FID/KID statistics), `jax/` (the compilation cache), `smoke-data/` (the
`runlocal` toy sets) and `workdirs/` (the local staging folders of gs:// workdirs).
"""

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("TOONJAX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "toonjax"
