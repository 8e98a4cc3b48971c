"""A PostgreSQL cluster of the workspace's own for the Prefect server (`onenet server --postgres`).

Prefect's SQLite database takes one writer at a time, and a transaction that read before it
writes fails at once with `database is locked` when another wrote meanwhile: with a worker, its
runs and CLI runs reporting at once, the server logged such errors (tests/test_schedules.py).
PostgreSQL takes concurrent writers. The cluster lives in WORKSPACE/prefect/postgres, listens on
127.0.0.1 at a free port (TCP only, no socket file), and lets in one role, `onenet`, by password
(in postgres.password beside the cluster, readable by its owner only). `onenet server` starts it,
points Prefect at it (PREFECT_API_DATABASE_CONNECTION_URL, asyncpg) and stops it on exit; a
cluster left running by a killed server is stopped first. Needs PostgreSQL's server programs
(Debian: apt-get install postgresql). PostgreSQL does not run as root: as root, the cluster runs
as the `postgres` system user, in its home (/var/lib/postgresql/onenet/<hash of the workspace's
path>, password in <hash>.password there), where that user can reach it.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from core.errors import OnenetError

ROLE, DATABASE = "onenet", "prefect"


def pg_bin(program: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/N/bin (newest)."""
    found = shutil.which(program) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), reverse=True)), None)
    if not found:
        raise OnenetError(f"--postgres needs PostgreSQL's {program} (Debian: apt-get install postgresql); or run `onenet server` without it (SQLite)")
    return found


@dataclass
class Cluster:
    data: Path
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self) -> None:
        stop(self.data)


def stop(data: Path) -> None:
    """Stop the cluster in `data` if it runs: fast (sessions ended), else at once, in under 6 s."""
    if _run([pg_bin("pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "4"], check=False).returncode != 0:
        _run([pg_bin("pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "2"], check=False)


def data_dir(home: Path) -> Path:
    """Where the cluster of the Prefect home `home` lives; its password file is beside it."""
    if os.geteuid() != 0:
        return home / "postgres"
    import hashlib

    return Path(_postgres_user().pw_dir) / "onenet" / hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]


def _postgres_user():
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise OnenetError("--postgres as root needs the `postgres` system user (Debian's postgresql package creates it)") from None


def _as_owner() -> list[str]:
    """PostgreSQL refuses to run as root: then it runs as the `postgres` system user."""
    if os.geteuid() != 0:
        return []
    _postgres_user()
    return ["runuser", "-u", "postgres", "--"]


def _run(args: list[str], check: bool = True, env: dict | None = None, as_owner: bool = True) -> subprocess.CompletedProcess:
    """A server program (as the cluster's owner) or a client (`as_owner=False`: as this user)."""
    result = subprocess.run([*(_as_owner() if as_owner else []), *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise OnenetError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _create(data: Path, secret: Path) -> None:
    """A new cluster in `data`, its role's password in `secret` (owner-only): made in a folder
    beside it and renamed into place, so a failed initdb leaves nothing half made."""
    fresh = data.with_name(f".{data.name}.init")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    password = secrets.token_urlsafe(24)
    pwfile = data.with_name(f".{data.name}.initpw")  # readable by the cluster's owner, for initdb only
    for path in (secret, pwfile):
        path.unlink(missing_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(password)
    if _as_owner():
        account = _postgres_user()
        for path in (data.parent, fresh, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    try:
        _run([pg_bin("initdb"), "-D", str(fresh), "-U", ROLE, "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"])
    finally:
        pwfile.unlink()
    fresh.rename(data)


def start(home: Path) -> Cluster:
    """Create the cluster on first use, start it, and make sure the database exists."""
    data = data_dir(home)
    secret = data.with_name(f"{data.name}.password")
    if not (data / "PG_VERSION").exists() or not secret.exists():
        if data.exists():  # a cluster whose password is gone: of no use to anyone
            stop(data)
            shutil.rmtree(data)
        data.parent.mkdir(parents=True, exist_ok=True)
        _create(data, secret)
    elif (data / "postmaster.pid").exists():  # left running by a server that was killed (SIGKILL)
        stop(data)
    password = secret.read_text().strip()
    port = _free_port()
    cluster = Cluster(data, port, password)
    try:
        # TCP on loopback only: no socket file, whose path could be too long or hold a space
        options = f"-p {port} -h 127.0.0.1 -c unix_socket_directories=''"
        _run([pg_bin("pg_ctl"), "start", "-D", str(data), "-w", "-t", "60", "-l", str(data / "server.log"), "-o", options])
        env = {**os.environ, "PGPASSWORD": password}
        exists = _run([pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, "-d", "postgres", "-tAc",
                       f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"], env=env, as_owner=False).stdout.strip()
        if not exists:
            _run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, DATABASE], env=env, as_owner=False)
    except BaseException:
        cluster.stop()  # also when interrupted while pg_ctl waited: the postmaster it forked runs on
        raise
    return cluster
