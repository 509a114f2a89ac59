"""``python -m glandseg_core ARGS`` in a process of its own, without paying Python's and torch's start each time.

A fresh interpreter spends 5-10 s on two busy cores importing torch, torchvision and glandseg_core before the
command does anything; the CLI tests start dozens. Here a fork server (``multiprocessing``'s ``forkserver``
start method, started once per test session) imports ``glandseg_core.cli`` once, and each command runs in a
child forked from it: its own process and pid (``kill -9`` works), its own environment, working folder, stdout
and stderr, exit code from ``main()`` as ``python -m glandseg_core`` gives it (uncaught exception: traceback
and 1; ``SystemExit``: its code), atexit handlers run at the end. The server never runs a torch operation, so
the children fork before any OpenMP thread exists; ``OMP_NUM_THREADS`` in the child's environment is applied
with ``torch.set_num_threads`` (a fresh process reads it at start). The server imports no plugin: glandseg
reads ``GLANDSEG_PLUGINS`` at the first use of the registry, in the child. The training of tests/test_cli.py
and the other tests that start ``python -m glandseg_core`` themselves still cover the entry point and its
imports in a fresh interpreter.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.machinery
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import traceback
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "glandseg_core" / "__main__.py")  # sys.argv[0] of ``python -m glandseg_core``

_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload(["glandseg_core.cli", "tests.cliproc"])


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _child(argv: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    """Runs in the forked child: the process ``python -m glandseg_core *argv`` would be, then exits."""
    code = 1
    try:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        if err == out:
            os.dup2(fd, 2)
        else:
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        sys.argv = [MAIN, *argv]
        import torch

        if env.get("OMP_NUM_THREADS", "").isdigit():
            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        from glandseg_core.cli import main

        code = main(argv)
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


@contextlib.contextmanager
def _no_main() -> Iterator[None]:
    """Start children with no ``__main__`` to re-run: multiprocessing re-runs the parent's ``__main__`` in each
    child, and after a Streamlit AppTest that is the last page the test ran (Streamlit leaves it there), which
    would draw that page again in every child (and use the registry before the child's plugins are set)."""
    saved = sys.modules["__main__"]
    stub = types.ModuleType("__main__")
    stub.__spec__ = importlib.machinery.ModuleSpec("tests.cliproc.__main__", None)  # skipped by name
    sys.modules["__main__"] = stub
    try:
        yield
    finally:
        sys.modules["__main__"] = saved


class Proc:
    """A started command, with the parts of :class:`subprocess.Popen` the tests use."""

    def __init__(
        self,
        args: Sequence[object],
        env: Mapping[str, str],
        cwd: Path | str = REPO,
        log: Path | None = None,
    ) -> None:
        self.argv = [str(a) for a in args]
        self.args = [sys.executable, "-m", "glandseg_core", *self.argv]
        self.returncode: int | None = None
        self._tmp = None
        if log is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cliproc-")
            self._out, self._err = (os.path.join(self._tmp.name, n) for n in ("out", "err"))
        else:  # stdout and stderr together into one file, as Popen(stdout=f, stderr=STDOUT)
            self._out = self._err = str(log)
        self._proc = _CTX.Process(
            target=_child, args=(self.argv, dict(env), str(cwd), self._out, self._err)
        )
        with _no_main():
            self._proc.start()
        assert self._proc.pid is not None
        self.pid = self._proc.pid

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._proc.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.returncode = self._proc.exitcode
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end (killing the command past ``timeout``, then raising), then its stdout and stderr."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        out = _read(self._out)
        err = "" if self._err == self._out else _read(self._err)
        if self._tmp is not None:
            self._tmp.cleanup()
        return out, err


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:  # the child died before it opened its output
        return ""


def run(
    args: Sequence[object], env: Mapping[str, str], cwd: Path | str = REPO, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, -m, glandseg_core, *args], capture_output=True, text=True)``, forked."""
    proc = Proc(args, env, cwd)
    out, err = proc.communicate(timeout)
    return subprocess.CompletedProcess(proc.args, proc.wait(), out, err)
