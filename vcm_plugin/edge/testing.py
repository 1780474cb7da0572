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

    def __init__(
        self,
        store: str | os.PathLike[str],
        log: str | os.PathLike[str],
        port: int = 0,
        host: str = "127.0.0.1",
        timeout: float = 120.0,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
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
                vcm_command(
                    "edge",
                    "serve",
                    "--store",
                    self.store,
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    *self.args,
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VCMError(
                    f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
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


def http_call(
    url: str,
    method: str,
    path: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 60.0,
) -> tuple[int, dict[str, str], bytes]:
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


def postgres_bindir() -> Path | None:
    """The PostgreSQL server binaries: ``$VCM_PG_BINDIR``, ``pg_config --bindir``, or
    Debian's /usr/lib/postgresql/N/bin (newest). None if there is no server to start."""
    import glob
    import shutil

    candidates = [os.environ.get("VCM_PG_BINDIR", "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(re.sub(r"\D", "", p) or 0),
        reverse=True,
    )
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


class PostgresServer:
    """A throw-away PostgreSQL server (initdb + pg_ctl in a temp folder, trust auth on
    127.0.0.1) for tests and the index benchmark. PostgreSQL refuses to run as root, so as
    root the folder is given to the ``postgres`` user and the commands run as that user."""

    def __init__(self, port: int = 0, fsync: bool = False) -> None:
        import socket
        import tempfile

        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise VCMError("no PostgreSQL server binaries (Debian: apt-get install postgresql)")
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port, self.fsync = port, fsync
        self.folder = Path(tempfile.mkdtemp(prefix="vcm-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.user = None
        if os.geteuid() == 0:
            import pwd

            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise VCMError(
                    "running as root and there is no 'postgres' user to run the server as"
                ) from None
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.url = f"postgresql://vcm@127.0.0.1:{port}/postgres"
        self._initdb()

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise VCMError(f"{args[0]} failed: {(r.stderr or r.stdout).strip()[-500:]}")
        return r

    def _initdb(self) -> None:
        self._cmd(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "vcm",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def start(self) -> PostgresServer:
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200 "
            "-c shared_buffers=256MB"
        )
        self._cmd(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clean shutdown; ``immediate``: like a crash of the database server."""
        self._cmd("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def cleanup(self) -> None:
        import shutil

        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
