#!/usr/bin/env python3
"""The SMS signatures checked against the providers' own SDKs (issue 8).

    python3 sms_npm.py BINARY SOURCE_DIR

tests/fakes/sms_fake.py verifies Tencent's TC3-HMAC-SHA256 and Alibaba's
RPC HMAC-SHA1 signatures with its own Python code. Here the providers'
Node SDKs (tencentcloud-sdk-nodejs-sms, @alicloud/pop-core, installed into
a temporary prefix, driven by tests/fakes/smssdk.js) send SendSms to that
fake: it must accept them, and refuse them signed with a wrong secret. Then
`pointsgw serve` sends a verification code through the same fake with
each provider: accepted. So the gateway signs as the SDKs do, through a
verifier that both pass and that refuses a wrong key.

Without npm or a registry it prints "sms_npm: SKIPPED: <reason>" and exits
77 (ctest: skipped, not passed).
"""
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BIN, SRC = sys.argv[1], sys.argv[2]


def load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(SRC, "tests/integration/%s.py" % name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sys.argv = [sys.argv[0], BIN, SRC]
wx = load("wechat_api")    # Server, check, call
npm = load("wechat_npm")  # install, Skip
check = wx.check

PACKAGES = ("tencentcloud-sdk-nodejs-sms@4.1.306", "@alicloud/pop-core@1.8.0")
TENCENT = ("AKIDsmsnpm00000000000000000000000000", "sms-npm-tencent-secret-000000000")
ALIYUN = ("LTAIsmsnpm000000", "sms-npm-aliyun-secret-0000000")


def start_fake(tmp):
    port_file = os.path.join(tmp, "sms.port")
    proc = subprocess.Popen([sys.executable, os.path.join(SRC, "tests/fakes/sms_fake.py"),
                             "--port-file", port_file, "--tencent", ":".join(TENCENT),
                             "--aliyun", ":".join(ALIYUN)])
    for _ in range(200):
        if os.path.exists(port_file):
            return proc, int(open(port_file).read())
        time.sleep(0.05)
    raise SystemExit("sms_npm: the fake did not start")


def sdk(node, modules, request):
    r = subprocess.run([node, os.path.join(SRC, "tests/fakes/smssdk.js")],
                       input=json.dumps(request), capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, NODE_PATH=modules))
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit("sms_npm: smssdk.js said nothing usable: %s %s" % (r.stdout, r.stderr))


def messages(port):
    return wx.call(port, "GET", "/_fake/messages")[1]["messages"]


def sdks_pass_the_fake(node, modules, port):
    base = {"port": port, "sign_name": "静安汇", "out_id": "pgw-notice-7"}
    tencent = dict(base, provider="tencent", key_id=TENCENT[0], key_secret=TENCENT[1],
                   phone="+8613800138000", sdk_app_id="1400006666", template_id="1234",
                   params=["100", "2026-12-31"])
    doc = sdk(node, modules, tencent)
    status = doc.get("result", {}).get("SendStatusSet", [{}])[0]
    check(doc["ok"] and status.get("Code") == "Ok" and status.get("SessionContext") == "pgw-notice-7",
          "Tencent's SDK: the fake accepts its TC3 signature: %s" % doc)
    doc = sdk(node, modules, dict(tencent, key_secret="x" + TENCENT[1]))
    check(not doc["ok"] and doc["error"] == "AuthFailure.SignatureFailure",
          "and refuses it under a wrong secret: %s" % doc)
    aliyun = dict(base, provider="aliyun", key_id=ALIYUN[0], key_secret=ALIYUN[1],
                  phone="13900139000", template_id="SMS_1000002",
                  param_map={"points": "100", "date": "2026-12-31"})
    for method in ("POST", "GET"):
        doc = sdk(node, modules, dict(aliyun, method=method, out_id="pgw-notice-%s" % method))
        check(doc["ok"] and doc["result"].get("Code") == "OK",
              "Alibaba's SDK (%s): the fake accepts its RPC signature: %s" % (method, doc))
    doc = sdk(node, modules, dict(aliyun, key_secret="x" + ALIYUN[1]))
    check(not doc["ok"] and "SignatureDoesNotMatch" in doc["error"],
          "and refuses it under a wrong secret: %s" % doc)
    got = [(m["provider"], m["phone"], m["params"]) for m in messages(port) if m["code"] in ("Ok", "OK")]
    check(got == [("tencent", "+8613800138000", ["100", "2026-12-31"]),
                  ("aliyun", "+8613900139000", {"points": "100", "date": "2026-12-31"}),
                  ("aliyun", "+8613900139000", {"points": "100", "date": "2026-12-31"})],
          "the fake kept what the SDKs sent: %s" % got)


def gateway_passes_the_fake(tmp, port, provider, template, phone):
    with open(os.path.join(SRC, "config/pointsgw.example.json")) as f:
        cfg = json.load(f)
    cfg["keys"] = [{"name": "admin", "scope": "admin",
                    "key_sha256": hashlib.sha256(wx.ADMIN.encode()).hexdigest()}]
    sms = cfg["channels"]["sms"]
    sms.update({"provider": provider, "api_base": "http://127.0.0.1:%d" % port,
                "templates": {}, "otp": {"template": template}})
    path = os.path.join(tmp, provider + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f, ensure_ascii=False)
    keys = TENCENT if provider == "tencent" else ALIYUN
    env = dict(os.environ, PGW_SMS_SECRET_ID=keys[0], PGW_SMS_SECRET_KEY=keys[1])
    for name in ("PGW_WECHAT_MP_SECRET", "PGW_WECHAT_OA_SECRET", "PGW_WECHAT_OA_TOKEN"):
        env.pop(name, None)
    os.makedirs(os.path.join(tmp, provider))
    srv = wx.Server(os.path.join(tmp, provider), path, env)
    try:
        before = len(messages(port))
        status, doc = srv.request("POST", "/v1/sms/otp", {"phone": phone})
        sent = messages(port)[before:]
        check(status == 202 and len(sent) == 1 and sent[0]["provider"] == provider and
              sent[0]["code"] in ("Ok", "OK") and sent[0]["template_id"] == template,
              "[%s] the gateway's request passes the same checks: %s %s %s"
              % (provider, status, doc, sent))
    finally:
        srv.stop()


def main():
    tmp = tempfile.mkdtemp(prefix="pgw-sms-npm-")
    fake = None
    try:
        try:
            node, modules = npm.install(tmp, PACKAGES)
        except npm.Skip as e:
            print("sms_npm: SKIPPED: %s" % e, flush=True)
            return 77
        fake, port = start_fake(tmp)
        sdks_pass_the_fake(node, modules, port)
        gateway_passes_the_fake(tmp, port, "tencent", "1000003", "13800138001")
        gateway_passes_the_fake(tmp, port, "aliyun", "SMS_1000003", "13800138002")
        print("sms_npm: %d checks, %d failed" % (wx.checks, len(wx.failures)), flush=True)
        return 1 if wx.failures else 0
    finally:
        if fake is not None:
            fake.send_signal(signal.SIGTERM)
            fake.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
