"""PostgreSQL for the integration tests (standard library plus psql).

When ctest runs an integration test a second time on PostgreSQL
(integration.pg.<name>), PGW_TEST_PG_DIR names the cluster that
scripts/pg-cluster.sh started; fresh_db() makes a new database on it for
each gateway a test starts. Cluster starts a private one, for the tests
that stop and restart their server.
"""
import itertools
import os
import secrets
import subprocess

_counter = itertools.count(1)


def admin_url(cluster_dir):
    with open(os.path.join(cluster_dir, "url")) as f:
        return f.read().strip()


def psql(db, sql, *options):
    """Runs `sql` on PostgreSQL database `db` with psql; its output. A
    failure raises with psql's own words (check=True alone said only
    "exit status 1", its stderr captured and dropped)."""
    out = subprocess.run(["psql", "-qX", "-v", "ON_ERROR_STOP=1", *options, db, "-c", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: exit {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def create_db(admin, isolation=None):
    """A new, empty database on the cluster of `admin`; its URL. With
    `isolation`, that is its default transaction isolation."""
    # pid and counter, and a random part: a later test's pid may be the same
    name = f"pgwi_{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"
    # Sorting text as en-US does, as production databases often do.
    # FILE_COPY: a test cluster (fsync off) has no use for PostgreSQL 15's
    # default, which writes each page of the copy through the log (~3x the time).
    sql = [f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
           " STRATEGY FILE_COPY"]
    if isolation:
        sql.append(f"ALTER DATABASE {name} SET default_transaction_isolation = '{isolation}'")
    for statement in sql:
        psql(admin, statement)
    return admin.rsplit("/", 1)[0] + "/" + name


def fresh_db():
    """A new PostgreSQL database when the test runs on PostgreSQL, else None."""
    cluster = os.environ.get("PGW_TEST_PG_DIR")
    return create_db(admin_url(cluster)) if cluster else None


def execute(db, sql):
    """Runs `sql` on a test database, SQLite or PostgreSQL (to stage what an
    older gateway left)."""
    if db.startswith("sqlite:"):
        import sqlite3
        con = sqlite3.connect(db[len("sqlite:"):])
        con.execute(sql)
        con.commit()
        con.close()
    else:
        psql(db, sql)


def value(db, sql):
    """The first column of the first row of `sql` on a test database, as text."""
    if db.startswith("sqlite:"):
        import sqlite3
        con = sqlite3.connect(db[len("sqlite:"):])
        row = con.execute(sql).fetchone()
        con.close()
        return None if row is None else str(row[0])
    return psql(db, sql, "-tA").strip() or None


def dump(url):
    """The database's rows as text (to look for what must not be stored)."""
    return subprocess.run(["pg_dump", "--data-only", url], check=True, capture_output=True).stdout


def stored(db):
    """Everything a database holds, as bytes to search: a SQLite file with
    its WAL (what a running server has not checkpointed yet), or a dump."""
    if not db.startswith("sqlite:"):
        return dump(db)
    data = b""
    for suffix in ("", "-wal"):
        path = db[len("sqlite:"):] + suffix
        if os.path.exists(path):
            with open(path, "rb") as f:
                data += f.read()
    return data


class Cluster:
    """A private cluster in `directory` (stopped and deleted by stop())."""

    def __init__(self, src, directory):
        self.script = os.path.join(src, "scripts", "pg-cluster.sh")
        self.dir = directory
        subprocess.run(["bash", self.script, "start", directory, "fast"], check=True,
                       capture_output=True)
        self.admin = admin_url(directory)

    def restart(self):
        """An immediate stop (a crash, to the clients) and a start."""
        subprocess.run(["bash", self.script, "restart", self.dir], check=True,
                       capture_output=True)

    def stop(self):
        subprocess.run(["bash", self.script, "stop", self.dir], capture_output=True)
