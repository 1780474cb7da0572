"""Run the service in a child process: for tests, demos and integration checks.

Why a real process: start-up recovery, a kill -9 and concurrent clients only mean something
against a server that owns its own event loop and file handles.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from vcm_plugin.errors import VCMError

_URL = re.compile(r"serving .* on (http://\S+)")


def vcm_command(*args: str) -> list[str]:
    """``vcm ARGS`` through the current interpreter (works without the console script)."""
    return [sys.executable, "-m", "vcm_plugin.cli", *args]


class ServerProcess:
    """``vcm edge serve`` in a child process; ``url`` once it listens. Output goes to ``log``."""

    def __init__(self, store: str | os.PathLike[str], log: str | os.PathLike[str],
                 port: int = 0, host: str = "127.0.0.1", timeout: float = 120.0,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        """``args``: more ``vcm edge serve`` options (``--tokens-file F``, limits, ...)."""
        self.store, self.log, self.port, self.host = str(store), Path(log), port, host
        self.args, self.env = tuple(args), dict(env or {})
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._starts = 0

    def start(self) -> ServerProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                vcm_command("edge", "serve", "--store", self.store, "--host", self.host,
                            "--port", str(self.port), *self.args),
                stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VCMError(f"server exited with {self.proc.returncode}: "
                               f"{self.log.read_text()[-2000:]}")
            urls = _URL.findall(self.log.read_text())
            if len(urls) > self._starts:
                self.url = urls[-1]
                self._starts += 1
                return self
            time.sleep(0.05)
        self.stop()
        raise VCMError(f"server did not start within {self.timeout} s")

    def kill(self) -> None:
        """SIGKILL: no clean-up code runs, as in a crash or power cut of the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_call(url: str, method: str, path: str, token: str | None = None,
              headers: dict[str, str] | None = None, body: bytes | None = None,
              timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """One raw request (no retries): (status, lower-cased headers, body). For tests that
    check exact HTTP behaviour, which :class:`~vcm_plugin.edge.client.EdgeClient` hides."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``) in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise VCMError(f"no {field} for process {pid}")
