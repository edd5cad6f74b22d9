"""The stateful servers of the platform as private processes that a scenario can stop, restart or
flush: Redis with append-only persistence, a PostgreSQL cluster of its own, a moto S3 server, and a
TCP relay that stands in front of a server so that an outage (connection refused) can be switched
on and off without losing the server's state (moto keeps its objects only in memory)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from workers.benchmarks.harness.ports import free_port, port_open, wait_port

PG_BIN = Path(os.environ.get("TSMINDEX_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ProcessGroup:
    """One command in a session of its own, so that a stop or a kill reaches all its children."""

    def __init__(
        self, command: list[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ):
        self.command, self.log, self.env, self.cwd = command, log, env, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.command[0]} is not running")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running():
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=out, env=self.env, cwd=self.cwd, start_new_session=True
            )

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group, as the OOM killer or a lost host does; waits for the leader."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        _wait_group_gone(self.proc.pid if self.proc else None, timeout_s=30)

    def stop(self, *, timeout_s: float = 30.0) -> None:
        if not self.running():
            return
        assert self.proc is not None
        self.signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(timeout=30)
        _wait_group_gone(self.proc.pid, timeout_s=timeout_s)


def _wait_group_gone(pgid: int | None, *, timeout_s: float) -> None:
    """Wait until no process of group ``pgid`` is left (children may outlive their leader)."""
    if pgid is None:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)


class RedisServer:
    """A private redis-server on a free port, persisting every write to its append-only file."""

    def __init__(self, workdir: Path, *, appendonly: bool = True):
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        aof = "yes" if appendonly else "no"
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", aof, "--appendfsync", "always", "--dir", str(workdir)]
        self._group = ProcessGroup(command, log=workdir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._group.start()
        wait_port(self.port, proc=self._group.proc)

    def stop(self) -> None:
        self._group.stop()

    def flushall(self) -> None:
        """The broker loses every message at once (a wiped or replaced Redis)."""
        import redis

        with redis.Redis(port=self.port) as client:
            client.flushall()


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb, pg_ctl) on a free port, trust auth on loopback.

    The cluster lives in a directory the ``postgres`` user owns (it refuses to run as root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="tsmindex-pg-"))
        self.data = self.base / "data"
        os.chmod(self.base, 0o755)
        shutil.chown(self.base, "postgres", "postgres")
        self._as_postgres(
            PG_BIN / "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )

    def _as_postgres(self, *command: str | Path, timeout_s: float = 120) -> None:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, command)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=self.base,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{result.stdout}\n{result.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.data, "-l", self.base / "pg.log", "-o", options, "-w", "start"
        )

    def stop(self, *, mode: str = "fast") -> None:
        """``fast`` ends every session (as a restart does); ``immediate`` is a crash."""
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return port_open(self.port)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        if self.running():
            self.stop(mode="immediate")
        shutil.rmtree(self.base, ignore_errors=True)


class MotoServer:
    """A moto S3 server on a free port (its objects live in its memory)."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        moto = Path(sys.executable).with_name("moto_server")
        command = [str(moto), "-H", "127.0.0.1", "-p", str(self.port)]
        self._group = ProcessGroup(command, log=workdir / "moto.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._group.start()
        wait_port(self.port, proc=self._group.proc)

    def stop(self) -> None:
        self._group.stop()


class Relay:
    """A TCP relay from a free loopback port to ``target_port``. ``down()`` refuses new connections
    and cuts the open ones, as a server that went away does; ``up()`` serves again on the same port."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(256)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)  # shutdown wakes the thread blocked in accept() (close alone does not)
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            _close(conn)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)
            with self._lock:
                self._conns -= {src, dst}


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
