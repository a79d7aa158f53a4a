"""A training workdir in Google Cloud Storage (`--workdir gs://BUCKET/PATH`).

TPU VMs of a pod slice share no disk, and a preempted VM loses its own: the run's one
checkpoint directory then lives in a bucket. toonjax splits such a workdir in two:

- checkpoints: orbax writes them straight to `gs://BUCKET/PATH/checkpoints`, every process its
  own shards (tensorstore's `gcs` driver), and restores read them from there;
- run files (log.txt, metrics.jsonl, training_options.json, samples/, tensorboard/, best/,
  metric-*.jsonl): the primary process writes them to a local staging folder, as for a local
  workdir, and copies the new or changed ones to the bucket after each checkpoint and when the
  run ends (also on SIGTERM or an error). A run resumed on a fresh machine first copies the
  bucket's run files into its empty staging folder, so log.txt and metrics.jsonl go on where
  they stopped.

The staging folder is `$TOONJAX_CACHE/workdirs/BUCKET/PATH` (default `~/.cache/toonjax`); its
`.toonjax-remote` file names the bucket path, which is how the Checkpointer finds it. Cloud
Storage access needs `gcsfs` (`pip install 'toonjax[gcs]'`) and the machine's credentials
(a TPU VM's service account, or `gcloud auth application-default login`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toonjax.cache import cache_root
from toonjax.errors import ConfigError

SCHEMES = ("gs://",)
MARKER = ".toonjax-remote"
_SYNCED = ".toonjax-synced.json"  # (size, mtime) of each file as last copied to the bucket


def is_remote(path: str | os.PathLike) -> bool:
    """True for a Cloud Storage path; ConfigError for another URL scheme."""
    text = str(path)
    if text.startswith(SCHEMES):
        return True
    if "://" in text:
        raise ConfigError(
            f"--workdir {text}: only local paths and gs://BUCKET/PATH are supported as a workdir"
        )
    return False


def staging_dir(url: str) -> Path:
    bucket_path = url.split("://", 1)[1].strip("/")
    if not bucket_path or any(p in ("", ".", "..") for p in bucket_path.split("/")):
        raise ConfigError(f"--workdir {url}: give gs://BUCKET/PATH (a folder in a bucket)")
    return cache_root() / "workdirs" / bucket_path


def _filesystem(url: str):
    try:
        import fsspec
        import gcsfs  # noqa: F401 -- fsspec's 'gs' protocol
    except ImportError:
        raise ConfigError(
            f"--workdir {url}: writing to Cloud Storage needs gcsfs: pip install 'toonjax[gcs]'"
        ) from None
    # gcsfs logs each failed request with its traceback (and warns on each new client that it
    # could not ask the bucket its type without credentials); the failures that matter reach
    # toonjax as exceptions and are reported in one line
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    return fsspec.filesystem("gs")


def remote_of(workdir: str | os.PathLike) -> str | None:
    """The bucket path a staging folder stands for, or None for a plain local workdir."""
    marker = Path(workdir) / MARKER
    try:
        return marker.read_text().strip() or None
    except OSError:
        return None


def checkpoint_path(workdir: str | os.PathLike):
    """Where a workdir's checkpoints live: an `epath.Path` in the bucket for a staging folder,
    else WORKDIR/checkpoints (absolute: orbax needs absolute paths)."""
    url = remote_of(workdir)
    if url is None:
        return Path(workdir).absolute() / "checkpoints"
    from etils import epath

    _filesystem(url)  # gcsfs present (epath reaches gs:// through it, or through TensorFlow)
    return epath.Path(url.rstrip("/")) / "checkpoints"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class RemoteWorkdir:
    """The staging folder of a gs:// workdir and its copies to and from the bucket."""

    def __init__(self, url: str, primary: bool = True):
        self.url = url.rstrip("/")
        self.staging = staging_dir(self.url)
        self.primary = primary
        self.fs = _filesystem(self.url)

    def probe(self) -> None:
        """Writes the marker object: a missing bucket or write permission is one line at the
        start, not a traceback at the first checkpoint."""
        try:
            self.fs.pipe_file(f"{self.url}/{MARKER}", (self.url + "\n").encode())
        except Exception as e:  # noqa: BLE001 -- credentials, network, a missing bucket
            raise ConfigError(
                f"--workdir {self.url}: cannot write there ({_first_line(e)}); check the bucket "
                "name and this machine's credentials (gcloud auth application-default login)"
            ) from None

    def _remote_files(self) -> list[str]:
        try:
            self.fs.invalidate_cache()  # another process or machine may have written since
            found = self.fs.find(self.url)
        except FileNotFoundError:
            return []
        except Exception as e:  # noqa: BLE001 -- credentials, network, a missing bucket
            raise ConfigError(
                f"--workdir {self.url}: cannot list it ({_first_line(e)}); check the bucket "
                "name and this machine's credentials (gcloud auth application-default login)"
            ) from None
        base = self.url.split("://", 1)[1].rstrip("/") + "/"
        rel = [f[len(base) :] for f in found if f.startswith(base)]
        return [r for r in rel if r and not r.startswith("checkpoints/")]

    def pull(self) -> int:
        """Copies the bucket's run files that the staging folder lacks (a resume on a fresh
        machine); the staging folder's own files are newer and stay. Returns the count."""
        n = 0
        for rel in self._remote_files():
            local = self.staging / rel
            if rel in (MARKER, _SYNCED) or local.exists():
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.part")
            self.fs.get_file(f"{self.url}/{rel}", str(tmp))
            os.replace(tmp, local)
            n += 1
        return n

    def _synced(self) -> dict[str, list[int]]:
        try:
            return json.loads((self.staging / _SYNCED).read_text())
        except (OSError, ValueError):
            return {}

    def push(self) -> int:
        """Copies the staging folder's new or changed files to the bucket (primary process
        only; each object is replaced whole, so a reader never sees half a file). Returns the
        count."""
        if not self.primary:
            return 0
        synced, n = self._synced(), 0
        for local in sorted(self.staging.rglob("*")):
            rel = local.relative_to(self.staging).as_posix()
            if not local.is_file() or local.is_symlink() or rel in (MARKER, _SYNCED):
                continue
            if any(p[:1] == "." and (".tmp" in p or p.endswith(".part")) for p in rel.split("/")):
                continue  # an atomic write in progress (toonjax's temporary names)
            st = local.stat()
            key = [st.st_size, st.st_mtime_ns]
            if synced.get(rel) == key:
                continue
            self.fs.put_file(str(local), f"{self.url}/{rel}")
            synced[rel] = key
            n += 1
        tmp = self.staging / f"{_SYNCED}.tmp"
        tmp.write_text(json.dumps(synced))
        os.replace(tmp, self.staging / _SYNCED)
        return n


def push_run_files(workdir: str | os.PathLike, primary: bool = True) -> None:
    """After a checkpoint: copies the run files of a staging folder to its bucket (nothing for a
    local workdir). A failed copy is printed, not raised: the checkpoint is already safe and
    the next copy catches up."""
    url = remote_of(workdir)
    if url is None or not primary:
        return
    try:
        RemoteWorkdir(url, primary).push()
    except Exception as e:  # noqa: BLE001 -- network hiccups must not stop training
        print(f"could not copy the run files to {url} ({_first_line(e)}); retrying at the "
              "next checkpoint", flush=True)  # fmt: skip


@contextlib.contextmanager
def workdir_for(workdir: str, primary: bool = True) -> Iterator[str]:
    """The local folder a trainer writes in: WORKDIR itself, or for gs://... its staging
    folder (pulled first, pushed at the end whatever happens)."""
    if not is_remote(workdir):
        yield workdir
        return
    remote = RemoteWorkdir(workdir, primary)
    remote.staging.mkdir(parents=True, exist_ok=True)
    (remote.staging / MARKER).write_text(remote.url + "\n")  # how the Checkpointer finds it
    if primary:  # the other processes write no run files: they need none from the bucket
        remote.probe()
        pulled = remote.pull()
        print(
            f"workdir {remote.url}: checkpoints go there directly, run files are staged in "
            f"{remote.staging} and copied there at each checkpoint"
            + (f" ({pulled} copied from it to resume)" if pulled else ""),
            flush=True,
        )
    try:
        yield str(remote.staging)
    finally:
        push_run_files(remote.staging, primary)


def describe(workdir: Any) -> str:
    return remote_of(workdir) or str(workdir)
