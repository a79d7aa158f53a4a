"""Multi-process training on JAX's distributed runtime, and the persistent compilation cache.

Every trainer runs as one program over many processes (a TPU VM slice, SLURM tasks, Open MPI
ranks, or processes started by hand): each process drives its local devices, the mesh spans the
devices of all of them, and XLA's collectives keep the replicated state identical everywhere.

Config fields (added to every config by `add_config_fields`):

  distributed          'auto' (default): multi-process when the environment describes a job of
                       more than one process, as `jax.distributed.initialize()` detects it (Cloud
                       TPU VM metadata, SLURM, Open MPI, ...), or when the fields below are given;
                       a plain single-process run starts nothing. 'on': always (detection or the
                       fields below must supply the job). 'off': never.
  coordinator_address  'HOST:PORT' of process 0 (explicit launches; '' = detect)
  num_processes        the number of processes (0 = detect)
  process_id           this process's index (-1 = detect)
  heartbeat_timeout_s  a process that sends no heartbeat for this long (killed, crashed, hung)
                       ends the others with one line naming it
  compile_cache_dir    JAX's persistent compilation cache: 'auto' (default) =
                       $TOONJAX_CACHE/jax, else ~/.cache/toonjax/jax; a path; '' or 'off'
                       disables it. An already-set JAX_COMPILATION_CACHE_DIR wins.

What the rest of the training code gets from here (`setup` returns a `Runtime`):

- data: `toonjax.data.loader.BatchStream` reads only this process's rows of each global batch;
  the config's batch sizes stay global. The data position is the same on every process, and
  `pack_data_state` stores every process's iterator state in the one checkpoint.
- side effects (grids, logs, TensorBoard, metrics.jsonl, best/) only where `Runtime.primary`.
- preemption: a SIGTERM to any process starts JAX's preemption sync (its notifier owns SIGTERM
  in a multi-process run); every process stops at the same step (`reached_sync_point`) and they
  save one consistent checkpoint together.
- failure: a process that is killed, crashes or hangs stops sending heartbeats and the runtime
  ends the others; their stderr passes through a small filter process that turns the runtime's
  fatal report into one line naming the process. A Python error in one process is published in
  the runtime's key-value store, and the others stop within about two seconds with one line
  naming it.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toonjax.cache import cache_root
from toonjax.errors import ConfigError, ToonjaxError, TrainingError

FIELDS = {
    "distributed": "auto",
    "coordinator_address": "",
    "num_processes": 0,
    "process_id": -1,
    "heartbeat_timeout_s": 30,
    "compile_cache_dir": "auto",
}
_MODES = ("auto", "on", "off")
_OFF = ("", "off", "none", "false", "0")
_KV_EXIT = "toonjax/exit/"  # key-value store: toonjax/exit/<process> -> {"ok", "message", ...}


def add_config_fields(config) -> None:
    """Adds the multi-process and compilation-cache fields (defaults above) to a config."""
    for name, value in FIELDS.items():
        if name not in config:
            config[name] = value


# ------------------------------------------------------------------------------ validation


def _explicit(config) -> dict[str, Any]:
    """The job fields given on the command line / in the config (others left to detection)."""
    out = {}
    if config.get("coordinator_address", ""):
        out["coordinator_address"] = str(config.coordinator_address)
    if config.get("num_processes", 0):
        out["num_processes"] = int(config.num_processes)
    if config.get("process_id", -1) is not None and int(config.get("process_id", -1)) >= 0:
        out["process_id"] = int(config.process_id)
    return out


def validate(config) -> None:
    """One-line ConfigError for a distributed / cache field that cannot work."""
    mode = config.get("distributed", "auto")
    if mode is True or mode is False:
        mode = "on" if mode else "off"
    if not isinstance(mode, str) or mode.lower() not in _MODES:
        raise ConfigError(f"--config.distributed={mode!r}: choose auto, on or off")

    def whole(name, low):
        v = config.get(name, FIELDS[name])
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"--config.{name}={v!r}: give a whole number >= {low}")
        return v

    n = whole("num_processes", 0)
    pid = whole("process_id", -1)
    hb = config.get("heartbeat_timeout_s", FIELDS["heartbeat_timeout_s"])
    if isinstance(hb, bool) or not isinstance(hb, int | float) or hb < 2:
        raise ConfigError(
            f"--config.heartbeat_timeout_s={hb!r}: give the seconds (>= 2) after which a silent "
            "process counts as gone"
        )
    addr = config.get("coordinator_address", "") or ""
    if not isinstance(addr, str) or (addr and not re.fullmatch(r"\[?[\w.:-]+\]?:\d{1,5}", addr)):
        raise ConfigError(
            f"--config.coordinator_address={addr!r}: give HOST:PORT of process 0, e.g. "
            "10.0.0.2:8476"
        )
    if n and pid >= n:
        raise ConfigError(
            f"--config.process_id={pid}: must be below --config.num_processes={n} (0 to {n - 1})"
        )
    if mode.lower() == "off" and _explicit(config):
        given = ", ".join(f"--config.{k}" for k in _explicit(config))
        raise ConfigError(
            f"--config.distributed=off but {given} describe a multi-process job: drop them or "
            "use --config.distributed=on"
        )
    cache = config.get("compile_cache_dir", "auto")
    if cache is not None and not isinstance(cache, str):
        raise ConfigError(
            f"--config.compile_cache_dir={cache!r}: give a directory, 'auto' or 'off'"
        )


# ------------------------------------------------------------------------------ compile cache


def default_cache_dir() -> Path:
    """`$TOONJAX_CACHE/jax`, else `~/.cache/toonjax/jax` (next to the metrics statistics and the
    smoke-run data)."""
    return cache_root() / "jax"


def configure_compile_cache(config) -> str | None:
    """Points JAX's persistent compilation cache at the configured directory (before anything
    compiles). Returns the directory in use, or None when the cache is off."""
    import jax

    env = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if env:  # the user's (or the test session's) choice stands; jax read it at import
        return env
    value = config.get("compile_cache_dir", "auto")
    value = "auto" if value is None else str(value).strip()
    if value.lower() in _OFF:
        return None
    path = default_cache_dir() if value.lower() == "auto" else Path(value).expanduser()
    if "://" not in str(value):  # gs://... and other remote paths are created by JAX
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"--config.compile_cache_dir={value!r}: cannot create {path} ({e.strerror}); "
                "give a writable directory or 'off'"
            ) from None
    current = jax.config.jax_compilation_cache_dir
    if current and current != str(path):
        return current  # set earlier in this process (e.g. by a previous run): JAX keeps it
    jax.config.update("jax_compilation_cache_dir", str(path))
    return str(path)


# ------------------------------------------------------------------------------ runtime


@dataclass
class Runtime:
    """Where this process stands in the job."""

    process_index: int = 0
    process_count: int = 1
    how: str = "single process"
    coordinator: str = ""
    heartbeat_timeout_s: float = 30.0
    compile_cache: str | None = None
    _watchdog: threading.Thread | None = field(default=None, repr=False)
    _stop_watch: threading.Event = field(default_factory=threading.Event, repr=False)
    _exiting: bool = False
    _finished: bool = False
    _failed_code: int | None = None
    _filter: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def multi(self) -> bool:
        return self.process_count > 1

    @property
    def primary(self) -> bool:
        return self.process_index == 0

    # ---- preemption

    def reached_sync_point(self, step: int) -> bool:
        """True on every process at the same step once any of them got SIGTERM (JAX's
        preemption sync); call it once per step on every process."""
        if not self.multi:
            return False
        from jax.experimental import multihost_utils

        return bool(multihost_utils.reached_preemption_sync_point(int(step)))

    # ---- exit protocol

    def finish(self) -> None:
        """A clean end on every process: publish it, stop the watchdog, and leave the runtime
        together (a barrier: the coordinator stays up until every process is done)."""
        if not self.multi or self._finished or self._failed_code is not None:
            return
        import jax

        self._exiting = True
        self._publish({"ok": True})
        self._stop_watch.set()
        self._finished = True
        try:
            jax.distributed.shutdown()
        except Exception as e:  # noqa: BLE001 -- a peer gone at the very end: say so, once
            print(
                f"toonjax: warning: process {self.process_index}: leaving the distributed "
                f"runtime failed ({_first_line(e)})",
                file=sys.stderr,
                flush=True,
            )

    def report_failure(self, exc: BaseException) -> None:
        """This process is ending with `exc`: tell the others (they stop within about two seconds,
        with a line naming this process) and skip the shutdown barrier at exit."""
        if not self.multi or self._finished or self._failed_code is not None:
            return
        if isinstance(exc, SystemExit):
            code = exc.code if isinstance(exc.code, int) else 1
        elif isinstance(exc, KeyboardInterrupt):
            code = 130
        elif isinstance(exc, ToonjaxError):
            code = 2
        else:
            code = 1
        self._exiting = True
        self._failed_code = code
        self._publish({"ok": False, "message": _first_line(exc) or type(exc).__name__})

    def _publish(self, info: dict) -> None:
        client = _client()
        if client is None:
            return
        info = {**info, "process": self.process_index, "host": _hostname(), "pid": os.getpid()}
        try:
            client.key_value_set(
                f"{_KV_EXIT}{self.process_index}", json.dumps(info), allow_overwrite=True
            )
        except Exception:  # noqa: BLE001 -- the coordinator is gone: nothing to tell
            pass

    def _at_exit(self) -> None:
        if not self.multi:
            return
        if self._failed_code is None and not self._finished:
            self.finish()  # library use without the launcher: leave together
            return
        if self._failed_code is None:
            return
        self._stop_watch.set()
        if self.primary:
            # The coordinator holds the key-value store: keep it up until the others have
            # read this process's failure (they publish theirs as they stop), at most 15 s.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                seen = {k for k, _ in _kv_dir(_KV_EXIT)}
                if len(seen) >= self.process_count:
                    break
                time.sleep(0.2)
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip the runtime's shutdown barrier: the others are not coming to it.
        os._exit(self._failed_code)

    # ---- watchdog: another process's Python error ends this one at once

    def start_watchdog(self) -> None:
        self._watchdog = threading.Thread(
            target=self._watch, name="toonjax-peer-watch", daemon=True
        )
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._stop_watch.wait(0.5):
            failed = [
                info
                for _, value in _kv_dir(_KV_EXIT)
                if (info := _loads(value)) is not None
                and not info.get("ok", True)
                and info.get("process") != self.process_index
            ]
            if not failed or self._exiting:
                continue
            # The same error may be about to end this process too (a NaN every process sees):
            # give it a moment to report its own line instead.
            if self._stop_watch.wait(1.5) or self._exiting:
                return
            info = min(failed, key=lambda i: i.get("process", 0))
            who = f"process {info.get('process')}"
            if info.get("host"):
                who += f" ({info['host']}, pid {info.get('pid')})"
            print(
                f"toonjax: error: process {self.process_index} of {self.process_count} stopped "
                f"because {who} failed: {info.get('message', '?')}",
                file=sys.stderr,
                flush=True,
            )
            self._exiting = True
            self._publish({"ok": False, "message": f"stopped with process {info.get('process')}"})
            sys.stdout.flush()
            if self.primary:  # keep the store up briefly for the rest of the job
                time.sleep(min(3.0, self.heartbeat_timeout_s))
            os._exit(1)

    # ---- a collective failed under us

    def collective_failed(self, exc: BaseException) -> TrainingError:
        """Called when a step raised in a multi-process run: usually another process died and
        the runtime is about to end this one with a line naming it. Waits for that (bounded),
        then returns a one-line error to raise."""
        deadline = time.monotonic() + self.heartbeat_timeout_s + 15
        while time.monotonic() < deadline:
            time.sleep(0.5)
        return TrainingError(
            f"process {self.process_index} of {self.process_count}: a step across the "
            f"processes failed ({_first_line(exc)}); another process has probably stopped: "
            "check its log, then start the same command on every process to resume"
        )


_RUNTIME: Runtime | None = None


def current() -> Runtime:
    """The runtime `setup` made, or a description of this (single) process."""
    if _RUNTIME is not None:
        return _RUNTIME
    return Runtime()


def is_primary() -> bool:
    """True in process 0 (and in a single-process run): the one that writes files and logs."""
    import jax

    return jax.process_index() == 0


def setup(config) -> Runtime:
    """Validates the fields, turns the compilation cache on, starts the distributed runtime when
    the config / environment asks for it, and prints where this process stands. Idempotent;
    must run before anything touches a JAX device."""
    global _RUNTIME
    validate(config)
    if _RUNTIME is not None:
        mode = config.get("distributed", "auto")
        mode = ("on" if mode else "off") if isinstance(mode, bool) else mode.lower()
        if not _RUNTIME.multi and (mode == "on" or (mode == "auto" and _explicit(config))):
            # A second run in one Python process (tests, notebooks): the same answer as a
            # fresh process would give, never a silent single-process run.
            if not _explicit(config) and detect_cluster() is None:
                raise ConfigError(
                    "--config.distributed=on but no multi-process job was found (no TPU VM "
                    "slice, SLURM or Open MPI environment): give "
                    "--config.coordinator_address=HOST:PORT --config.num_processes=N "
                    "--config.process_id=I"
                )
            raise ConfigError(
                "--config.distributed: this Python process already runs JAX on its own; start "
                "a multi-process run in a fresh process (toonjax train on every worker)"
            )
        return _RUNTIME
    import jax

    cache = configure_compile_cache(config)
    mode = config.get("distributed", "auto")
    mode = ("on" if mode else "off") if isinstance(mode, bool) else mode.lower()
    explicit = _explicit(config)
    hb = float(config.get("heartbeat_timeout_s", FIELDS["heartbeat_timeout_s"]))
    runtime = Runtime(heartbeat_timeout_s=hb, compile_cache=cache)

    how = None
    if jax.distributed.is_initialized():  # started by the caller (a notebook, a custom launcher)
        how = "initialised by the caller"
    elif mode == "on" or (mode == "auto" and explicit):
        how = _initialize(explicit, hb, detected=None)
    elif mode == "auto":
        env = detect_cluster()
        if env is not None:
            count = _detected_count(env)
            if count is not None and count > 1:
                how = _initialize(explicit, hb, detected=env)
    if how is not None:
        from jax._src import distributed as jax_distributed  # the coordinator it connected to

        runtime.process_index = jax.process_index()
        runtime.process_count = jax.process_count()
        runtime.how = how
        runtime.coordinator = jax_distributed.global_state.coordinator_address or ""
    _RUNTIME = runtime
    if runtime.multi:
        runtime._filter = _start_stderr_filter(runtime)
        runtime.start_watchdog()
        atexit.register(runtime._at_exit)
        local = jax.local_devices()
        print(
            f"distributed: process {runtime.process_index} of {runtime.process_count} "
            f"({runtime.how}, coordinator {runtime.coordinator}); {len(local)} local "
            f"{local[0].platform} device(s) of {jax.device_count()} in all; compile cache "
            f"{cache or 'off'}",
            flush=True,
        )
    return runtime


def primary_first(fn):
    """`fn()` on process 0 first, then on the others (after a barrier): dataset builders that
    write what is missing (toy faces, synthetic pairs) then write it once on a shared disk."""
    rt = current()
    if not rt.multi:
        return fn()
    from jax.experimental import multihost_utils

    if rt.primary:
        out = fn()
        multihost_utils.sync_global_devices("toonjax-primary-first")
        return out
    multihost_utils.sync_global_devices("toonjax-primary-first")
    return fn()


def detect_cluster():
    """The cluster environment `jax.distributed.initialize()` would use, or None (TPU VM
    metadata, SLURM, Open MPI, Kubernetes: JAX's own detectors, in JAX's order)."""
    from jax._src import clusters

    for env in clusters.ClusterEnv._cluster_types:
        if getattr(env, "opt_in_only_method", False):
            continue
        try:
            if env.is_env_present():
                return env
        except Exception:  # noqa: BLE001 -- a detector that cannot run means "not this one"
            continue
    return None


def _detected_count(env) -> int | None:
    try:
        return int(env.get_process_count())
    except Exception:  # noqa: BLE001
        return None


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _initialize(explicit: dict, heartbeat: float, detected) -> str:
    """`jax.distributed.initialize` with the given fields (the rest detected); the CPU backend
    gets gloo collectives. Returns how the job was found, for the start line."""
    import jax

    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = dict(explicit)
    addr = kwargs.get("coordinator_address", "")
    if addr and _loopback(addr.rsplit(":", 1)[0]):
        kwargs["coordinator_bind_address"] = addr  # a local job listens on loopback only
    how = "explicit fields" if explicit else None
    if detected is None and len(explicit) < 3:
        detected = detect_cluster()
    if detected is not None:
        how = (how + " + " if how else "") + f"detected {detected.__name__}"
    if how is None:
        raise ConfigError(
            "--config.distributed=on but no multi-process job was found (no TPU VM slice, "
            "SLURM or Open MPI environment): give --config.coordinator_address=HOST:PORT "
            "--config.num_processes=N --config.process_id=I"
        )
    try:
        jax.distributed.initialize(heartbeat_timeout_seconds=int(heartbeat), **kwargs)
    except (ValueError, TypeError) as e:
        missing = re.search(r"(coordinator_address|[Nn]umber of processes|process id)", str(e))
        name = {"coordinator_address": "coordinator_address", "process id": "process_id"}.get(
            missing.group(1) if missing else "", "num_processes"
        )
        raise ConfigError(
            f"distributed: {_first_line(e)}; give --config.{name} (the environment did not "
            "supply it)"
        ) from None
    except RuntimeError as e:
        if "before any JAX" in str(e):
            raise TrainingError(
                "distributed: JAX was already in use in this process when training started; "
                "start the training in a fresh process"
            ) from None
        raise TrainingError(
            f"distributed: could not join the job at {addr or 'the detected coordinator'} "
            f"({_first_line(e)}): start the same command on every process (process 0 first "
            "or within the 5-minute join window) and check the address"
        ) from None
    return how


def _client():
    try:
        from jax._src import distributed as jax_distributed

        return jax_distributed.global_state.client
    except Exception:  # noqa: BLE001
        return None


def _kv_dir(prefix: str) -> list[tuple[str, str]]:
    client = _client()
    if client is None:
        return []
    try:
        return list(client.key_value_dir_get(prefix))
    except Exception:  # noqa: BLE001 -- coordinator gone or shutting down
        return []


def _loads(value: str) -> dict | None:
    try:
        out = json.loads(value)
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


# ------------------------------------------------------------------------------ data state


def pack_data_state(state: Any) -> Any:
    """What a checkpoint stores as the data position: the iterator state itself in a single
    process; every process's state (gathered, in process order) in a multi-process run."""
    rt = current()
    if not rt.multi:
        return state
    import numpy as np
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(state, sort_keys=True).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([raw.size], np.int64))
    longest = int(np.max(sizes))
    padded = np.zeros(longest, np.uint8)
    padded[: raw.size] = raw
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(rt.process_count, -1)
    states = [
        json.loads(bytes(row[: int(n)]).decode())
        for row, n in zip(every, np.asarray(sizes).reshape(-1), strict=True)
    ]
    return {"toonjax_process_states": states}


def unpack_data_state(saved: Any, where: str) -> Any:
    """This process's iterator state from a checkpoint written by any number of processes.

    Batch k of the stream is the same global batch whatever the process count (each process
    reads its rows of it), so every process's position is the same batch index: a checkpoint of
    N processes resumes on M. States that disagree cannot be re-split: one-line error."""
    if not isinstance(saved, dict) or "toonjax_process_states" not in saved:
        return saved  # written by a single process
    states = saved["toonjax_process_states"]
    rt = current()
    if len(states) == rt.process_count:
        return states[rt.process_index]
    if all(s == states[0] for s in states):
        return states[0]
    raise TrainingError(
        f"{where} was written by {len(states)} processes whose data positions differ; it "
        f"resumes only with {len(states)} processes (this run has {rt.process_count})"
    )


# ------------------------------------------------------------------------------ stderr filter

_GLOG = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([\w.+-]+):\d+\]")
_RUNTIME_SOURCES = re.compile(
    rb"coordination|preemption|client\.(h|cc)|distributed|barrier|service\.cc|pair\.cc|grpc"
)
_FATAL = b"Terminating process because the JAX distributed service detected fatal errors"
_HOLD_S = 3.0


def _start_stderr_filter(rt: Runtime) -> subprocess.Popen | None:
    """Routes this process's stderr (fd 2) through a filter process that passes everything
    through, except that the runtime's fatal report (another process died or hung) becomes one
    line naming that process. The filter ignores SIGINT/SIGTERM and ends at end of input."""
    if os.environ.get("TOONJAX_NO_STDERR_FILTER"):
        return None
    try:
        sys.stderr.flush()
        original = os.dup(2)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "toonjax.train.distributed",
                "stderr-filter",
                str(rt.process_index),
                str(rt.process_count),
                rt.coordinator or "?",
                str(int(rt.heartbeat_timeout_s)),
            ],
            stdin=subprocess.PIPE,
            stdout=original,
            stderr=original,
            close_fds=True,
        )
        os.dup2(proc.stdin.fileno(), 2)
        proc.stdin.close()
        os.close(original)
        return proc
    except OSError:
        return None


def diagnose(text: str, me: int, count: int, coordinator: str, heartbeat: int) -> str:
    """One line from the runtime's fatal report (the text of its log records)."""
    ids: list[str] = []
    m = re.search(r"stopped sending heartbeats\)?:?\s*((?:\d+[\s,]*)+)", text)
    if m:
        ids = re.findall(r"\d+", m.group(1))
        # This process is alive to report: when its own heartbeat was late too (a loaded
        # machine), the others listed are the ones that stopped.
        ids = [i for i in ids if i != str(me)] or ids
    if not ids:
        ids = sorted(set(re.findall(r"/task:(\d+)", text)) - {str(me)})
    if ids:
        who = "process " + ids[0] if len(ids) == 1 else "processes " + ", ".join(ids)
        what = f"{who} stopped sending heartbeats (limit {heartbeat} s: killed, crashed or hung)"
    elif me != 0 and re.search(
        r"Socket closed|Connection refused|Connection reset|UNAVAILABLE|failed to connect", text
    ):
        what = (
            f"process 0 (the coordinator, {coordinator}) is gone (killed, crashed or unreachable)"
        )
    else:
        detail = next(
            (ln.strip() for ln in text.splitlines() if "Terminating process" not in ln and ln),
            "",
        )
        detail = re.sub(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+\] ", "", detail)[:200]
        what = f"the JAX distributed runtime reported a fatal error ({detail})"
    return (
        f"toonjax: error: process {me} of {count} stopped: {what}; the last checkpoint "
        "stands: start the same command on every process to resume"
    )


def _could_be_record(partial: bytes) -> bool:
    """Whether an unfinished line may still turn out to be a runtime log record."""
    return bool(_GLOG.match(partial) or re.fullmatch(rb"[IWEF][\d :.]{0,24}", partial))


def _filter_main(argv: list[str]) -> int:
    me, count, coordinator, heartbeat = int(argv[0]), int(argv[1]), argv[2], int(argv[3])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    out = sys.stdout.buffer
    src = sys.stdin.buffer.fileno()
    buf = b""
    held: list[bytes] = []
    held_since = 0.0
    fatal: list[bytes] | None = None
    last = [b"\n"]

    def write(data: bytes) -> None:
        if not data:
            return
        try:
            out.write(data)
            out.flush()
            last[0] = data[-1:]
        except OSError:
            pass

    def flush_held() -> None:
        nonlocal held
        if held:
            write(b"".join(held))
            held = []

    def handle(line: bytes) -> None:
        nonlocal fatal, held_since
        if fatal is not None:
            fatal.append(line)
            return
        if _FATAL in line:
            fatal = [*held, line]
            held.clear()
            return
        m = _GLOG.match(line)
        if (m and line[:1] in b"EFW" and _RUNTIME_SOURCES.search(m.group(1))) or held:
            if not held:
                held_since = time.monotonic()
            held.append(line)  # the runtime's records (and what follows them) wait a moment
            return
        write(line)

    while True:
        ready, _, _ = select.select([src], [], [], 0.5)
        if ready:
            data = os.read(src, 65536)
            if not data:
                break
            buf += data
            while True:
                cut = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0), default=-1)
                if cut < 0:
                    break
                handle(buf[: cut + 1])
                buf = buf[cut + 1 :]
            if buf and fatal is None and not held and not _could_be_record(buf):
                write(buf)  # a progress bar's partial line: show it now
                buf = b""
        if held and fatal is None and time.monotonic() - held_since > _HOLD_S:
            flush_held()
    if buf:
        handle(buf + b"\n")
    if fatal is not None:
        text = b"".join(fatal).decode("utf-8", "replace")
        line = diagnose(text, me, count, coordinator, heartbeat) + "\n"
        write(("" if last[0] == b"\n" else "\n").encode() + line.encode())
        return 0
    flush_held()
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "stderr-filter":
    sys.exit(_filter_main(sys.argv[2:]))
