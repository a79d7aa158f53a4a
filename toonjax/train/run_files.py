"""The files NVlabs' stylegan2-ada-pytorch users look for in a run directory.

- `training_options.json`: every option of the run (the config, resolved) plus what the run
  found (toonjax version, devices, dataset, workdir), rewritten atomically at each start; the
  options of earlier starts stay in `training_options-<step>.json` when they differ (a resume
  with changed options is visible).
- `log.txt`: what the run printed (stdout and stderr), appended at each start; progress-bar
  redraws are left out, only the lines as they finally stand are kept.
- `snapshot_name(kimg)`: `network-snapshot-000200`-style names by thousands of images, used for
  StyleGAN2 sample grids (`samples/fakes000200.png`) and exported snapshots.

Only the primary process writes them (the caller decides).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OPTIONS = "training_options.json"
LOG = "log.txt"


def kimg_of(step: int, batch_size: int) -> int:
    """Thousands of images shown after `step` steps of `batch_size` (NVlabs: cur_nimg // 1000)."""
    return (int(step) * int(batch_size)) // 1000


def snapshot_name(kimg: int, prefix: str = "network-snapshot-") -> str:
    return f"{prefix}{int(kimg):06d}"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return repr(obj)


def write_options(workdir: str | os.PathLike, config: Any, run: dict, start_step: int = 0) -> Path:
    """Writes WORKDIR/training_options.json: {"config": ..., "run": ...}. When a resumed run's
    config differs from the file's, the old file is kept as training_options-<step>.json."""
    workdir = Path(workdir)
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    new = {"config": _plain(cfg), "run": _plain(run)}
    path = workdir / OPTIONS
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old.get("config") != new["config"]:
            keep = workdir / f"training_options-{int(start_step)}.json"
            if not keep.exists():
                os.replace(path, keep)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


class _Tee(io.TextIOBase):
    """Writes through to `stream` and appends the finished lines to `log` (the text after a
    line's last carriage return: what a terminal finally shows)."""

    def __init__(self, stream, log):
        self.stream, self.log, self.pending = stream, log, ""

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        self.pending += text
        if "\n" in self.pending:
            *lines, self.pending = self.pending.split("\n")
            out = [ln.rsplit("\r", 1)[-1] for ln in lines]
            self.log.write("".join(ln + "\n" for ln in out if ln.strip()))
            self.log.flush()
        elif len(self.pending) > 1 << 16:  # a progress bar that never ends its line
            self.pending = self.pending.rsplit("\r", 1)[-1][-4096:]
        return n if n is not None else len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return getattr(self.stream, "isatty", lambda: False)()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")

    def close_log(self) -> None:
        tail = self.pending.rsplit("\r", 1)[-1]
        if tail.strip():
            self.log.write(tail + "\n")
        self.pending = ""


@contextlib.contextmanager
def tee_log(workdir: str | os.PathLike, enabled: bool = True) -> Iterator[Path | None]:
    """Within the block, stdout and stderr are also appended to WORKDIR/log.txt."""
    if not enabled:
        yield None
        return
    path = Path(workdir) / LOG
    with open(path, "a", encoding="utf-8", errors="replace") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
        out, err = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            yield path
        except BaseException as e:  # the reason a run stopped belongs in its log too
            sys.stdout, sys.stderr = old
            out.close_log()
            err.close_log()
            log.write(f"stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n")
            raise
        finally:
            sys.stdout, sys.stderr = old
            out.close_log()
            err.close_log()
