"""A real PostgreSQL server for the service's tests: Debian's package, initdb and pg_ctl run as an
unprivileged user on a temporary directory, listening on a Unix socket only (no TCP port at all)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

USER = "grader"  # the database's superuser (trust on the private socket)
RUN_AS = "nobody"  # PostgreSQL refuses to run as root


def binaries() -> Path | None:
    """The folder holding pg_ctl and initdb: on PATH, else Debian's versioned folder."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    def __init__(self) -> None:
        folder = binaries()
        assert folder is not None, "no PostgreSQL here (apt-get install postgresql)"
        self.bin = folder
        self.root = Path(tempfile.mkdtemp(prefix="grader-postgres-"))
        self.data, self.socket = self.root / "data", self.root / "socket"
        self.socket.mkdir()
        if os.geteuid() == 0:
            for path in (self.root, self.socket):
                shutil.chown(path, RUN_AS)
            os.chmod(self.root, 0o755)

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", RUN_AS, "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120, cwd=self.root)
        assert done.returncode == 0, f"{argv[0]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    def start(self) -> PostgresServer:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "120",
                  "-o", f"-c listen_addresses='' -k {self.socket} -c fsync=off", "start")
        return self

    def create_database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(host=str(self.socket), user=USER, dbname="postgres", autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql+psycopg://{USER}@/{name}?host={self.socket}"

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
