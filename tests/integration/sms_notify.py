#!/usr/bin/env python3
"""Notices by SMS, end to end (standard library only).

A member known only by a phone gets "points arrived" as an SMS through the
fake Tencent Cloud SendSms (which verifies the TC3 signature as Tencent
does), with the notice id as SessionContext; in quiet hours the SMS waits
(the notice stays pending, due when they end) and nothing is sent.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

BIN, SRC = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location(
    "wechat_api", os.path.join(SRC, "tests/integration/wechat_api.py"))
wx = importlib.util.module_from_spec(spec)
sys.argv = [sys.argv[0], BIN, SRC]
spec.loader.exec_module(wx)
check, eventually, purchase, notices = wx.check, wx.eventually, wx.purchase, wx.notices
spec = importlib.util.spec_from_file_location(
    "http_api", os.path.join(SRC, "tests/integration/http_api.py"))
http_api = importlib.util.module_from_spec(spec)
spec.loader.exec_module(http_api)  # for its WebSocket client

SECRET_ID, SECRET_KEY = "AKIDpgwtest0000000000000000000000000", "pgw-test-sms-secret-key-0000000"


class SmsFake:
    def __init__(self, tmp):
        port_file = os.path.join(tmp, "sms.port")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(SRC, "tests/fakes/sms_fake.py"), "--port-file",
             port_file, "--tencent", SECRET_ID + ":" + SECRET_KEY])
        for _ in range(200):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        self.port = int(open(port_file).read())

    def messages(self):
        status, doc = wx.call(self.port, "GET", "/_fake/messages")
        return doc["messages"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


def config(tmp, name, sms_port, quiet):
    with open(os.path.join(SRC, "config/pointsgw.example.json")) as f:
        cfg = json.load(f)
    cfg["keys"] = [{"name": "s001", "scope": "shop:S001",
                    "key_sha256": __import__("hashlib").sha256(wx.SHOP.encode()).hexdigest()},
                   {"name": "admin", "scope": "admin",
                    "key_sha256": __import__("hashlib").sha256(wx.ADMIN.encode()).hexdigest()}]
    cfg["channels"]["sms"]["api_base"] = "http://127.0.0.1:%d" % sms_port
    cfg["channels"]["sms"]["provider"] = "tencent"
    cfg["notify"] = {"coalesce_window_s": 1, "quiet_hours": quiet,
                     "retry": {"max_attempts": 3, "base_delay_ms": 200, "max_delay_ms": 400}}
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        json.dump(cfg, f, ensure_ascii=False)
    return path


def hhmm(t):
    local = time.gmtime(t + 8 * 3600)  # the example mall is in Asia/Shanghai
    return "%02d:%02d" % (local.tm_hour, local.tm_min)


def run(tmp, cfg_path, env):
    os.makedirs(tmp, exist_ok=True)
    return wx.Server(tmp, cfg_path, env)


def main():
    tmp = tempfile.mkdtemp(prefix="pgw-sms-")
    fake = SmsFake(tmp)
    env = dict(os.environ, PGW_SMS_SECRET_ID=SECRET_ID, PGW_SMS_SECRET_KEY=SECRET_KEY)
    for name in ("PGW_WECHAT_MP_SECRET", "PGW_WECHAT_OA_SECRET", "PGW_WECHAT_OA_TOKEN"):
        env.pop(name, None)
    now = int(time.time())
    try:
        # Daytime (no quiet hours): the SMS goes at once.
        day = config(tmp, "day.json", fake.port, {"start": "00:00", "end": "00:00"})
        srv = run(os.path.join(tmp, "day"), day, env)
        sock, handshake, pending = http_api.ws_open(srv.port, "/v1/stream?shop=S001&key=" + wx.ADMIN)
        check(" 101 " in handshake, "the stream opens: %s" % handshake)
        status, doc = srv.request("POST", "/v1/events", purchase("SMS-1", "13500135000", 8800),
                                  key=wx.SHOP)
        check(status == 201, "a sale to a phone-only member")
        member, points, balance = doc["member_id"], doc["points"], doc["balance"]
        got = eventually(fake.messages, lambda m: len(m) >= 1)
        listed = eventually(lambda: notices(srv, member), lambda l: l and l[0]["state"] == "sent")
        check(len(got) == 1 and got[0]["phone"] == "+8613500135000" and
              got[0]["template_id"] == "1000001" and got[0]["params"] == [str(points), str(balance)],
              "one SMS with the points and the balance: %s" % got)
        news = [m for m in http_api.ws_messages(sock, pending, 1.0) if m["type"] == "notification"]
        sock.close()
        check(len(news) == 1 and news[0]["state"] == "sent" and news[0]["channel"] == "sms" and
              news[0]["member_id"] == member and news[0]["points"] == points,
              "the stream tells of the notice sent: %s" % news)
        check(listed and listed[0]["channel"] == "sms" and
              got and got[0]["out_id"] == "pgw-notice-%d" % listed[0]["id"],
              "the notice id is Tencent's SessionContext: %s" % listed[:1])
        # Another sale to the same number within Tencent's 30 s: the gateway
        # holds the SMS back itself instead of letting the provider refuse it.
        srv.request("POST", "/v1/events", purchase("SMS-1b", "13500135000", 1000), key=wx.SHOP)
        listed = eventually(lambda: notices(srv, member),
                            lambda l: len(l) == 2 and l[0]["last_error"] != "")
        check(len(listed) == 2 and listed[0]["state"] == "pending" and
              listed[0]["attempts"] == 0 and "may get a message again" in listed[0]["last_error"],
              "the number's frequency limit defers it: %s" % listed[:1])
        check(len(fake.messages()) == 1, "and the provider was not asked")

        # A member who opted out gets no SMS.
        status, doc = srv.request("POST", "/v1/events", purchase("SMS-3", "13300133000", 1000),
                                  key=wx.SHOP)
        other = doc["member_id"]
        eventually(fake.messages, lambda m: len(m) == 2)
        status, doc = srv.request("POST", "/v1/members/%s/preferences" % other, {"sms": False},
                                  key=wx.SHOP)
        check(status == 403, "a shop key may not set preferences")
        for body, want in (({"sms": "no"}, 400), ({"sms": False, "x": 1}, 400), ({}, 400)):
            status, doc = srv.request("POST", "/v1/members/%s/preferences" % other, body,
                                      key=wx.ADMIN)
            check(status == want, "preferences %s: %d (%s)" % (body, want, status))
        status, doc = srv.request("POST", "/v1/members/M0NOBODY/preferences", {"sms": False},
                                  key=wx.ADMIN)
        check(status == 404, "an unknown member: 404 (%s)" % status)
        status, doc = srv.request("POST", "/v1/members/%s/preferences" % other, {"sms": False},
                                  key=wx.ADMIN)
        check(status == 200 and doc == {"member_id": other, "sms": False}, "opted out: %s" % doc)
        srv.request("POST", "/v1/events", purchase("SMS-4", "13300133000", 1000), key=wx.SHOP)
        listed = eventually(lambda: notices(srv, other),
                            lambda l: len(l) == 2 and l[0]["state"] in ("sent", "skipped", "dead"))
        check(listed[0]["state"] == "skipped" and len(fake.messages()) == 2,
              "no SMS after opting out: %s" % listed[:1])
        srv.stop()

        # Quiet hours now: the SMS waits; nothing is sent meanwhile.
        sent_before = len(fake.messages())
        quiet = config(tmp, "night.json", fake.port,
                       {"start": hhmm(now - 3600), "end": hhmm(now + 3600)})
        srv = run(os.path.join(tmp, "night"), quiet, env)
        status, doc = srv.request("POST", "/v1/events", purchase("SMS-2", "13400134000", 5000),
                                  key=wx.SHOP)
        member = doc["member_id"]
        listed = eventually(lambda: notices(srv, member), lambda l: l and l[0]["channel"] == "sms")
        time.sleep(1.5)
        listed = notices(srv, member)
        check(listed and listed[0]["state"] == "pending" and listed[0]["attempts"] == 0,
              "in quiet hours the notice waits: %s" % listed[:1])
        check(len(fake.messages()) == sent_before, "and no SMS left in the night")
        rc, err = srv.stop()
        check(rc == 0, "clean exit: %s" % err[-2000:])
    finally:
        fake.stop()
    print("sms_notify: %d checks, %d failed" % (wx.checks, len(wx.failures)))
    sys.exit(1 if wx.failures else 0)


main()
