"""Drive a real IPython kernel from a test, the way a notebook frontend does.

Cell-defined functions only exist in a kernel's ``__main__``, output routing only shows on
the kernel's IOPub channel, and interrupts only arrive as SIGINT to the kernel's process
group: the honest test for mpnb is a real ipykernel started through ``jupyter_client``.

``KernelHarness.start()`` launches ``sys.executable -m ipykernel_launcher`` (the
interpreter running the tests, whatever kernelspecs are installed) and offers:

- ``execute(code)`` -> ``ExecResult``: status, the cell's own stdout/stderr, every stream
  message seen meanwhile (whatever cell it belongs to), the error, the result, displays;
- ``submit(code)`` / ``wait(msg_id)``: the same in two steps, to act while a cell runs;
- ``collect_iopub(timeout)``: messages that arrive after a cell finished (late output);
- ``interrupt()``, ``restart()``, ``shutdown()``, ``kernel_pid``, ``children()``;
- ``close()``: shut down, then fail if any process the kernel ever had is still alive.

What the kernel process writes to its own stdout/stderr (what a user would see in the
terminal that runs Jupyter) goes to a log file: ``terminal_output()``.
"""

from __future__ import annotations

import ast
import os
import queue
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import leaks
import psutil

__all__ = ["ExecResult", "KernelError", "KernelHarness", "strip_ansi"]

# Seconds a kernel gets to start and answer a kernel_info request; generous because the
# machines running the suite are small and busy.
STARTUP_TIMEOUT = 90.0

# Seconds the processes a kernel had get to exit after it shut down.
EXIT_GRACE = 5.0

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (tracebacks come coloured)."""
    return _ANSI.sub("", text)


@dataclass
class KernelError:
    """An error the kernel reported for a cell."""

    ename: str
    evalue: str
    traceback: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.traceback) or f"{self.ename}: {self.evalue}"

    def __str__(self) -> str:
        return self.text


@dataclass
class ExecResult:
    """Everything a frontend would have seen for one execute request."""

    msg_id: str
    code: str
    # 'ok', 'error' or 'aborted', from the execute_reply.
    status: str
    execution_count: int | None
    # Text of the stream messages whose parent is this request.
    stdout: str
    stderr: str
    # (name, text, parent msg_id) of every stream message seen while waiting, any parent.
    streams: list[tuple[str, str, str | None]]
    error: KernelError | None
    # text/plain of the execute_result, and its whole mime bundle.
    result: str | None
    result_data: dict[str, Any] | None
    # display_data / update_display_data of this request: content plus 'msg_type'.
    displays: list[dict[str, Any]]
    # Every IOPub message seen from the request to its idle status, raw.
    messages: list[dict[str, Any]] = field(repr=False)
    reply: dict[str, Any] = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def raise_for_error(self) -> ExecResult:
        if self.status != "ok":
            raise AssertionError(
                f"cell failed ({self.status}):\n{_indent(self.code)}\n"
                f"--- traceback ---\n{self.error.text if self.error else '(none)'}\n"
                f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
            )
        return self


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _parent_id(msg: dict[str, Any]) -> str | None:
    return (msg.get("parent_header") or {}).get("msg_id")


def _kernel_argv() -> list[str]:
    argv = [sys.executable]
    if sys.version_info >= (3, 11):
        # As ipykernel's own kernelspec does: keeps the debugger from warning on stderr.
        argv.append("-Xfrozen_modules=off")
    return argv + ["-m", "ipykernel_launcher", "-f", "{connection_file}"]


def _spec_manager():
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class ThisInterpreter(KernelSpecManager):
        """Every kernel name resolves to an ipykernel on the running interpreter."""

        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(
                argv=_kernel_argv(),
                display_name=f"Python {sys.version_info.major}.{sys.version_info.minor}",
                language="python",
                metadata={},
                resource_dir="",
            )

    return ThisInterpreter()


class KernelHarness:
    """One running ipykernel and a client connected to it. Build it with ``start()``."""

    def __init__(
        self, km: Any, kc: Any, log_path: str, tmpdir: tempfile.TemporaryDirectory, log: Any
    ):
        self.km = km
        self.kc = kc
        self._log_path = log_path
        self._tmpdir = tmpdir
        self._log = log
        self._iopub: list[dict[str, Any]] = []
        self._start_index: dict[str, int] = {}
        self._replies: dict[str, dict[str, Any]] = {}
        self._codes: dict[str, str] = {}
        self._seen: set[psutil.Process] = set()
        self._closed = False
        self.kernel_pid: int | None = self._read_pid()
        self._remember_kernel()

    # -- life cycle ---------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = STARTUP_TIMEOUT,
    ) -> KernelHarness:
        """Start a kernel on ``sys.executable``; ``env`` adds to (not replaces) os.environ."""
        from jupyter_client.manager import KernelManager

        tmpdir = tempfile.TemporaryDirectory(prefix="mpnb-kernel-")
        log_path = os.path.join(tmpdir.name, "kernel.log")
        log = open(log_path, "wb", buffering=0)
        kernel_env = dict(os.environ)
        kernel_env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        kernel_env.setdefault("JUPYTER_PLATFORM_DIRS", "1")
        kernel_env.update(env or {})
        km = KernelManager(kernel_name="python3", kernel_spec_manager=_spec_manager())
        km.start_kernel(
            env=kernel_env,
            cwd=cwd or os.getcwd(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=timeout)
        except Exception as exc:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
            log.close()
            with open(log_path, errors="replace") as f:
                out = f.read()
            tmpdir.cleanup()
            raise AssertionError(f"kernel did not start within {timeout} s: {exc}\n{out}") from exc
        return cls(km, kc, log_path, tmpdir, log)

    def _read_pid(self) -> int | None:
        prov = getattr(self.km, "provisioner", None)
        proc = getattr(prov, "process", None)
        pid = getattr(proc, "pid", None) or getattr(prov, "pid", None)
        return int(pid) if pid else None

    def _remember_kernel(self) -> None:
        if self.kernel_pid is not None:
            try:
                self._seen.add(psutil.Process(self.kernel_pid))
            except psutil.Error:
                pass

    def interrupt(self) -> None:
        """SIGINT to the kernel's process group, as a frontend's interrupt button does."""
        self.km.interrupt_kernel()

    def restart(self, now: bool = False, timeout: float = STARTUP_TIMEOUT) -> None:
        """Restart the kernel (``now=True``: kill it instead of asking it to shut down)."""
        self.children()
        old = self.kernel_pid
        self.km.restart_kernel(now=now)
        self.kc.wait_for_ready(timeout=timeout)
        self.kernel_pid = self._read_pid()
        self._remember_kernel()
        assert self.kernel_pid != old, "restart_kernel kept the same kernel process"

    def shutdown(self, now: bool = False) -> None:
        """Stop the kernel (idempotent). ``close()`` also checks nothing it started survives."""
        if self._closed:
            return
        self._closed = True
        self.children()
        try:
            self.kc.stop_channels()
        finally:
            try:
                if self.km.has_kernel:
                    self.km.shutdown_kernel(now=now)
            finally:
                self._log.close()

    def close(self, grace: float = EXIT_GRACE) -> None:
        """Shut down, then fail (after killing them) if processes the kernel had survive."""
        try:
            self.shutdown()
            left = leaks.wait_gone(self._seen, grace)
            if left:
                report = leaks.describe(left)
                leaks.reap(left)
                raise AssertionError(
                    f"{len(left)} process(es) started by the kernel still alive {grace:g} s "
                    f"after it shut down (now killed):\n{report}\n"
                    f"--- kernel terminal output (tail) ---\n{self.terminal_output()[-3000:]}"
                )
        finally:
            self._tmpdir.cleanup()

    def __enter__(self) -> KernelHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes ----------------------------------------------------------------------

    def children(self, helpers: bool = True) -> list[psutil.Process]:
        """Live descendants of the kernel process (``helpers=False``: without the resource
        tracker and forkserver). Every process seen here is checked again at close()."""
        if self.kernel_pid is None or self._closed and not self._alive_kernel():
            return []
        try:
            procs = psutil.Process(self.kernel_pid).children(recursive=True)
        except psutil.Error:
            return []
        live = []
        for p in procs:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            self._seen.add(p)
            if helpers or not leaks.is_long_lived(p):
                live.append(p)
        return live

    def _alive_kernel(self) -> bool:
        try:
            return self.kernel_pid is not None and psutil.Process(self.kernel_pid).is_running()
        except psutil.Error:
            return False

    def terminal_output(self) -> str:
        """What the kernel process and its children wrote to their inherited fds 1 and 2."""
        try:
            with open(self._log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- execution ----------------------------------------------------------------------

    def submit(self, code: str) -> str:
        """Send an execute_request and return its msg_id without waiting."""
        # stop_on_error=False: every cell here is sent after the previous one finished, so
        # there is never a queued cell to abort; ipykernel < 7 also aborts a request that
        # comes right after a failed cell (a race), and these tests send them that fast.
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        self._start_index[msg_id] = len(self._iopub)
        self._codes[msg_id] = code
        return msg_id

    def execute(self, code: str, timeout: float = 60) -> ExecResult:
        """Run ``code`` as a cell and return what the frontend saw (see ExecResult)."""
        return self.wait(self.submit(code), timeout=timeout)

    def ensure_ok(self, code: str, timeout: float = 60) -> ExecResult:
        """``execute`` that raises AssertionError with the traceback if the cell failed."""
        return self.execute(code, timeout=timeout).raise_for_error()

    def evaluate(self, expr: str, timeout: float = 60) -> Any:
        """The value of a Python literal expression computed in the kernel."""
        res = self.ensure_ok(expr, timeout=timeout)
        assert res.result is not None, f"{expr!r} gave no result"
        return ast.literal_eval(res.result)

    def wait(self, msg_id: str, timeout: float = 60) -> ExecResult:
        """Wait until the kernel is idle for request ``msg_id``; gather what it sent."""
        start = self._start_index[msg_id]
        deadline = time.monotonic() + timeout
        end = self._find_idle(msg_id, start)
        while end is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(msg_id, timeout)
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            self._iopub.append(msg)
            if self._is_idle_for(msg, msg_id):
                end = len(self._iopub) - 1
        reply = self._shell_reply(msg_id, max(deadline - time.monotonic(), 5.0))
        self.children()
        return self._result(msg_id, self._iopub[start : end + 1], reply)

    def collect_iopub(
        self, timeout: float = 2.0, until: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        """IOPub messages arriving within ``timeout`` s (raw), stopping early at the first
        message for which ``until(msg)`` is true (that one included)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self._iopub.append(msg)
            got.append(msg)
            if until is not None and until(msg):
                break
        return got

    @staticmethod
    def stream_text(
        messages: list[dict[str, Any]], name: str | None = None, parent: str | None = None
    ) -> str:
        """Concatenated text of the stream messages in ``messages`` (filtered by stream
        name and parent msg_id when given)."""
        return "".join(
            m["content"].get("text", "")
            for m in messages
            if m.get("msg_type") == "stream"
            and (name is None or m["content"].get("name") == name)
            and (parent is None or _parent_id(m) == parent)
        )

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _is_idle_for(msg: dict[str, Any], msg_id: str) -> bool:
        return (
            msg.get("msg_type") == "status"
            and msg["content"].get("execution_state") == "idle"
            and _parent_id(msg) == msg_id
        )

    def _find_idle(self, msg_id: str, start: int) -> int | None:
        for i in range(start, len(self._iopub)):
            if self._is_idle_for(self._iopub[i], msg_id):
                return i
        return None

    def _shell_reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while msg_id not in self._replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no execute_reply for {msg_id} within {timeout:.0f} s")
            try:
                msg = self.kc.get_shell_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            pid = _parent_id(msg)
            if pid is not None:
                self._replies[pid] = msg
        return self._replies.pop(msg_id)

    def _timed_out(self, msg_id: str, timeout: float) -> None:
        code = self._codes.get(msg_id, "")
        seen = self._iopub[self._start_index[msg_id] :]
        printed = self.stream_text(seen)
        # Leave the kernel usable for the teardown: interrupt and drain briefly.
        try:
            self.interrupt()
            self.collect_iopub(5.0, until=lambda m: self._is_idle_for(m, msg_id))
        except Exception:
            pass
        raise AssertionError(
            f"cell did not finish within {timeout:g} s (kernel interrupted):\n{_indent(code)}\n"
            f"--- output so far ---\n{printed[-3000:]}\n"
            f"--- kernel terminal output (tail) ---\n{self.terminal_output()[-3000:]}"
        )

    def _result(self, msg_id: str, msgs: list[dict[str, Any]], reply: dict[str, Any]) -> ExecResult:
        out: list[str] = []
        err: list[str] = []
        streams: list[tuple[str, str, str | None]] = []
        error: KernelError | None = None
        result = result_data = None
        displays: list[dict[str, Any]] = []
        for m in msgs:
            kind, content, mine = m.get("msg_type"), m.get("content", {}), _parent_id(m) == msg_id
            if kind == "stream":
                streams.append((content.get("name", ""), content.get("text", ""), _parent_id(m)))
                if mine:
                    (out if content.get("name") == "stdout" else err).append(
                        content.get("text", "")
                    )
            elif not mine:
                continue
            elif kind == "error":
                error = KernelError(
                    content.get("ename", ""),
                    content.get("evalue", ""),
                    [strip_ansi(line) for line in content.get("traceback", [])],
                )
            elif kind == "execute_result":
                result_data = content.get("data", {})
                result = result_data.get("text/plain")
            elif kind in ("display_data", "update_display_data"):
                displays.append({"msg_type": kind, **content})
        rc = reply.get("content", {})
        status = rc.get("status", "unknown")
        if error is None and status == "error":
            error = KernelError(
                rc.get("ename", ""),
                rc.get("evalue", ""),
                [strip_ansi(x) for x in rc.get("traceback", [])],
            )
        return ExecResult(
            msg_id=msg_id,
            code=self._codes.pop(msg_id, ""),
            status=status,
            execution_count=rc.get("execution_count"),
            stdout="".join(out),
            stderr="".join(err),
            streams=streams,
            error=error,
            result=result,
            result_data=result_data,
            displays=displays,
            messages=msgs,
            reply=reply,
        )


# -- reading IOPub stream messages ---------------------------------------------------------

TAG = re.compile(r"^\[(stdout|stderr):([^\]]+)\] ")


def streams(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``stream`` messages among ``messages``."""
    return [m for m in messages if m.get("msg_type") == "stream"]


def parent_of(msg: dict[str, Any]) -> str | None:
    """The msg_id of the request (the cell) a message answers."""
    return (msg.get("parent_header") or {}).get("msg_id")


def untagged(text: str) -> list[str]:
    """The lines of ``text`` without their ``[stdout:name]`` tags."""
    return [TAG.sub("", line) for line in text.splitlines()]


def messages_with(messages: list[dict[str, Any]], needle: str) -> list[dict[str, Any]]:
    """The stream messages whose text holds ``needle``."""
    return [m for m in streams(messages) if needle in m["content"]["text"]]


# -- terminal IPython -------------------------------------------------------------------


def run_terminal_ipython(
    code: str, timeout: float, cwd: str | os.PathLike[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``code`` typed into a real terminal IPython (no colours, banner or history)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "IPython",
            "--simple-prompt",
            "--no-banner",
            "--colors=nocolor",
            "--HistoryManager.enabled=False",
        ],
        input=code,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, TERM="dumb"),
        cwd=cwd,
    )
