"""A throwaway PostgreSQL cluster from Debian's binaries, for the fleet-store tests.

::

    cluster = PostgresCluster.find()        # None when no PostgreSQL binaries are installed
    cluster.start()                          # initdb + pg_ctl in a temp dir, unix socket only
    cluster.start(durable=True)              # the same, with fsync and synchronous commits
    url = cluster.create_database("t1")      # postgresql://postgres@/t1?host=…&port=…
    cluster.stop()                           # stops the server and removes the directory

As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
Durability is switched off by default (``fsync=off``, ``synchronous_commit=off``,
``full_page_writes=off``): the data lives for one test session. ``start(durable=True)`` keeps
PostgreSQL's defaults (each commit waits for its WAL to reach the disk, as in production): the
benchmarks time the server with them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root: Path | None = None
        self.port = _free_port()
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None

    @classmethod
    def find(cls) -> PostgresCluster | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
        for initdb in found:
            return cls(Path(initdb).parent)
        on_path = shutil.which("initdb")
        return cls(Path(on_path).parent) if on_path else None

    def __repr__(self) -> str:
        return f"PostgresCluster({self.bindir}, port={self.port}, root={self.root})"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "sock"

    def _cmd(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", self._run_as, "--"] if self._run_as else []
        return [*prefix, *args]

    def start(self, *, durable: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="appliance-pg-"))
        (self.root / "sock").mkdir()
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            for path in (self.root, self.root / "sock"):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        data = self.root / "data"
        subprocess.run(
            self._cmd(
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-k {self.socket_dir} -p {self.port} -c listen_addresses='' -c max_connections=200"
        )
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        if self.root is None:
            return
        subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def sqlalchemy_url(self, database: str = "postgres") -> str:
        return "postgresql+psycopg" + self.url(database)[len("postgresql") :]

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
        )

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create ``name`` (a copy of ``template`` if given); its ``postgresql://`` URL."""
        copy = f' TEMPLATE "{template}"' if template else ""
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_text(self) -> str:
        if self.root is None or not (self.root / "server.log").exists():
            return ""
        return (self.root / "server.log").read_text(errors="replace")
