"""A private, real redis-server for the tests.

The suite never uses fakes: it starts `redis-server` on a free loopback port (or uses
GATEWAY_TEST_REDIS_URL), and fails loudly when neither is possible.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass
class RedisServer:
    """A redis-server process this test session owns (so it may kill or restart it)."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="gw-redis-"))
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: the tests need a real Redis "
                "(apt-get install redis-server), or set GATEWAY_TEST_REDIS_URL"
            )
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--loglevel", "warning",
             *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # up (maybe with a password)
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not come up on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def session_redis_url() -> tuple[str, RedisServer | None]:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL")
    if url:
        return url, None
    server = RedisServer().start()
    return server.url, server


@dataclass
class RedisClusterServers:
    """A real three-master Redis Cluster on free loopback ports (no replicas), for the store
    contract suite: every multi-key script and transaction must stay within one slot."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url.rsplit("/", 1)[0]

    def start(self, size: int = 3) -> RedisClusterServers:
        try:
            return self._start(size)
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise

    def _start(self, size: int) -> RedisClusterServers:
        import redis

        for _ in range(size):
            node = RedisServer(port=free_cluster_port())
            node.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file",
                               f"{node.workdir}/nodes.conf", "--cluster-node-timeout", "2000"]
            self.nodes.append(node.start())
        per = 16384 // size
        clients = [redis.Redis(port=n.port) for n in self.nodes]
        try:
            for i, c in enumerate(clients):
                last = 16383 if i == size - 1 else (i + 1) * per - 1
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
            for n in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
            deadline = time.monotonic() + 20
            while not all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO")
                          for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("the test Redis Cluster did not converge")
                time.sleep(0.1)
        finally:
            for c in clients:
                c.close()
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
