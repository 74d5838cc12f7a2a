#!/usr/bin/env python3
"""Notification latency: from a POS event's HTTP response to the fake
WeChat server receiving its subscribe message (issue 8's benchmark).

    python3 bench/bench_notify.py BINARY SOURCE_DIR [RATE=1000] [SECONDS=5] [MEMBERS=RATE*SECONDS/50]

Starts tests/fakes/wechat_fake.py and `pointsgw serve` (use the release
build) on a throwaway database, signs MEMBERS members into the mini
program with 50 units of subscribe quota each (at the gateway and at the
fake), then posts purchases open-loop at RATE per second for SECONDS over
keep-alive connections, each naming its member by mp openid. Coalescing
is off (every purchase is its own notice). A notice is matched to its
event by (openid, points): a member's j-th purchase is of 10 + j yuan, so
its points are its own (the balance cannot tell: a notice tells the
balance when it is sent). Prints throughput and the
p50/p99/max latency; everything runs on this machine, the fake included.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN, SRC = sys.argv[1], sys.argv[2]
RATE = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
SECONDS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
# Each member holds at most 50 units of quota (the gateway's cap): enough
# members that no purchase finds none left.
MEMBERS = int(sys.argv[5]) if len(sys.argv) > 5 else max(200, RATE * SECONDS // 50 + 1)
THREADS = 64
MP_APPID, MP_SECRET = "wx1234567890abcdef", "bench-mp-secret"
TPL = "mp-tpl-points-arrived"
SHOP_KEY, ADMIN_KEY = "bench-s001-key", "bench-admin-key"


def call(conn, method, path, body=None, headers=None):
    h = dict(headers or {})
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    text = resp.read().decode()
    return resp.status, (json.loads(text) if text.startswith("{") else text)


def start_fake(tmp):
    port_file = os.path.join(tmp, "fake.port")
    proc = subprocess.Popen([sys.executable, os.path.join(SRC, "tests/fakes/wechat_fake.py"),
                             "--port-file", port_file, "--app", MP_APPID + ":" + MP_SECRET])
    while not os.path.exists(port_file):
        time.sleep(0.05)
    return proc, int(open(port_file).read())


def start_server(tmp, fake_port):
    with open(os.path.join(SRC, "config/pointsgw.example.json")) as f:
        cfg = json.load(f)
    cfg["keys"] = [{"name": n, "scope": s, "key_sha256": hashlib.sha256(k.encode()).hexdigest()}
                   for n, s, k in (("s001", "shop:S001", SHOP_KEY), ("admin", "admin", ADMIN_KEY))]
    cfg["channels"]["wechat_mp"]["api_base"] = "http://127.0.0.1:%d" % fake_port
    cfg["notify"] = {"coalesce_window_s": 0, "quiet_hours": {"start": "00:00", "end": "00:00"}}
    cfg["risk"] = {"max_new_members_per_ip_per_hour": 0}  # every login comes from here
    path = os.path.join(tmp, "bench.json")
    with open(path, "w") as f:
        json.dump(cfg, f, ensure_ascii=False)
    env = dict(os.environ, PGW_WECHAT_MP_SECRET=MP_SECRET)
    for name in ("PGW_WECHAT_OA_SECRET", "PGW_SMS_SECRET_KEY"):
        env.pop(name, None)
    proc = subprocess.Popen([BIN, "serve", "--config", path, "--db",
                             "sqlite:" + os.path.join(tmp, "bench.db"), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("server did not start")
        m = re.search(r"\(port (\d+), http\)", line)
        if m:
            return proc, int(m.group(1))


def setup_members(port, fake_port):
    gw = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    fk = http.client.HTTPConnection("127.0.0.1", fake_port, timeout=30)
    for i in range(MEMBERS):
        openid = "oBench-%d" % i
        call(fk, "POST", "/_fake/login_codes", {"appid": MP_APPID, "code": "c%d" % i, "openid": openid})
        call(fk, "POST", "/_fake/subscribe_quota",
             {"appid": MP_APPID, "openid": openid, "template_id": TPL, "count": 50})
        status, doc = call(gw, "POST", "/v1/mp/login", {"appid": MP_APPID, "code": "c%d" % i})
        assert status == 200, doc
        status, doc = call(gw, "POST", "/v1/mp/subscriptions", {"template_id": TPL, "accepted": 50},
                           {"Authorization": "Session " + doc["session"]})
        assert status == 200, doc


def post_events(sock, port, events):
    """Posts (openid, event_id) pairs one after another on a kept-alive
    socket; yields (openid, status, points, answered_at). Requests are
    built from bytes and answers read with a regex: http.client and json
    cost the Python client more CPU than the gateway spends on an event,
    and everything shares two cores."""
    buf = b""
    for openid, event_id, due, amount in events:
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        body = (b'{"event_id":"%s","channel":"store","shop_id":"S001","type":"purchase",'
                b'"occurred_at":"2026-11-28T10:00:00+08:00","member":{"mp_openid":"%s",'
                b'"appid":"%s"},"amount_fen":%d}' % (event_id.encode(), openid.encode(),
                                                     MP_APPID.encode(), amount))
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s"
                     b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (port, SHOP_KEY.encode(), len(body), body))
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(rest) < length:
            rest += sock.recv(65536)
        answer, buf = rest[:length], rest[length:]
        m = re.search(rb'"points":(\d+)', answer)
        yield openid, int(head[9:12]), int(m.group(1)) if m else None, time.time(), answer


def load(port, responses, errors):
    total = RATE * SECONDS
    start = time.time() + 0.5

    def worker(t):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        events = (("oBench-%d" % (k % MEMBERS), "B-%d" % k, start + k / RATE,
                   1000 + 100 * (k // MEMBERS)) for k in range(t, total, THREADS))
        for openid, status, points, at, answer in post_events(sock, port, events):
            if status != 201 or points is None:
                errors.append((status, answer[:200]))
                continue
            responses[(openid, points)] = at
        sock.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.time() - start


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def main():
    tmp = tempfile.mkdtemp(prefix="pgw-bench-notify-")
    fake, fake_port = start_fake(tmp)
    server, port = start_server(tmp, fake_port)
    try:
        setup_members(port, fake_port)
        responses, errors = {}, []
        elapsed = load(port, responses, errors)
        fk = http.client.HTTPConnection("127.0.0.1", fake_port, timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline:
            delivered = call(fk, "GET", "/_fake/stats")[1]["delivered"]
            if len(delivered) >= len(responses):
                break
            time.sleep(0.5)
        latencies = []
        for d in delivered:
            key = (d["touser"], int(d["data"]["number2"]["value"]))
            if key in responses:
                latencies.append(d["time"] - responses[key])
        print("bench_notify: %d events in %.2f s (%.0f/s asked, %.0f/s achieved), %d refused" %
              (len(responses), elapsed, RATE, len(responses) / elapsed, len(errors)))
        print("delivered %d of %d; latency from the event's answer to WeChat receiving it:"
              % (len(latencies), len(responses)))
        print("  p50 %.3f s, p99 %.3f s, max %.3f s" %
              (percentile(latencies, 0.5), percentile(latencies, 0.99), max(latencies or [0])))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)  # its database can be hundreds of MB


main()
