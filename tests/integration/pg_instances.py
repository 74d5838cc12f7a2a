#!/usr/bin/env python3
"""Three gateways on one PostgreSQL (standard library plus psql).

Starts a private PostgreSQL cluster (scripts/pg-cluster.sh) and three
`pointsgw serve` processes on one database, then:

1. Sends one stream of purchases, refunds, redemptions, holds and captures
   to all of them,
   each event to two instances at the same moment: every event must have
   exactly one effect (one 201, one 200 replay with the same figures), the
   balances must be what the answers add up to, and `pointsgw verify`
   must pass.
2. Restarts PostgreSQL (an immediate stop: a crash, to the gateways) in the
   middle of a load whose clients retry a failed event with the same id:
   /healthz must say the database is down and then up again, no
   acknowledged event may be missing, none may count twice.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_api  # noqa: E402  (its checks, keys, configuration and purchases)
import pg  # noqa: E402
import serve_stop  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
KEY = http_api.KEYS["admin"][0]
check, write_config = http_api.check, http_api.write_config


class Gateway:
    def __init__(self, tmp, n, config, db):
        self.n = n
        self.err_path = os.path.join(tmp, f"gw{n}.err")
        self.err = open(self.err_path, "w")
        self.out = open(os.path.join(tmp, f"gw{n}.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", config, "--db", db, "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err)
        deadline = time.time() + 30
        while True:
            m = re.search(r"\(port (\d+), http\)", open(self.err_path).read())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"gateway {n} did not start: " + open(self.err_path).read())
            time.sleep(0.05)

    def request(self, method, path, body=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Authorization": "Bearer " + KEY}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def stop(self):
        """SIGTERM, its stop checked (serve_stop.unclean)."""
        self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self.err.close()
        why = serve_stop.unclean(code, open(self.err_path).read())
        check(why is None, f"gateway {self.n}: the server's stop: {why}")


def purchase(event_id, member, shop, amount):
    return http_api.purchase(event_id, amount=amount, member=member, shop=shop)


def refund(event_id, original, member, shop, amount):
    return {"event_id": event_id, "channel": "store", "shop_id": shop, "type": "refund",
            "original_event_id": original, "amount_fen": amount,
            "occurred_at": "2026-11-25T11:00:00+08:00", "member": {"member_id": member}}


def sql_int(db, query):
    out = subprocess.run(["psql", "-qtAX", db, "-c", query], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.strip())


def send_twice(gateways, jobs):
    """Each job (path, body, member, sign) to two gateways at once; the
    answers, by job, as [(status, doc), (status, doc)]."""
    answers = [[None, None] for _ in jobs]

    def one(i, copy):
        path, body = jobs[i][0], jobs[i][1]
        gw = gateways[(i + copy) % len(gateways)]
        try:
            answers[i][copy] = gw.request("POST", path, body)
        except OSError as e:
            answers[i][copy] = (0, str(e))

    with ThreadPoolExecutor(max_workers=24) as pool:
        for i in range(len(jobs)):  # both copies of a job are submitted together
            pool.submit(one, i, 0)
            pool.submit(one, i, 1)
    return answers


def exactly_once(gateways, db):
    members = [f"M{k}" for k in range(20)]
    purchases = [("/v1/events", purchase(f"P{i}", members[i % 20], f"S00{1 + i % 3}",
                                         1000 + 137 * i), members[i % 20], 1) for i in range(240)]
    refunds = [("/v1/events", refund(f"RF{i}", f"P{i}", members[i % 20], f"S00{1 + i % 3}",
                                     (1000 + 137 * i) // 2), members[i % 20], 1)
               for i in range(0, 240, 3)]
    redemptions = [("/v1/redemptions", {"redemption_id": f"D{k}", "member": {"member_id": m},
                                        "shop_id": "S002", "points": 5}, m, -1)
                   for k, m in enumerate(members)]
    # Holds of 10 points, and captures of 7 of them for every other member
    # (a capture answers 200; its copy is a 200 replay).
    holds = [("/v1/holds", {"hold_id": f"H{k}", "member": {"member_id": m}, "shop_id": "S002",
                            "points": 10, "expires_in_s": 600}, m, 0)
             for k, m in enumerate(members)]
    captures = [(f"/v1/holds/H{k}/capture", {"points": 7}, m, -1)
                for k, m in enumerate(members) if k % 2 == 0]
    balance = {m: 0 for m in members}
    transfers = 0
    for phase in (purchases, refunds, redemptions, holds, captures):
        answers = send_twice(gateways, phase)
        for (path, body, member, sign), pair in zip(phase, answers):
            name = body.get("event_id") or body.get("redemption_id") or body.get("hold_id") or path
            codes = sorted(a[0] for a in pair)
            created = 200 if path.endswith("/capture") else 201
            # One first answer and one replay, whichever instance won.
            if codes != sorted([200, created]) or \
                    [a[1].get("replayed") for a in pair] not in ([False, True], [True, False]):
                check(False, f"{name}: answers {pair}")
                continue
            first = next(a[1] for a in pair if a[1].get("replayed") is False)
            again = next(a[1] for a in pair if a[1].get("replayed") is True)
            check({k: v for k, v in again.items() if k != "replayed"} ==
                  {k: v for k, v in first.items() if k != "replayed"},
                  f"{name}: the replay repeats the figures: {pair}")
            balance[member] += sign * first["points"]
            transfers += len(first.get("transfers", []))
    events = len(purchases) + len(refunds) + len(redemptions) + len(holds) + len(captures)
    check(sql_int(db, "SELECT count(*) FROM idempotency") == events,
          "one idempotency record per event")
    check(sql_int(db, "SELECT count(*) FROM holds WHERE state = 1 AND captured = 7") ==
          len(captures) and sql_int(db, "SELECT count(*) FROM holds WHERE state = 0") ==
          len(holds) - len(captures), "each hold once, each capture once")
    check(sql_int(db, "SELECT count(*) FROM transfers") == transfers,
          "the log holds exactly the answers' transfers")
    for m in members:
        status, view = gateways[2].request("GET", f"/v1/members/{m}")
        check(status == 200 and view.get("balance") == balance[m],
              f"{m}: balance {view.get('balance') if status == 200 else view} = {balance[m]}")
    out = subprocess.run([BIN, "verify", "--db", db], capture_output=True, text=True)
    check(out.returncode == 0 and f"transfers:  {transfers} checked" in out.stdout,
          f"verify after the duplicated stream: {out.stdout} {out.stderr}")
    return events


def restart_under_load(gateways, db, cluster):
    stop = threading.Event()
    acknowledged = {}  # event id -> its final answer
    lock = threading.Lock()
    retried = [0]
    gave_up = []

    def client(t):
        gw = gateways[t % len(gateways)]
        j = 0
        while not stop.is_set():
            body = purchase(f"L{t}-{j}", f"M{100000 + 1000 * t + j // 50}", f"S00{1 + t % 3}", 2000 + j)
            deadline = time.time() + 60
            while True:
                try:
                    status, doc = gw.request("POST", "/v1/events", body, timeout=20)
                except OSError as e:
                    status, doc = 0, str(e)
                if status in (200, 201):
                    with lock:
                        acknowledged[body["event_id"]] = doc
                    break
                with lock:
                    retried[0] += 1
                if status not in (0, 503) or time.time() > deadline:
                    gave_up.append((body["event_id"], status, doc))
                    return
                time.sleep(0.1)  # the same event again: a retry
            j += 1

    health = []

    def watch():
        while not stop.is_set():
            try:
                health.append(gateways[0].request("GET", "/healthz", timeout=5))
            except OSError:
                pass
            time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(6)]
    threads.append(threading.Thread(target=watch))
    for t in threads:
        t.start()
    time.sleep(2)
    before = len(acknowledged)
    cluster.restart()
    restarted = time.time()
    while time.time() - restarted < 20:
        time.sleep(0.2)
        if len(acknowledged) > before + 50 and any(h[0] == 503 for h in health) and \
                health and health[-1][0] == 200:
            break
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    check(not gave_up, f"clients gave up: {gave_up[:3]}")
    check(retried[0] > 0, "the restart failed some requests (they were retried)")
    check(len(acknowledged) > before + 50, f"writes went on after the restart: {before} then "
                                           f"{len(acknowledged)}")
    check(any(h[0] == 503 and h[1].get("db") == "down" for h in health if isinstance(h[1], dict)),
          "/healthz said the database was down")
    check(health and health[-1] == (200, {"status": "ok", "db": "ok"}),
          f"/healthz says ok again: {health[-1] if health else None}")
    stored = sql_int(db, "SELECT count(*) FROM idempotency WHERE event_type = 'purchase'"
                         " AND key LIKE 'store:%:L%'")
    check(stored == len(acknowledged),
          f"every acknowledged event stored once: {stored} stored, {len(acknowledged)} acked")
    transfers = sum(len(doc["transfers"]) for doc in acknowledged.values())
    check(sql_int(db, "SELECT count(*) FROM transfers WHERE idem_key LIKE 'store:%:L%'") ==
          transfers, "their transfers exactly once")
    out = subprocess.run([BIN, "verify", "--db", db], capture_output=True, text=True)
    check(out.returncode == 0, f"verify after the restart: {out.stdout} {out.stderr}")
    return len(acknowledged), retried[0]


# --- s60B: the login refused, the server gone, told apart ----------------


def login_refused(cluster, db, config):
    """Regression: a wrong password and a server not answering were the
    same failure to the commands (exit 2 from some, 1 from others, and no
    word of what to check). A login the server refuses is exit 2 from
    every command, saying to check the user, database and password; a
    server not answering is exit 1; neither writes anything."""
    # A role that must give its password (the cluster trusts every other).
    pg.psql(cluster.admin, "CREATE ROLE pgw_pw LOGIN SUPERUSER PASSWORD 'right'")
    data = os.path.join(open(os.path.join(cluster.dir, "cluster")).read().strip(), "data")
    hba = os.path.join(data, "pg_hba.conf")
    with open(hba) as f:
        rules = f.read()
    with open(hba, "w") as f:
        f.write("host all pgw_pw 127.0.0.1/32 scram-sha-256\n" + rules)
    pg.psql(cluster.admin, "SELECT pg_reload_conf()")
    before = sql_int(db, "SELECT count(*) FROM transfers")
    url = db.replace("://pgw@", "://pgw_pw@")
    port = int(re.search(r":(\d+)/", db).group(1))
    env = dict(os.environ, PGPASSWORD="wrong")
    for args in (["verify"], ["expire", "--config", config],
                 ["serve", "--config", config, "--listen", "127.0.0.1:0"]):
        out = subprocess.run([BIN] + args + ["--db", url], capture_output=True, text=True,
                             env=env, timeout=30)
        check(out.returncode == 2 and "password authentication failed" in out.stderr and
              "(the server answers, but not to this login: check the user" in out.stderr,
              f"{args[0]} with a wrong password: exit {out.returncode}: {out.stderr[-400:]}")
        out = subprocess.run([BIN] + args + ["--db", db.replace(f":{port}/", ":1/")],
                             capture_output=True, text=True, timeout=30)
        check(out.returncode == 1 and "cannot connect" in out.stderr and
              "the server answers" not in out.stderr,
              f"{args[0]} with no server: exit {out.returncode}: {out.stderr[-400:]}")
    out = subprocess.run([BIN, "verify", "--db", url], capture_output=True, text=True,
                         env=dict(os.environ, PGPASSWORD="right"), timeout=30)
    check(out.returncode == 0, f"verify with the right password: {out.stdout} {out.stderr}")
    # Regression: a server with no connection free for the login (SQLSTATE
    # 53300: max_connections, or a role's or database's CONNECTION LIMIT
    # reached) answers, so it was told as a refused login, exit 2, "check
    # the user ... and the password". It is capacity, which a retry may
    # find free: exit 1, saying what to raise.
    pg.psql(cluster.admin, "CREATE ROLE pgw_few LOGIN CONNECTION LIMIT 0")
    few = db.replace("://pgw@", "://pgw_few@")
    for args in (["verify"], ["expire", "--config", config],
                 ["serve", "--config", config, "--listen", "127.0.0.1:0"]):
        out = subprocess.run([BIN] + args + ["--db", few], capture_output=True, text=True,
                             timeout=30)
        check(out.returncode == 1 and "too many connections for role" in out.stderr and
              "no connection free for this login" in out.stderr and
              "check the user" not in out.stderr,
              f"{args[0]} with no connection free: exit {out.returncode}: {out.stderr[-400:]}")
    check(sql_int(db, "SELECT count(*) FROM transfers") == before, "nothing was written")


# --- end of s60B's block ---------------------------------------------------


def main():
    tmp = tempfile.mkdtemp(prefix="pgw-instances-")
    cluster = gateways = None
    try:
        cluster = pg.Cluster(SRC, os.path.join(tmp, "pg"))
        # Its default isolation is REPEATABLE READ, as some sites set it:
        # the gateway must still see each batch's predecessor once it holds
        # the chain lock (it runs its writes READ COMMITTED).
        db = pg.create_db(cluster.admin, isolation="repeatable read")
        config = write_config(tmp)
        # All three at once on the empty database: one creates the schema,
        # the others find it done. Regression: under REPEATABLE READ their
        # migration's snapshot predated the lock it waited for, and a second
        # pgw_schema row (version 0) was written beside the first.
        gateways = [None] * 3
        starts = [threading.Thread(target=lambda n=n: gateways.__setitem__(
            n, Gateway(tmp, n, config, db))) for n in range(3)]
        for t in starts:
            t.start()
        for t in starts:
            t.join()
        check(None not in gateways, "three gateways started at once")
        check(sql_int(db, "SELECT count(*) FROM pgw_schema") == 1,
              "one schema row: %s" % sql_int(db, "SELECT count(*) FROM pgw_schema"))
        events = exactly_once(gateways, db)
        acked, retried = restart_under_load(gateways, db, cluster)
        login_refused(cluster, db, config)
        for gw in gateways:
            gw.stop()
        print(f"pg_instances: {events} events sent twice over 3 gateways; "
              f"{acked} acknowledged across a PostgreSQL restart ({retried} retries)")
    finally:
        for gw in gateways or []:
            if gw.proc.poll() is None:
                gw.proc.kill()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"pg_instances: {http_api.checks - len(http_api.failures)} of {http_api.checks}"
          " checks passed")
    sys.exit(1 if http_api.failures else 0)


if __name__ == "__main__":
    main()
