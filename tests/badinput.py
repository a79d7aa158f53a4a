"""Helpers for the bad-input corpus (tests/test_bad_inputs_*.py).

`run_cli` runs `toonjax ARGS...` in a subprocess, optionally under an address-space limit
(RLIMIT_AS), so a hostile file that makes a reader allocate without bound fails the test with
MemoryError / a kill instead of taking the machine down. `assert_one_line_error` checks the
contract every user-fixable error keeps: exit status 2, one line on stderr starting with
"toonjax: error:", no traceback, and the named fragments in that line.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# jax/XLA reserve a lot of virtual address space at start-up (thread pools, allocators); this
# limit still leaves every real command room and stops any reader that materialises GiBs.
DEFAULT_AS_LIMIT = 6 << 30


def _env() -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)  # one device: the fake 8 of the test session are not needed
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def run_cli(
    args: list[str],
    *,
    cwd: str | os.PathLike | None = None,
    as_limit: int | None = DEFAULT_AS_LIMIT,
    timeout: float = 300,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """`toonjax ARGS` in a subprocess (text output captured), memory-capped when as_limit."""

    def limit() -> None:
        if as_limit:
            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))

    full_env = _env()
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import sys; from toonjax.cli import main; sys.exit(main())", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        preexec_fn=limit,
    )


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return "\n".join(lines)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, rc: int = 2) -> str:
    """Exit status `rc`, exactly one 'toonjax: error:' line with each fragment, no traceback."""
    text = proc.stderr
    assert "Traceback" not in text, f"traceback instead of one line:\n{text[-4000:]}"
    assert proc.returncode == rc, f"exit status {proc.returncode} (want {rc}):\n{text[-4000:]}"
    errors = [ln for ln in text.splitlines() if ln.startswith("toonjax: error:")]
    assert len(errors) == 1, f"want one 'toonjax: error:' line, got:\n{text[-4000:]}"
    line = errors[0]
    for frag in fragments:
        assert frag.lower() in line.lower(), f"{frag!r} not in the error line: {line}"
    return line


def snapshot(path: str | os.PathLike) -> dict[str, str]:
    """{relative path: sha256} of every file under `path` (or of `path` itself), for
    'the user's files are unchanged' checks. Symlinks and special files are recorded by kind."""
    root = Path(path)
    out: dict[str, str] = {}
    if root.is_file() and not root.is_symlink():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "symlink:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


_MANY = r"""
import contextlib, io, json, sys, time, traceback
from toonjax.cli import main

for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 1
    record = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(),
              "seconds": time.perf_counter() - start}
    sys.__stdout__.write("@@toonjax-call@@" + json.dumps(record) + "\n")
    sys.__stdout__.flush()
"""


def run_cli_many(
    calls: list[list[str]],
    *,
    cwd: str | os.PathLike | None = None,
    as_limit: int | None = DEFAULT_AS_LIMIT,
    timeout: float = 300,
    env: dict | None = None,
) -> list[subprocess.CompletedProcess]:
    """Like `run_cli` for several commands, run one after another in ONE memory-capped
    subprocess (jax is imported once). Each call gets its own CompletedProcess: its exit
    status, what it printed to sys.stdout / sys.stderr (an uncaught exception's traceback
    included), and `.seconds` (its wall time). If the process dies (a crash, or killed at
    the memory cap), the calls it did not finish get its exit status and its stderr."""

    def limit() -> None:
        if as_limit:
            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))

    full_env = _env()
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", _MANY, json.dumps(calls)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        preexec_fn=limit,
    )
    records = [
        json.loads(line[len("@@toonjax-call@@") :])
        for line in proc.stdout.splitlines()
        if line.startswith("@@toonjax-call@@")
    ]
    results = []
    for i, args in enumerate(calls):
        if i < len(records):
            r = records[i]
            cp = subprocess.CompletedProcess(args, r["rc"], r["stdout"], r["stderr"])
            cp.seconds = r["seconds"]
        else:
            died = f"(the process ended with status {proc.returncode} before this call ended)"
            cp = subprocess.CompletedProcess(args, proc.returncode, "", proc.stderr + died)
            cp.seconds = float("nan")
        results.append(cp)
    return results
