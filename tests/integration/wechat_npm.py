#!/usr/bin/env python3
"""The official account's safe mode (AES), cross-checked end to end against an
independent implementation: the npm package wechat-crypto@0.0.2, driven
through tests/fakes/wxcrypt.js (research/wechat-api.md §5.3, §5.4, §8).

    python3 wechat_npm.py BINARY SOURCE_DIR

Installs wechat-crypto into a temporary prefix (never into the source tree);
without npm or without a registry it prints "wechat_npm: SKIPPED: <reason>"
and exits 77, which ctest reports as skipped. Any other problem exits 1.

Two rounds, each with its own `pointsgw serve` and database: a fresh random
EncodingAESKey, and the Tencent sample key of research §7 V5 (whose last
character has non-zero low bits, research §9). In each round:

* wechat-crypto encrypts a subscribe event; the gateway answers 200 with an
  encrypted envelope (Encrypt, MsgSignature, TimeStamp, Nonce) whose
  signature wechat-crypto accepts and whose plaintext it decrypts: id = the
  OA appid, ToUserName = the member's openid, FromUserName = the gh_ id,
  Content naming the follow_oa points (50);
* three redeliveries (one byte-identical, two freshly encrypted): no second
  follow_oa, every reply decrypts to the same Content;
* "积分" is answered, encrypted, with the balance;
* refused, with the ledger unchanged: a tampered ciphertext (re-signed, so
  only decryption fails), a ciphertext for another appid, a wrong or missing
  msg_signature, a bad plain signature, a plain push to the safe-mode server;
* the GET URL check echoes echostr under the plain signature;
* SIGTERM exits 0, and `pointsgw verify` passes on the database.
"""
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

BIN, SRC = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])

# One HTTP helper for the WeChat tests: wechat_api.py's.
_spec = importlib.util.spec_from_file_location(
    "wechat_api", os.path.join(SRC, "tests/integration/wechat_api.py"))
_wechat_api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_wechat_api)
call = _wechat_api.call
WXCRYPT = os.path.join(SRC, "tests/fakes/wxcrypt.js")
PACKAGE = "wechat-crypto@0.0.2"
MP_APPID, OA_APPID = "wx1234567890abcdef", "wxfedcba0987654321"
OTHER_APPID = "wx0a1b2c3d4e5f6a7b"
MP_SECRET, OA_SECRET, OA_TOKEN = "mp-secret-0123456789", "oa-secret-9876543210", "pgwtesttoken"
ADMIN = "test-admin-key"
GH_ID = "gh_test"
FOLLOW_OA_POINTS = 50  # behaviours.follow_oa in config/pointsgw.example.json
RESEARCH_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"  # research §7 V5
ALNUM = string.ascii_letters + string.digits
B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
failures = []
checks = 0


def say(*args):
    print("wechat_npm:", *args, flush=True)


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr, flush=True)
    return bool(cond)


_wechat_api.check = check  # its Server's check of each stop counts here


class Skip(Exception):
    pass


# ---- the independent implementation --------------------------------------------------

def install(tmp, packages=(PACKAGE,)):
    """npm install packages ("name@version") into tmp/npm; Skip when that
    cannot be done here. Returns node and the node_modules directory."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None:
        raise Skip("npm is not installed")
    if node is None:
        raise Skip("node is not installed")
    prefix = os.path.join(tmp, "npm")
    os.makedirs(prefix)
    try:
        r = subprocess.run([npm, "install", "--prefix", prefix, "--no-audit", "--no-fund",
                            "--no-update-notifier"] + list(packages),
                           cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired:
        raise Skip("npm install %s timed out after 120 s (no registry?)" % " ".join(packages))
    if r.returncode != 0:
        # npm's first error lines name the cause (code ECONNREFUSED, E404, ...).
        lines = [l.strip() for l in (r.stderr or r.stdout).splitlines()
                 if l.strip() and "complete log" not in l]
        raise Skip("npm install %s failed (exit %d): %s"
                   % (" ".join(packages), r.returncode,
                      " | ".join(lines[:2]) if lines else "no output"))
    modules = os.path.join(prefix, "node_modules")
    for package in packages:
        name, _, want = package.rpartition("@")
        with open(os.path.join(modules, name, "package.json")) as f:
            version = json.load(f).get("version")
        if version != want:
            raise SystemExit("npm installed %s %s, not %s" % (name, version, want))
    return node, modules


class WxCrypt:
    """tests/fakes/wxcrypt.js: one JSON request on stdin, one JSON answer on stdout."""

    def __init__(self, node, modules):
        self.node = node
        self.env = dict(os.environ, NODE_PATH=modules)

    def try_call(self, **req):
        r = subprocess.run([self.node, WXCRYPT], input=json.dumps(req), capture_output=True,
                           text=True, timeout=30, env=self.env)
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            doc = {"error": "no JSON from wxcrypt.js (exit %d): %r %r"
                            % (r.returncode, r.stdout[-200:], r.stderr[-300:])}
        if r.returncode != 0 and "error" not in doc:
            doc = {"error": "wxcrypt.js exit %d" % r.returncode}
        return doc

    def call(self, **req):
        """For the test's own inputs: an error here is the harness's, not the gateway's."""
        doc = self.try_call(**req)
        if "error" in doc:
            raise SystemExit("wechat_npm: wxcrypt.js %s: %s" % (req.get("op"), doc["error"]))
        return doc

    def encrypt(self, aes_key, message, timestamp, nonce, appid=OA_APPID):
        return self.call(op="encrypt", token=OA_TOKEN, aes_key=aes_key, appid=appid,
                         message=message, timestamp=timestamp, nonce=nonce, to_user=GH_ID)

    def sign(self, timestamp, nonce, encrypt, token=OA_TOKEN):
        return self.call(op="sign", token=token, timestamp=timestamp, nonce=nonce,
                         encrypt=encrypt)["signature"]


def reference_sanity(crypt):
    """The reference itself reproduces research §7 (V4 signature, V7 decryption)."""
    sig = crypt.call(op="sign", token="RMNlACHlV5ThzfRlVS4D4", timestamp="timestamp",
                     nonce="nonce", encrypt="encrypt")["signature"]
    check(sig == "8edac0945683c119ee71c9f6256d76c48aa08a96", "wechat-crypto: V4 signature (%s)" % sig)
    doc = crypt.call(op="decrypt", token="pamtest", aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                     appid="wxb11529c136998cb6", timestamp="1409304348", nonce="xxxxxx",
                     msg_signature="82c962d39941aa48552f90ef55aa323dc620cc10",
                     encrypt="jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd"
                             "832WzZGMhkP72vVOfg==")
    check(doc.get("ok") is True and doc.get("message") == "我是中文abcd123" and
          doc.get("id") == "wxb11529c136998cb6", "wechat-crypto: V7 decryption (%s)" % doc)


# ---- the gateway -----------------------------------------------------------------------

class Fake:
    """tests/fakes/wechat_fake.py, where the channels' api_base points."""

    def __init__(self, tmp):
        port_file = os.path.join(tmp, "fake.port")
        self.log = open(os.path.join(tmp, "fake.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(SRC, "tests/fakes/wechat_fake.py"), "--port-file",
             port_file, "--app", MP_APPID + ":" + MP_SECRET, "--app", OA_APPID + ":" + OA_SECRET],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit("wechat_npm: the fake WeChat server did not start")
            time.sleep(0.05)
        self.port = int(open(port_file).read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def write_config(tmp, fake_port):
    with open(os.path.join(SRC, "config/pointsgw.example.json")) as f:
        cfg = json.load(f)
    cfg["keys"] = [{"name": "admin", "scope": "admin",
                    "key_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()}]
    base = "http://127.0.0.1:%d" % fake_port
    cfg["channels"]["wechat_mp"]["api_base"] = base
    cfg["channels"]["wechat_oa"]["api_base"] = base
    check(cfg["channels"]["wechat_oa"].get("aes_key_env") == "PGW_WECHAT_OA_AES_KEY" and
          cfg["channels"]["wechat_oa"].get("appid") == OA_APPID,
          "the example config names PGW_WECHAT_OA_AES_KEY and the OA appid")
    path = os.path.join(tmp, "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f, ensure_ascii=False)
    return path


class Server(_wechat_api.Server):
    """wechat_api.py's server, with the official account's push."""

    def push(self, query, body):
        return self.request("POST", "/wechat/oa/callback?" + query, raw=body.encode(), key=None,
                            ctype="text/xml")


# ---- WeChat's side of a push ---------------------------------------------------------

def plain_signature(token, timestamp, nonce):
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()


def fresh():
    """A timestamp (now) and a nonce, as WeChat puts them on every push."""
    return str(int(time.time())), str(secrets.randbelow(10 ** 10))


def safe_query(timestamp, nonce, msg_signature, signature=None):
    if signature is None:
        signature = plain_signature(OA_TOKEN, timestamp, nonce)
    q = "signature=%s&timestamp=%s&nonce=%s&openid=ignored&encrypt_type=aes" % (signature, timestamp, nonce)
    if msg_signature is not None:
        q += "&msg_signature=" + msg_signature
    return q


def oa_xml(openid, create_time, msg_type, event=None, content=None, msg_id=None):
    parts = ["<xml><ToUserName><![CDATA[%s]]></ToUserName>" % GH_ID,
             "<FromUserName><![CDATA[%s]]></FromUserName>" % openid,
             "<CreateTime>%d</CreateTime>" % create_time,
             "<MsgType><![CDATA[%s]]></MsgType>" % msg_type]
    if event:
        parts.append("<Event><![CDATA[%s]]></Event><EventKey><![CDATA[]]></EventKey>" % event)
    if content is not None:
        parts.append("<Content><![CDATA[%s]]></Content><MsgId>%s</MsgId>" % (content, msg_id))
    return "".join(parts) + "</xml>"


class Sealed:
    """One push as WeChat sends it in safe mode, encrypted by wechat-crypto."""

    def __init__(self, crypt, aes_key, message, appid=OA_APPID):
        self.timestamp, self.nonce = fresh()
        doc = crypt.encrypt(aes_key, message, self.timestamp, self.nonce, appid=appid)
        self.encrypt, self.msg_signature, self.body = doc["encrypt"], doc["msg_signature"], doc["xml"]
        self.query = safe_query(self.timestamp, self.nonce, self.msg_signature)


def tampered(crypt, sealed, position):
    """The ciphertext with one base64 character changed, msg_signature re-made over it."""
    text = sealed.encrypt
    pos = position
    while text[pos] == "=":
        pos -= 1
    changed = text[:pos] + B64[(B64.index(text[pos]) + 1) % 64] + text[pos + 1:]
    sig = crypt.sign(sealed.timestamp, sealed.nonce, changed)
    body = sealed.body.replace(text, changed)
    return safe_query(sealed.timestamp, sealed.nonce, sig), body


def open_reply(crypt, aes_key, body):
    """The encrypted passive reply, checked and opened by wechat-crypto: (fields or None, why)."""
    if not isinstance(body, str):
        return None, "not XML: %r" % (body,)
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        return None, "envelope is not XML (%s): %r" % (e, body[:200])
    tags = [c.tag for c in root]
    if root.tag != "xml" or tags != ["Encrypt", "MsgSignature", "TimeStamp", "Nonce"]:
        return None, "envelope shape %s %s" % (root.tag, tags)
    env = {t: root.findtext(t) or "" for t in tags}
    doc = crypt.try_call(op="decrypt", token=OA_TOKEN, aes_key=aes_key, appid=OA_APPID,
                         encrypt=env["Encrypt"], timestamp=env["TimeStamp"], nonce=env["Nonce"],
                         msg_signature=env["MsgSignature"])
    if "error" in doc:
        return None, "wechat-crypto cannot decrypt the reply: %s" % doc["error"]
    out = {"envelope": env, "sig_ok": doc.get("ok") is True, "id": doc.get("id"),
           "message": doc.get("message")}
    try:
        inner = ET.fromstring(doc.get("message") or "")
    except ET.ParseError as e:
        return None, "decrypted reply is not XML (%s): %r" % (e, doc.get("message"))
    for tag in ("ToUserName", "FromUserName", "CreateTime", "MsgType", "Content"):
        out[tag] = inner.findtext(tag)
    return out, ""


def check_reply(crypt, aes_key, what, status, body, openid, content_has):
    """A 200 with an encrypted text reply to openid; returns its Content (or None)."""
    if not check(status == 200, "%s: 200 (%s %r)" % (what, status, body)):
        return None
    r, why = open_reply(crypt, aes_key, body)
    if not check(r is not None, "%s: an encrypted reply wechat-crypto opens: %s" % (what, why)):
        return None
    env = r["envelope"]
    check(r["sig_ok"], "%s: wechat-crypto verifies MsgSignature %s" % (what, env["MsgSignature"]))
    check(env["TimeStamp"].isdigit() and abs(int(env["TimeStamp"]) - time.time()) < 60 and
          env["Nonce"] != "", "%s: TimeStamp in seconds, a Nonce (%s, %r)"
          % (what, env["TimeStamp"], env["Nonce"]))
    check(r["id"] == OA_APPID, "%s: decrypted id is the OA appid (%r)" % (what, r["id"]))
    check(r["ToUserName"] == openid and r["FromUserName"] == GH_ID and r["MsgType"] == "text",
          "%s: reply to %s from %s (%s -> %s, %s)"
          % (what, openid, GH_ID, r["FromUserName"], r["ToUserName"], r["MsgType"]))
    check((r["CreateTime"] or "").isdigit() and abs(int(r["CreateTime"]) - time.time()) < 60,
          "%s: CreateTime now (%r)" % (what, r["CreateTime"]))
    check(content_has in (r["Content"] or ""), "%s: Content mentions %s (%r)"
          % (what, content_has, r["Content"]))
    return r["Content"]


# ---- one round: one key, one server, one database --------------------------------------

def error_message(doc):
    err = doc.get("error") if isinstance(doc, dict) else None
    return err.get("message") if isinstance(err, dict) else None


def check_refused_400(label, what, status, doc):
    """400, and the error body says why (API.md: {"error": {"code", "message", ...}})."""
    check(status == 400, "[%s] %s: 400 (%s %s)" % (label, what, status, doc))
    msg = error_message(doc)
    check(isinstance(msg, str) and msg.strip() != "",
          "[%s] %s: the 400's error.message says why (got %r)" % (label, what, msg))


def resolve(srv, openid):
    status, doc = srv.request("POST", "/v1/members/resolve", {"oa_openid": openid, "appid": OA_APPID})
    return status, doc


def round_checks(srv, crypt, key, label):
    openid = "oOA-npm-%s-1" % label
    now = int(time.time())

    # The URL check: plain signature, plain echostr, even in safe mode (research §5.2).
    ts, nonce = fresh()
    echostr = str(secrets.randbelow(10 ** 19))
    status, body = srv.request("GET", "/wechat/oa/callback?signature=%s&timestamp=%s&nonce=%s&echostr=%s"
                               % (plain_signature(OA_TOKEN, ts, nonce), ts, nonce, echostr), key=None)
    check(status == 200 and str(body) == echostr, "[%s] URL check echoes echostr: %s %r" % (label, status, body))
    status, body = srv.request("GET", "/wechat/oa/callback?signature=%s&timestamp=%s&nonce=%s&echostr=1"
                               % (plain_signature("wrong", ts, nonce), ts, nonce), key=None)
    check(status == 401, "[%s] URL check with a bad signature: 401 (%s)" % (label, status))

    # Subscribe, encrypted by wechat-crypto: follow_oa, an encrypted reply.
    before = srv.transfers()
    sub_xml = oa_xml(openid, now, "event", event="subscribe")
    sub = Sealed(crypt, key, sub_xml)
    status, body = srv.push(sub.query, sub.body)
    content = check_reply(crypt, key, "[%s] subscribe" % label, status, body, openid,
                          str(FOLLOW_OA_POINTS))
    check(srv.transfers() == before + 1, "[%s] subscribe: one transfer" % label)
    status, doc = resolve(srv, openid)
    member = doc.get("member_id") if isinstance(doc, dict) else None
    check(status == 200 and member, "[%s] the follower is a member: %s %s" % (label, status, doc))
    if member:
        status, doc = srv.request("GET", "/v1/members/" + member)
        check(status == 200 and doc.get("balance") == FOLLOW_OA_POINTS,
              "[%s] the follower has the follow_oa points: %s" % (label, doc))

    # Redeliveries: the same bytes once, then re-encrypted (fresh random, timestamp, nonce) twice.
    redeliveries = [(sub.query, sub.body)]
    for _ in range(2):
        again = Sealed(crypt, key, sub_xml)
        redeliveries.append((again.query, again.body))
    for i, (query, body_text) in enumerate(redeliveries, 1):
        status, body = srv.push(query, body_text)
        got = check_reply(crypt, key, "[%s] redelivery %d" % (label, i), status, body, openid,
                          str(FOLLOW_OA_POINTS))
        check(content is not None and got == content,
              "[%s] redelivery %d: the same Content (%r vs %r)" % (label, i, got, content))
    check(srv.transfers() == before + 1, "[%s] four deliveries, one follow_oa (%d -> %d)"
          % (label, before, srv.transfers()))

    # 积分: the balance, encrypted.
    bal = Sealed(crypt, key, oa_xml(openid, now + 1, "text", content="积分",
                                    msg_id=str(4561255354251345929 + secrets.randbelow(10 ** 6))))
    status, body = srv.push(bal.query, bal.body)
    text = check_reply(crypt, key, "[%s] 积分" % label, status, body, openid, str(FOLLOW_OA_POINTS))
    check(text is not None and "积分" in text, "[%s] 积分 reply names the points: %r" % (label, text))

    # Refusals: a newcomer's subscribe that would earn follow_oa if let through.
    stranger = "oOA-npm-%s-2" % label
    new_sub = oa_xml(stranger, now + 2, "event", event="subscribe")
    count = srv.transfers()
    good = Sealed(crypt, key, new_sub)
    mid = len(good.encrypt) // 2
    for position, what in ((mid, "in the middle"), (len(good.encrypt) - 30, "near the end (appid, padding)")):
        query, body_text = tampered(crypt, good, position)
        status, doc = srv.push(query, body_text)
        check_refused_400(label, "ciphertext tampered %s, re-signed" % what, status, doc)
    other = Sealed(crypt, key, new_sub, appid=OTHER_APPID)
    status, doc = srv.push(other.query, other.body)
    check_refused_400(label, "a ciphertext for appid " + OTHER_APPID, status, doc)
    other_key = "".join(secrets.choice(ALNUM) for _ in range(43))
    foreign = Sealed(crypt, other_key, new_sub)
    status, doc = srv.push(foreign.query, foreign.body)
    check_refused_400(label, "a ciphertext under another EncodingAESKey", status, doc)

    wrong_sig = crypt.sign(good.timestamp, good.nonce, good.encrypt, token="wrongtoken")
    for query, what in (
            (safe_query(good.timestamp, good.nonce, wrong_sig), "a wrong msg_signature"),
            (safe_query(good.timestamp, good.nonce, good.msg_signature[:-1] +
                        ("0" if good.msg_signature[-1] != "0" else "1")), "a msg_signature one digit off"),
            (safe_query(good.timestamp, good.nonce, None), "no msg_signature"),
            (safe_query(good.timestamp, good.nonce, good.msg_signature,
                        signature=plain_signature("wrong", good.timestamp, good.nonce)),
             "a bad plain signature (msg_signature right)")):
        status, doc = srv.push(query, good.body)
        check(status == 401, "[%s] %s: 401 (%s %s)" % (label, what, status, doc))
    ts, nonce = fresh()
    plain_q = "signature=%s&timestamp=%s&nonce=%s" % (plain_signature(OA_TOKEN, ts, nonce), ts, nonce)
    for query, what in ((plain_q, "a plain push"), (plain_q + "&encrypt_type=raw", "encrypt_type=raw")):
        status, doc = srv.push(query, new_sub)
        check(status == 401, "[%s] %s to the safe-mode server: 401 (%s %s)" % (label, what, status, doc))
    check(srv.transfers() == count, "[%s] refused pushes wrote nothing (%d -> %d)"
          % (label, count, srv.transfers()))
    status, doc = resolve(srv, stranger)
    check(status == 404, "[%s] the refused newcomer is no member: %s %s" % (label, status, doc))

    # The refused message itself, properly signed, is taken once: refusals left no trace.
    status, body = srv.push(good.query, good.body)
    check_reply(crypt, key, "[%s] the newcomer's intact subscribe" % label, status, body, stranger,
                str(FOLLOW_OA_POINTS))
    check(srv.transfers() == count + 1, "[%s] the newcomer earns follow_oa once" % label)


def run_round(tmp, config, crypt, key, label):
    say("round %s: EncodingAESKey %s" % (label, key))
    work = os.path.join(tmp, label)
    os.makedirs(work)
    env = dict(os.environ, PGW_WECHAT_MP_SECRET=MP_SECRET, PGW_WECHAT_OA_SECRET=OA_SECRET,
               PGW_WECHAT_OA_TOKEN=OA_TOKEN, PGW_WECHAT_OA_AES_KEY=key)
    srv = Server(work, config, env)
    try:
        round_checks(srv, crypt, key, label)
    finally:
        srv.stop()
    logs = srv.logs()
    for secret, name in ((key, "EncodingAESKey"), (OA_TOKEN, "token"), (OA_SECRET, "OA secret")):
        check(secret not in logs, "[%s] the %s is not in the logs" % (label, name))
    verify = subprocess.run([BIN, "verify", "--db", srv.db], capture_output=True, text=True, timeout=60)
    check(verify.returncode == 0, "[%s] verify passes: %s%s" % (label, verify.stdout, verify.stderr))


def main():
    tmp = tempfile.mkdtemp(prefix="pgw-wechat-npm-")
    fake = None
    try:
        try:
            node, modules = install(tmp)
        except Skip as e:
            say("SKIPPED: %s" % e)
            return 77
        started = time.time()
        crypt = WxCrypt(node, modules)
        reference_sanity(crypt)
        fake = Fake(tmp)
        config = write_config(tmp, fake.port)
        random_key = "".join(secrets.choice(ALNUM) for _ in range(43))
        run_round(tmp, config, crypt, random_key, "random")
        run_round(tmp, config, crypt, RESEARCH_KEY, "research")
        say("%d checks, %d failed (%.1f s after the install)" % (checks, len(failures), time.time() - started))
        return 1 if failures else 0
    finally:
        if fake is not None:
            fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
