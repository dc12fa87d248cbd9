"""A throwaway PostgreSQL server for the tests that run the store on both databases: started once
per test session (initdb in a temporary folder, a unix socket there and a free local port), a fresh
database per test, stopped when the session ends. Where the server cannot run (no PostgreSQL
binaries, no psycopg, or root with no unprivileged user to run it as), the PostgreSQL cases are
skipped and say why; the SQLite cases always run. The PostgreSQL cases are marked slow.

A test module takes the store on both databases by importing the fixtures (pytest finds them in
the module's names; no conftest needed):

    from tests.postgres import backend, database, postgres_server   # noqa: F401

`database` is a SQLite file or a PostgreSQL URL (pass it to `Store`). Importing `use_backend` too
(autouse) points `JUICER_DB` at the test's PostgreSQL database, so code that opens the store from
a data root (`Paths.database`), in this process or in the processes it starts, uses it.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

# The PostgreSQL cases run with `-m slow` (as tests/conftest.py files other backends), the SQLite
# ones in the default run.
BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.slow))
# Run the store's tests on SQLite only (a test of SQLite's own files: WAL, PRAGMAs, backups).
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def _binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    newest_first = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True,
                          key=lambda f: [int(n) for n in re.findall(r"\d+", f)])
    for folder in newest_first:
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL server in a temporary folder. As root it runs as the `postgres` user (or
    `nobody`): initdb and postgres refuse to run as root."""

    def __init__(self):
        binaries = _binaries()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        try:
            import psycopg  # noqa: F401  (the store's PostgreSQL driver)
        except ImportError:
            raise RuntimeError("psycopg is not installed (pip install 'psycopg[binary]')") from None

        self.folder = Path(tempfile.mkdtemp(prefix="juicer-pg-"))
        self.run_as: dict = {}
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    user = pwd.getpwnam(name)
                except KeyError:
                    continue
                os.chown(self.folder, user.pw_uid, user.pw_gid)
                self.run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
                break
            else:
                raise RuntimeError("running as root, and there is neither a 'postgres' nor a "
                                   "'nobody' user to run the PostgreSQL server as")
        self.port = _free_port()
        self.data = self.folder / "data"
        self._pg_ctl = str(binaries / "pg_ctl")
        # Durability is not under test here: no fsync makes a fresh database per test cheap.
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.folder} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB")
        try:
            self._run([str(binaries / "initdb"), "-D", str(self.data), "-U", "juicer",
                       "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"])
            self._run([self._pg_ctl, "-D", str(self.data), "-l", str(self.folder / "server.log"),
                       "-w", "-t", "60", "-o", options, "start"])
        except BaseException:
            self.stop()
            raise
        self._names = itertools.count()
        self._template = ""

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, check=False, cwd=self.folder, capture_output=True,
                              text=True, timeout=120, **self.run_as)
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text()[-1500:] if log.exists() else ""
            raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout)[-1500:]} {tail}".strip())

    def url(self, database: str = "postgres", tcp: bool = False) -> str:
        """postgresql://juicer@127.0.0.1:PORT/DB over TCP, or the same server through its socket."""
        if tcp:
            return f"postgresql://juicer@127.0.0.1:{self.port}/{database}"
        return f"postgresql://juicer@/{database}?host={self.folder}&port={self.port}"

    def new_database(self, empty: bool = False) -> str:
        """The URL of a new database: with the store's tables (copied from a template the store
        made, which is quicker than making them in every test), or `empty`."""
        import psycopg

        if not empty and not self._template:
            from loop.store import Store

            template = Store(self.new_database(empty=True))
            template.db.conn.close()           # a template must have no connections
            self._template = self.name_of(template.path)
        name = f"juicer_test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}" + ("" if empty else f" TEMPLATE {self._template}"))
        return self.url(name)

    @staticmethod
    def name_of(url: str) -> str:
        """The database name in a URL."""
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(url)["dbname"]

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run([self._pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


_server: PostgresServer | None = None
_unavailable: str | None = None


@pytest.fixture(scope="session")
def postgres_server(request) -> PostgresServer:
    """The session's PostgreSQL server, started on first use (once, whichever module asks)."""
    global _server, _unavailable
    if _server is None and _unavailable is None:
        try:
            _server = PostgresServer()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            _unavailable = str(exc)
        else:
            request.config.add_cleanup(_server.stop)
    if _server is None:
        pytest.skip(f"no PostgreSQL server for the store's PostgreSQL tests: {_unavailable}")
    return _server


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def database(backend, tmp_path, request) -> Path | str:
    """Where the test's store lives: a SQLite file under tmp_path, or a new PostgreSQL database."""
    if backend == "sqlite":
        return tmp_path / "j.db"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture(autouse=True)
def use_backend(backend, request, monkeypatch) -> str:
    """On PostgreSQL, every data root's store is the test's database (through JUICER_DB)."""
    monkeypatch.delenv("JUICER_DB", raising=False)
    if backend == "postgresql":
        monkeypatch.setenv("JUICER_DB", request.getfixturevalue("database"))
    return backend
