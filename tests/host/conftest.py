"""Host tests: CPython drives real MicroPython processes, a real mosquitto and mpy-cross."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for p in (os.path.join(ROOT, "tools"), os.path.join(ROOT, "tools", "compat"), ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)

from store import TempPostgres, postgres_available  # noqa: E402  (tools/ is on the path now)

# Several tests start processes from two threads at once. On the CI machine, an execve from a
# vfork() child failed there with EFAULT ("Bad address: '/usr/sbin/mosquitto'"); the child of a
# vfork shares the address space the other thread keeps changing. fork() gives it its own copy.
subprocess._USE_VFORK = False


@pytest.fixture(scope="module")
def postgres():
    """A private PostgreSQL server for the module's tests (skipped where none is installed)."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql): PostgreSQL runs skipped")
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed")
    with TempPostgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The same store tests on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres").url()
