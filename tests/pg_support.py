"""A real PostgreSQL server for the tests (SPEC 10): Debian's `postgresql` binaries, one
cluster in a temporary folder on 127.0.0.1 for the whole session (the first worker starts it,
the others find its address), a fresh database for each test. Run as root, the server runs as
the `postgres` user, as PostgreSQL requires. Without the binaries the PostgreSQL tests are
skipped, unless REQUIRE_POSTGRES=1 (CI) makes that a failure."""
from __future__ import annotations

import fcntl
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

USER = "flowtui"


def binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(folder: Path, bin_dir: Path) -> str:
    """initdb and pg_ctl start in ``folder``; the server's base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "sock"
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(folder, 0o755)
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U",
                                    USER, "--auth=trust", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True, timeout=120)
    port = _free_port()
    options = (f"-p {port} -h 127.0.0.1 -k {sock} -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=300")
    subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-o",
                                    options, "-l", str(folder / "server.log"), "-w", "-t", "60",
                                    "start"]), check=True, capture_output=True, timeout=90)
    return f"postgresql://{USER}@127.0.0.1:{port}/"


def stop_folder(folder: Path, bin_dir: Path) -> None:
    """Stop the server started in ``folder`` (``start``)."""
    subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m",
                                    "immediate", "stop"]), capture_output=True, timeout=60)


def stop(shared: Path) -> None:
    """Stop the session's server and remove its folder (``shared``: see ``shared_folder``)."""
    marker = shared / "postgresql.url"
    bin_dir = binaries()
    if bin_dir is None or not marker.exists():
        return
    folder = Path(marker.read_text().split("\n")[1])
    stop_folder(folder, bin_dir)
    shutil.rmtree(folder, ignore_errors=True)
    marker.unlink()


def shared_folder(base: Path) -> Path:
    """One folder for every xdist worker of this session (their base temp's parent)."""
    return base.parent if base.name.startswith("popen-gw") else base


def server_url(base: Path) -> str:
    shared = shared_folder(base)
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / "postgresql.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = shared / "postgresql.url"
        if marker.exists():
            return marker.read_text().split("\n")[0]
        bin_dir = binaries()
        if bin_dir is None:
            if os.environ.get("REQUIRE_POSTGRES") == "1":
                pytest.fail("PostgreSQL's initdb is not installed (apt-get install postgresql)")
            pytest.skip("PostgreSQL is not installed here (apt-get install postgresql)")
        # pytest's own temporary folders are private to this user; the server's user must
        # reach its folder
        folder = Path(tempfile.mkdtemp(prefix="flowtui-postgresql-"))
        url = start(folder, bin_dir)
        marker.write_text(f"{url}\n{folder}")
        return url


def new_database(server: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server + "postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server + name
