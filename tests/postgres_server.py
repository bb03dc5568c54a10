"""A private, real PostgreSQL server for the tests (and the benchmark).

Like tests/redis_server.py: the suite never uses fakes. It runs `initdb` into a temporary
directory and `pg_ctl start` on a free loopback port (or uses GATEWAY_TEST_DATABASE_URL), and
fails loudly when neither is possible. PostgreSQL refuses to run as root, so when the tests run
as root (CI does) the server runs as the `postgres` system user that Debian's postgresql
package creates (`runuser`, which needs no terminal and no password); otherwise as the caller.

The binaries are looked up on PATH, then under /usr/lib/postgresql/<version>/bin (where
Debian installs them, off PATH). `script/test` installs the package when they are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from tests.redis_server import free_port

__all__ = ["PostgresServer", "pg_binary", "session_database_url"]


def pg_binary(name: str) -> str:
    """The path of a PostgreSQL server binary (initdb, pg_ctl), or a clear failure."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise RuntimeError(
        f"{name} is not installed: the tests need a real PostgreSQL server "
        "(apt-get install postgresql; script/test does it when run as root), "
        "or set GATEWAY_TEST_DATABASE_URL to a disposable database")


def _run_as() -> list[str]:
    """The command prefix that runs a server binary as a non-root user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, and there is no 'postgres' user to run PostgreSQL as "
            "(Debian's postgresql package creates it: apt-get install postgresql)") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root without runuser(1): cannot start PostgreSQL")
    return [runuser, "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    """A PostgreSQL server this test session owns (so it may stop and restart it).

    `durable=False` (tests) turns fsync off for speed; the benchmark keeps PostgreSQL's
    defaults so its figures are those of a server that survives a power cut."""

    port: int = field(default_factory=free_port)
    durable: bool = False
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="gw-pg-"))
    user: str = "gateway"
    database: str = "postgres"  # initdb's own; the tests need no other
    _initialised: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def datadir(self) -> str:
        return os.path.join(self.workdir, "data")

    def _run(self, *args: str, timeout: float = 60) -> None:
        r = subprocess.run([*_run_as(), *args], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, check=False)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).decode(errors="replace")[-800:]
            raise RuntimeError(f"{os.path.basename(args[0])} failed: {tail}")

    def _init(self) -> None:
        if os.geteuid() == 0:
            os.chmod(self.workdir, 0o700)
            shutil.chown(self.workdir, "postgres")
        self._run(pg_binary("initdb"), "-D", self.datadir, "-U", self.user, "-A", "trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        self._initialised = True

    def start(self) -> PostgresServer:
        if not self._initialised:
            self._init()
        options = [f"-p {self.port}", "-h 127.0.0.1", f"-k {self.workdir}",
                   "-c max_connections=200"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off",
                        "-c full_page_writes=off"]
        self._run(pg_binary("pg_ctl"), "-D", self.datadir, "-l",
                  os.path.join(self.workdir, "server.log"), "-w", "-t", "30",
                  "-o", " ".join(options), "start")
        self._wait_accepting()
        return self

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not come up on port {self.port}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash: no checkpoint, recovery at next start)."""
        if not self._initialised or not os.path.exists(os.path.join(self.datadir,
                                                                    "postmaster.pid")):
            return
        self._run(pg_binary("pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "-t", "30",
                  "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def session_database_url() -> tuple[str, PostgresServer | None]:
    url = os.environ.get("GATEWAY_TEST_DATABASE_URL")
    if url:
        return url, None
    server = PostgresServer().start()
    return server.url, server
