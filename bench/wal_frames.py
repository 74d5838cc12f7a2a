#!/usr/bin/env python3
"""Which B-trees a SQLite store's commits write: WAL frames per commit, by table and index.

Usage: wal_frames.py DB [SECONDS]

Run it while a benchmark writes DB (make bench-http writes bench/data/bench-http.db).
It waits SECONDS (default 2) for the WAL to fill, copies the database and its WAL
(a snapshot: the server keeps running), maps every page of the copy to its B-tree
with SQLite's dbstat, then reads the frames of the WAL's current generation (the
frames whose salts match its header) and counts, per B-tree, the frames written and
the distinct pages they were. Every commit's frames reach the WAL's fdatasync, and a
checkpoint copies each distinct page once into the database: what a commit costs the
disk is about its frames, and what random keys cost shows as frames of B-trees whose
rows are appended nowhere near each other. The copy is not atomic (the server writes
on): a page the copies do not place counts as "(new page)".
"""
import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import time

WAL_HEADER = struct.Struct(">IIIIIIII")  # magic, version, page size, checkpoint, salts, sums
FRAME_HEADER = struct.Struct(">IIIIII")  # page, size after commit (0: not a commit), salts, sums


def snapshot(db, into):
    """The database and its WAL copied; the frames read from the copy of the WAL."""
    copy = os.path.join(into, "copy.db")
    shutil.copyfile(db, copy)
    shutil.copyfile(db + "-wal", copy + "-wal")
    with open(copy + "-wal", "rb") as f:
        return copy, f.read()


def btree_of_pages(path):
    """Page number -> B-tree name, as the copy and the valid part of its WAL have them."""
    con = sqlite3.connect(path)
    try:
        return {page: name for name, page in con.execute("SELECT name, pageno FROM dbstat")}
    finally:
        con.close()


def commits(frames):
    """The current generation's commits, each a list of page numbers."""
    if len(frames) < WAL_HEADER.size:
        return []
    _, _, page_size, _, salt1, salt2, _, _ = WAL_HEADER.unpack_from(frames)
    done, current, at = [], [], WAL_HEADER.size
    while at + FRAME_HEADER.size + page_size <= len(frames):
        page, size, s1, s2, _, _ = FRAME_HEADER.unpack_from(frames, at)
        if (s1, s2) != (salt1, salt2):
            break  # an older generation's frame: the WAL started over before it
        current.append(page)
        if size != 0:
            done.append(current)
            current = []
        at += FRAME_HEADER.size + page_size
    return done


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2])
    db = sys.argv[1]
    time.sleep(float(sys.argv[2]) if len(sys.argv) == 3 else 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        copy, frames = snapshot(db, tmp)
        btree = btree_of_pages(copy)
    done = commits(frames)
    if not done:
        sys.exit("no commit in the WAL's current generation: run it while the benchmark writes")
    written, distinct = collections.Counter(), collections.defaultdict(set)
    for pages in done:
        for page in pages:
            name = btree.get(page, "(new page)")
            written[name] += 1
            distinct[name].add(page)
    total = sum(written.values())
    print(f"{len(done)} commits, {total} frames, {total / len(done):.1f} frames a commit")
    print(f"{'B-tree':34} {'frames':>8} {'a commit':>9} {'distinct pages':>15}")
    for name, n in written.most_common():
        print(f"{name:34} {n:8} {n / len(done):9.1f} {len(distinct[name]):15}")


if __name__ == "__main__":
    main()
