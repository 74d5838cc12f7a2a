#!/usr/bin/env python3
"""A fake WeChat API server for pointsgw's integration tests (standard library only).

The gateway's `api_base` points here (http://127.0.0.1:PORT), so every path
is WeChat's real path and every answer has WeChat's real shape. Facts are
from ../../../shared/research/wechat-api.md ("research" below).

    python3 wechat_fake.py --port-file FILE [--app APPID:SECRET ...] [--expires-in N]

Binds 127.0.0.1 on a free port, writes that port (decimal + newline) to FILE
atomically once listening, and exits 0 on SIGTERM or SIGINT.

Faithful to WeChat
------------------
* Errors are HTTP 200 with {"errcode", "errmsg"}; successes of the
  access-token-protected calls carry errcode 0 and errmsg "ok"; the
  stable_token and jscode2session successes carry no errcode at all
  (research §1, §3.2).
* POST /cgi-bin/stable_token: JSON body only; 40002 / 41002 / 41004 / 40013 /
  40125; while the current token is valid the SAME token comes back with
  `expires_in` = its remaining seconds; force_refresh=true issues a new one
  and the old one stops working (40001 "not latest") (research §3.2).
* GET /sns/jscode2session: query parameters only; codes are single use
  (40163 once used, 40029 when unknown); `unionid` only when the user has
  one; `session_key` is base64 of 16 bytes (research §1).
* POST /wxa/business/getuserphonenumber: single-use code (40029),
  `countryCode` a number, `watermark.appid` = the token's appid; with the
  optional `openid` in the body, a code given to another user is refused
  (research §2; its errcode is not documented: 40029 here).
* POST /cgi-bin/message/subscribe/send: `data` must be a JSON object (a
  string is 47001), keyword limits of the research §4 table counted in
  characters, 47003 errmsg naming the field, one-time quota per
  (appid, openid, template) -> 43101 without one, int64 msgid (research §4).
* POST /cgi-bin/message/template/send: 43004 for a non-follower,
  client_msg_id de-duplication, int msgid (research §5.1).
* POST /cgi-bin/message/custom/send (a text): 43004 for a non-follower,
  44004 empty, 45002 over 2,048 bytes.
* Access-token errors 41001 / 40001 / 42001 (research §3.3); 43001 / 43002
  for the wrong HTTP method.

Simplified (on purpose)
-----------------------
* No "rid: ..." suffix and no hint text in errmsg, so tests can compare
  errmsg exactly. No rate limits or daily quotas (45009 / 45011 only via
  /_fake/faults). No IP whitelist (40164), no 41030 page check.
* stable_token: no rotation 5 minutes before expiry (research §3.2); a token
  lives exactly its lifetime and the next call after that gets a new one.
  force_refresh has no 20-a-day / 30-seconds limit. Only stable_token issues
  tokens (no /cgi-bin/token).
* Codes never expire by time (real: 5 minutes); they are per appid.
  A phone code registered with an "openid" must be redeemed with that openid
  when the request names one (mismatch -> 40029).
* subscribe keywords: a key whose kind is unknown is 47003 (real WeChat
  judges against the template's own keyword list, which the fake does not
  know); `enum` accepts any non-empty value; `number` has no sign; `amount`'s
  currency symbol is optional. Templates are not registered: any non-empty
  template_id is accepted.
* template message: legacy keys (first, keyword1, remark, ...) accept any
  string; keys named kind+digits get the subscribe limits.
* A missing or non-string required body field is 47001 "data format error"
  (WeChat's answer for malformed bodies); a non-boolean force_refresh too.

Control API (JSON in, JSON out; 400 {"error": ...} on bad input)
-----------------------------------------------------------------
  POST /_fake/apps             {"appid","secret"}
  POST /_fake/config           {"expires_in": N}          lifetime of tokens issued from now on
  POST /_fake/login_codes      {"appid","code","openid","unionid"?}
  POST /_fake/phone_codes      {"appid","code","phone","country_code"? (86),
                                "country_code_as_string"? (false), "openid"?,
                                "no_phone_info"? (false), "watermark_appid"?}; phone ""
                               answers an empty purePhoneNumber
                               no_phone_info: the code is spent and the answer
                               is errcode 0 without phone_info; watermark_appid:
                               the watermark names that app instead of the caller's
  POST /_fake/subscribe_quota  {"appid","openid","template_id","count"}   adds
  GET  /_fake/subscribe_quota?appid=&openid=&template_id=  -> {"count"}
  POST /_fake/followers        {"appid","openid","following","unionid"?}
                               (unionid: what cgi-bin/user/info tells of them)
  POST /_fake/expire_tokens    {"appid"?, "errcode"? (42001 | 40001, default 42001)}
  GET  /_fake/tokens?appid=    -> {"tokens":[{"access_token","appid","expires_in","state"}]}
  GET  /_fake/session_keys     -> {"session_keys":[...]}  every session_key issued
  POST /_fake/faults/clear     drops the faults not used up
  POST /_fake/faults           {"path","count","errcode"?,"errmsg"?,"http_status"?,
                                "body"?,"repeat"?,"delay_ms"?,"close"?,"lose_answer"?,
                                "answer_body"?}
                               close: the connection closes with no answer, the
                               request not handled; lose_answer: it is handled
                               (a message delivered, a code spent), then the
                               connection closes with no answer, as when the
                               answer is lost on its way back; answer_body: it
                               is handled, then answered HTTP 200 with this
                               text in place of its answer (not JSON, cut, a
                               field of another type, a msgid past int64);
                               repeat: the body N times (an answer over 1 MiB)
  GET  /_fake/requests?path=   -> {"requests":[...]}  arrival order
  GET  /_fake/stats            -> {"stable_token_calls":{appid:n},"delivered":[...]}
  POST /_fake/reset            clears everything except apps and config
"""
import argparse
import base64
import json
import math
import re
import secrets
import sys
import threading
import time
import traceback
import unicodedata
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from fake_server import parse_pair, serve

MAX_BODY = 1 << 20  # 1 MiB
TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40008: "invalid message type",
    40013: "invalid appid",
    40014: "invalid access_token",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    44004: "empty content",
    45002: "content size out of limit",
    45015: "response out of time limit or subscription is canceled",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
    48001: "api unauthorized",
}

REAL_PATHS = {
    "/cgi-bin/stable_token",
    "/sns/jscode2session",
    "/wxa/business/getuserphonenumber",
    "/cgi-bin/message/subscribe/send",
    "/cgi-bin/message/template/send",
    "/cgi-bin/user/info",
    "/cgi-bin/message/custom/send",
}


class WxError(Exception):
    """A WeChat error answer: HTTP 200 + {"errcode","errmsg"}."""

    def __init__(self, errcode, errmsg=None):
        super().__init__(errcode)
        self.errcode = errcode
        self.errmsg = errmsg if errmsg is not None else ERRMSG.get(errcode, "system error")


class BadControl(Exception):
    """Bad input to a /_fake/ control endpoint: HTTP 400 {"error"}."""


class BodyTooLarge(Exception):
    pass


# ---------------------------------------------------------------------------
# Subscribe-message keyword checks (research §4 table). Lengths are counted
# in characters (code points), never bytes.

def is_cjk(ch):
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF
            or 0x20000 <= cp <= 0x2FA1F)


def is_control(ch):
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def is_symbol(ch):
    return unicodedata.category(ch)[0] in ("P", "S")


_DATE_YMD = (r"(?:(?P<y1>\d{4})年(?P<m1>\d{1,2})月(?P<d1>\d{1,2})日"
             r"|(?P<y2>\d{4})(?P<s2>[-/.])(?P<m2>\d{1,2})(?P=s2)(?P<d2>\d{1,2}))")
_DATE_ANY = (r"(?:(?P<y1>\d{4})年(?P<m1>\d{1,2})月(?:(?P<d1>\d{1,2})日)?"
             r"|(?P<y2>\d{4})(?P<s2>[-/.])(?P<m2>\d{1,2})(?:(?P=s2)(?P<d2>\d{1,2}))?"
             r"|(?P<m3>\d{1,2})月(?P<d3>\d{1,2})日"
             r"|(?P<m4>\d{1,2})-(?P<d4>\d{2}))")
_TIME = r"(?P<hh>\d{1,2}):(?P<mm>\d{2})(?::(?P<ss>\d{2}))?"
TIME_RE = re.compile(r"(?:" + _DATE_YMD + r"\s?)?" + _TIME)
DATE_RE = re.compile(_DATE_ANY + r"(?:\s?" + _TIME + r")?")


def _fields_ok(m):
    g = m.groupdict()
    month = g.get("m1") or g.get("m2") or g.get("m3") or g.get("m4")
    day = g.get("d1") or g.get("d2") or g.get("d3") or g.get("d4")
    if month is not None and not 1 <= int(month) <= 12:
        return False
    if day is not None and not 1 <= int(day) <= 31:
        return False
    if g.get("hh") is not None:
        if int(g["hh"]) > 23 or int(g["mm"]) > 59:
            return False
        if g.get("ss") is not None and int(g["ss"]) > 59:
            return False
    return True


def _ranged(regex, v):
    parts = v.split("~")
    if len(parts) > 2:
        return False
    for p in parts:
        m = regex.fullmatch(p.strip())
        if not m or not _fields_ok(m):
            return False
    return True


def _number(v):
    return re.fullmatch(r"\d+(\.\d+)?", v) is not None and sum(c.isdigit() for c in v) <= 32


def _amount(v):
    return re.fullmatch(r"[¥$￥]?[0-9]{1,10}(\.[0-9]+)?元?", v) is not None


def _name(v):
    if all(c.isascii() for c in v):
        return len(v) <= 20 and all(c.isalpha() or c == " " or (c.isprintable() and is_symbol(c))
                                    for c in v)
    return len(v) <= 10 and all(is_cjk(c) or c == "·" or (c.isascii() and (c.isalpha() or c == " "))
                                for c in v)


def _car_number(v):
    if len(v) > 8:
        return False
    for i, c in enumerate(v):
        ascii_alnum = c.isascii() and c.isalnum()
        if not ascii_alnum and not (is_cjk(c) and i in (0, len(v) - 1)):
            return False
    return True


KEYWORD_CHECKS = {
    "thing": lambda v: len(v) <= 20 and not any(is_control(c) for c in v),
    "number": _number,
    "letter": lambda v: len(v) <= 32 and all(c.isascii() and c.isalpha() for c in v),
    "symbol": lambda v: len(v) <= 5 and all(is_symbol(c) for c in v),
    "character_string": lambda v: len(v) <= 32 and all(0x20 <= ord(c) <= 0x7E for c in v),
    "time": lambda v: _ranged(TIME_RE, v),
    "date": lambda v: _ranged(DATE_RE, v),
    "amount": _amount,
    "phone_number": lambda v: len(v) <= 17 and re.fullmatch(r"[0-9+\-]+", v) is not None,
    "car_number": _car_number,
    "name": _name,
    "phrase": lambda v: len(v) <= 5 and all(is_cjk(c) for c in v),
    "enum": lambda v: True,
}
# Longest kind first so "character_string1" is not read as something shorter.
KEYWORD_RE = re.compile(r"(" + "|".join(sorted(KEYWORD_CHECKS, key=len, reverse=True)) + r")(\d+)")


def argument_invalid(key, empty=False):
    return WxError(47003, "argument invalid! data.%s.value %s" % (key, "is empty" if empty else "invalid"))


def check_keyword(key, entry, strict_kind):
    """Validate one data entry {"value": ...}. strict_kind: a key that is not
    kind+digits is an error (subscribe); otherwise any string is accepted for
    it (legacy template keys such as first, keyword1, remark)."""
    if not isinstance(entry, dict):
        raise argument_invalid(key)
    value = entry.get("value", "")
    if not isinstance(value, str):
        raise argument_invalid(key)
    m = KEYWORD_RE.fullmatch(key)
    if m is None:
        if strict_kind:
            raise argument_invalid(key)
        return
    if value == "":
        raise argument_invalid(key, empty=True)
    if not KEYWORD_CHECKS[m.group(1)](value):
        raise argument_invalid(key)


# ---------------------------------------------------------------------------
# State. Every field is read and written under State.lock.

class State:
    def __init__(self, apps, expires_in):
        self.lock = threading.Lock()
        self.apps = dict(apps)  # appid -> secret
        self.expires_in = expires_in
        self.clear()

    def clear(self):
        self.tokens = {}  # token -> {"appid","expires_at","revoked": errcode or None}
        self.current = {}  # appid -> token returned by stable_token
        self.login_codes = {}  # (appid, code) -> {"openid","unionid","used"}
        self.phone_codes = {}  # (appid, code) -> {...,"used"}
        self.quota = {}  # (appid, openid, template_id) -> n
        self.followers = set()  # (appid, openid)
        self.unionids = {}  # (appid, openid) -> unionid, for user/info
        self.faults = {}  # path -> [fault dict with "left"]
        self.requests = []
        self.stable_token_calls = {}
        self.delivered = []
        self.session_keys = []  # every one issued, for "never logged" checks
        self.client_msg_ids = {}  # (appid, client_msg_id) -> msgid
        self.next_subscribe_msgid = 294402298110051942 + secrets.randbelow(1 << 40)
        self.next_template_msgid = 200228332 + secrets.randbelow(1 << 20)

    def new_token(self, appid, now):
        token = "".join(secrets.choice(TOKEN_CHARS) for _ in range(96))
        self.tokens[token] = {"appid": appid, "expires_at": now + self.expires_in, "revoked": None}
        self.current[appid] = token
        return token

    def token_state(self, token, now):
        """None when valid, else the errcode that token now earns."""
        t = self.tokens.get(token)
        if t is None:
            return 40001
        if t["revoked"] is not None:
            return t["revoked"]
        if now >= t["expires_at"]:
            return 42001
        return None

    def take_fault(self, path):
        queue = self.faults.get(path)
        if not queue:
            return None
        fault = queue[0]
        fault["left"] -= 1
        if fault["left"] <= 0:
            queue.pop(0)
        return fault


STATE = None  # set in main()


# ---------------------------------------------------------------------------
# Real endpoints. Each takes (handler, query, body_bytes) and returns a dict
# or raises WxError. They run with STATE.lock held.

def parse_json_object(raw):
    try:
        text = raw.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise WxError(47001)
    if not isinstance(obj, dict):
        raise WxError(47001)
    return obj


def opt_str(obj, key):
    v = obj.get(key)
    if v is not None and not isinstance(v, str):
        raise WxError(47001)
    return v or ""


def check_token(query, now):
    token = query.get("access_token", "")
    if token == "":
        raise WxError(41001)
    err = STATE.token_state(token, now)
    if err is not None:
        raise WxError(err)
    return STATE.tokens[token]["appid"]


def ep_stable_token(method, query, raw, now):
    if method != "POST":
        raise WxError(43002)
    body = parse_json_object(raw)
    appid = body.get("appid")
    if isinstance(appid, str) and appid:
        STATE.stable_token_calls[appid] = STATE.stable_token_calls.get(appid, 0) + 1
    if body.get("grant_type") != "client_credential":
        raise WxError(40002)
    if not isinstance(appid, str):
        raise WxError(47001 if appid is not None else 41002)
    if appid == "":
        raise WxError(41002)
    secret = opt_str(body, "secret")
    if secret == "":
        raise WxError(41004)
    force = body.get("force_refresh", False)
    if not isinstance(force, bool):
        raise WxError(47001)
    if appid not in STATE.apps:
        raise WxError(40013)
    if STATE.apps[appid] != secret:
        raise WxError(40125)
    token = STATE.current.get(appid)
    valid = token is not None and STATE.token_state(token, now) is None
    if valid and force:
        STATE.tokens[token]["revoked"] = 40001  # no longer the latest
    # WeChat rotates a stable token 5 minutes before it expires and keeps
    # the old one valid to its end (research/wechat-api.md 3.2), so no
    # answer has expires_in under 300.
    rotating = valid and STATE.tokens[token]["expires_at"] - now < 300
    if not valid or force or rotating:
        token = STATE.new_token(appid, now)
    remaining = STATE.tokens[token]["expires_at"] - now
    return {"access_token": token, "expires_in": max(1, math.ceil(remaining))}


def ep_jscode2session(method, query, raw, now):
    if method != "GET":
        raise WxError(43001)
    if query.get("grant_type") != "authorization_code":
        raise WxError(40002)
    appid = query.get("appid", "")
    if appid == "":
        raise WxError(41002)
    secret = query.get("secret", "")
    if secret == "":
        raise WxError(41004)
    code = query.get("js_code", "")
    if code == "":
        raise WxError(41008)
    if appid not in STATE.apps:
        raise WxError(40013)
    if STATE.apps[appid] != secret:
        raise WxError(40125)
    entry = STATE.login_codes.get((appid, code))
    if entry is None:
        raise WxError(40029)
    if entry["used"]:
        raise WxError(40163)
    entry["used"] = True
    out = {"session_key": base64.b64encode(secrets.token_bytes(16)).decode("ascii"),
           "openid": entry["openid"]}
    STATE.session_keys.append(out["session_key"])
    if entry.get("unionid"):
        out["unionid"] = entry["unionid"]
    return out


def ep_phone(method, query, raw, now):
    if method != "POST":
        raise WxError(43002)
    appid = check_token(query, now)
    body = parse_json_object(raw)
    code = body.get("code")
    if not isinstance(code, str):
        raise WxError(47001)
    openid = opt_str(body, "openid")
    entry = STATE.phone_codes.get((appid, code))
    if entry is None or entry["used"]:
        raise WxError(40029)
    # With an openid in the body WeChat checks that the code was given to
    # that user (research §2); the research names no errcode for a code of
    # another user, so the fake answers 40029 "invalid code" (the code is
    # not spent). Without one nothing is checked, as at WeChat.
    if openid and entry.get("openid") and entry["openid"] != openid:
        raise WxError(40029)
    entry["used"] = True
    if entry["no_phone_info"]:
        return {"errcode": 0, "errmsg": "ok"}
    cc = entry["country_code"]
    pure = entry["phone"]
    return {"errcode": 0, "errmsg": "ok", "phone_info": {
        "phoneNumber": pure if cc == 86 else "+%d%s" % (cc, pure),
        "purePhoneNumber": pure,
        "countryCode": str(cc) if entry["country_code_as_string"] else cc,
        "watermark": {"timestamp": int(now), "appid": entry["watermark_appid"] or appid},
    }}


def common_message_checks(body):
    touser = opt_str(body, "touser")
    if touser == "":
        raise WxError(40003)
    template_id = opt_str(body, "template_id")
    if template_id == "":
        raise WxError(40037)
    data = body.get("data")
    if not isinstance(data, dict):
        raise WxError(47001)
    return touser, template_id, data


def ep_subscribe(method, query, raw, now):
    if method != "POST":
        raise WxError(43002)
    appid = check_token(query, now)
    body = parse_json_object(raw)
    touser, template_id, data = common_message_checks(body)
    page = opt_str(body, "page")
    state = opt_str(body, "miniprogram_state") or "formal"
    if state not in ("developer", "trial", "formal"):
        raise WxError(47003, "argument invalid! miniprogram_state invalid")
    lang = opt_str(body, "lang") or "zh_CN"
    if lang not in ("zh_CN", "en_US", "zh_HK", "zh_TW"):
        raise WxError(47003, "argument invalid! lang invalid")
    if not data:
        raise WxError(47003, "argument invalid! data is empty")
    for key, entry in data.items():
        check_keyword(key, entry, strict_kind=True)
    qkey = (appid, touser, template_id)
    if STATE.quota.get(qkey, 0) <= 0:
        raise WxError(43101)
    STATE.quota[qkey] -= 1
    msgid = STATE.next_subscribe_msgid
    STATE.next_subscribe_msgid += 1 + secrets.randbelow(1000)
    STATE.delivered.append({"kind": "subscribe", "appid": appid, "touser": touser,
                            "template_id": template_id, "data": data, "msgid": msgid,
                            "page": page, "miniprogram_state": state, "lang": lang,
                            "time": now})
    return {"errcode": 0, "errmsg": "ok", "msgid": msgid}


def ep_template(method, query, raw, now):
    if method != "POST":
        raise WxError(43002)
    appid = check_token(query, now)
    body = parse_json_object(raw)
    touser, template_id, data = common_message_checks(body)
    url = opt_str(body, "url")
    mp = body.get("miniprogram")
    if mp is not None:
        if not isinstance(mp, dict) or not isinstance(mp.get("appid"), str) or not mp["appid"]:
            raise WxError(47001)
        path = mp.get("pagepath", mp.get("path", ""))
        if not isinstance(path, str):
            raise WxError(47001)
    client_msg_id = opt_str(body, "client_msg_id")
    for key, entry in data.items():
        check_keyword(key, entry, strict_kind=False)
        color = entry.get("color")
        if color is not None and not isinstance(color, str):
            raise WxError(47001)
    if (appid, touser) not in STATE.followers:
        raise WxError(43004)
    record = {"kind": "template", "appid": appid, "touser": touser, "template_id": template_id,
              "data": data, "url": url, "miniprogram": mp, "client_msg_id": client_msg_id,
              "time": now}
    if client_msg_id and (appid, client_msg_id) in STATE.client_msg_ids:
        record["msgid"] = STATE.client_msg_ids[(appid, client_msg_id)]
        record["duplicate"] = True
    else:
        record["msgid"] = STATE.next_template_msgid
        STATE.next_template_msgid += 1 + secrets.randbelow(100)
        if client_msg_id:
            STATE.client_msg_ids[(appid, client_msg_id)] = record["msgid"]
    STATE.delivered.append(record)
    return {"errcode": 0, "errmsg": "ok", "msgid": record["msgid"]}


def ep_user_info(method, query, raw, now):
    """GET cgi-bin/user/info (research section 6): a follower's profile,
    with its unionid when the account is bound to an open platform;
    {"subscribe": 0, "openid"} for someone who does not follow."""
    if method != "GET":
        raise WxError(43001)
    appid = check_token(query, now)
    openid = query.get("openid", "")
    if not openid:
        raise WxError(40003)
    if (appid, openid) not in STATE.followers:
        return {"subscribe": 0, "openid": openid}
    info = {"subscribe": 1, "openid": openid, "language": "zh_CN",
            "subscribe_time": int(now), "remark": "", "groupid": 0, "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE", "qr_scene": 0, "qr_scene_str": ""}
    unionid = STATE.unionids.get((appid, openid))
    if unionid:
        info["unionid"] = unionid
    return info


def ep_custom(method, query, raw, now):
    """POST cgi-bin/message/custom/send, a text: 43004 for a non-follower
    (real WeChat: 45015 past the 48 hours after the user's last message,
    which the fake does not track); 44004 for empty content, 45002 over
    2,048 bytes; 40008 for a msgtype other than text (the only one the
    gateway sends)."""
    if method != "POST":
        raise WxError(43002)
    appid = check_token(query, now)
    body = parse_json_object(raw)
    touser = opt_str(body, "touser")
    if touser == "":
        raise WxError(40003)
    if opt_str(body, "msgtype") != "text":
        raise WxError(40008)
    text = body.get("text")
    content = text.get("content") if isinstance(text, dict) else None
    if not isinstance(content, str):
        raise WxError(47001)
    if content == "":
        raise WxError(44004)
    if len(content.encode("utf-8")) > 2048:
        raise WxError(45002)
    if (appid, touser) not in STATE.followers:
        raise WxError(43004)
    STATE.delivered.append({"kind": "custom", "appid": appid, "touser": touser,
                            "content": content, "time": now})
    return {"errcode": 0, "errmsg": "ok"}


ENDPOINTS = {
    "/cgi-bin/user/info": ep_user_info,
    "/cgi-bin/stable_token": ep_stable_token,
    "/sns/jscode2session": ep_jscode2session,
    "/wxa/business/getuserphonenumber": ep_phone,
    "/cgi-bin/message/subscribe/send": ep_subscribe,
    "/cgi-bin/message/template/send": ep_template,
    "/cgi-bin/message/custom/send": ep_custom,
}


# ---------------------------------------------------------------------------
# Control endpoints (tests only). Run with STATE.lock held.

def need_str(body, key, allow_empty=False):
    v = body.get(key)
    if not isinstance(v, str) or (not allow_empty and v == ""):
        raise BadControl("%s: non-empty string required" % key)
    return v


def need_int(body, key, default=None, lo=None):
    v = body.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
        raise BadControl("%s: integer%s required" % (key, "" if lo is None else " >= %d" % lo))
    return v


def ctl_apps(body, query, now):
    STATE.apps[need_str(body, "appid")] = need_str(body, "secret")
    return {"ok": True}


def ctl_config(body, query, now):
    STATE.expires_in = need_int(body, "expires_in", lo=1)
    return {"ok": True, "expires_in": STATE.expires_in}


def ctl_login_codes(body, query, now):
    unionid = body.get("unionid")
    if unionid is not None and not isinstance(unionid, str):
        raise BadControl("unionid: string required")
    STATE.login_codes[(need_str(body, "appid"), need_str(body, "code"))] = {
        "openid": need_str(body, "openid"), "unionid": unionid or None, "used": False}
    return {"ok": True}


def ctl_phone_codes(body, query, now):
    phone = need_str(body, "phone", allow_empty=True)  # "": an answer with an empty number
    if phone and not phone.isdigit():
        raise BadControl("phone: digits only (the pure number), or empty")
    openid = body.get("openid")
    if openid is not None and not isinstance(openid, str):
        raise BadControl("openid: string required")
    mark = body.get("watermark_appid")
    if mark is not None and not isinstance(mark, str):
        raise BadControl("watermark_appid: string required")
    STATE.phone_codes[(need_str(body, "appid"), need_str(body, "code"))] = {
        "phone": phone, "country_code": need_int(body, "country_code", 86, lo=1),
        "country_code_as_string": body.get("country_code_as_string") is True,
        "no_phone_info": body.get("no_phone_info") is True,
        "watermark_appid": mark or None, "openid": openid or None, "used": False}
    return {"ok": True}


def ctl_quota(body, query, now):
    if body is None:
        key = (query.get("appid", ""), query.get("openid", ""), query.get("template_id", ""))
        return {"count": STATE.quota.get(key, 0)}
    key = (need_str(body, "appid"), need_str(body, "openid"), need_str(body, "template_id"))
    STATE.quota[key] = max(0, STATE.quota.get(key, 0) + need_int(body, "count", 1))
    return {"ok": True, "count": STATE.quota[key]}


def ctl_followers(body, query, now):
    key = (need_str(body, "appid"), need_str(body, "openid"))
    following = body.get("following", True)
    if not isinstance(following, bool):
        raise BadControl("following: boolean required")
    unionid = body.get("unionid")
    if unionid is not None and (not isinstance(unionid, str) or not unionid):
        raise BadControl("unionid: non-empty string")
    if following:
        STATE.followers.add(key)
    else:
        STATE.followers.discard(key)
    if unionid:
        STATE.unionids[key] = unionid
    return {"ok": True}


def ctl_expire_tokens(body, query, now):
    appid = body.get("appid")
    if appid is not None and not isinstance(appid, str):
        raise BadControl("appid: string required")
    errcode = need_int(body, "errcode", 42001)
    if errcode not in (42001, 40001):
        raise BadControl("errcode: 42001 or 40001")
    n = 0
    for t in STATE.tokens.values():
        if (appid is None or t["appid"] == appid) and t["revoked"] is None:
            t["revoked"] = errcode
            n += 1
    for a in list(STATE.current):
        if appid is None or a == appid:
            del STATE.current[a]
    return {"ok": True, "expired": n}


def ctl_tokens(body, query, now):
    appid = query.get("appid")
    out = []
    for token, t in STATE.tokens.items():
        if appid and t["appid"] != appid:
            continue
        err = STATE.token_state(token, now)
        out.append({"access_token": token, "appid": t["appid"],
                    "expires_in": max(0, math.ceil(t["expires_at"] - now)),
                    "state": "valid" if err is None else err,
                    "current": STATE.current.get(t["appid"]) == token})
    return {"tokens": out}


def ctl_faults(body, query, now):
    path = need_str(body, "path")
    if not path.startswith("/") or path.startswith("/_fake/"):
        raise BadControl("path: a real endpoint path")
    fault = {"left": need_int(body, "count", 1, lo=1),
             "delay_ms": need_int(body, "delay_ms", 0, lo=0),
             "close": body.get("close") is True,
             "lose_answer": body.get("lose_answer") is True}
    if "answer_body" in body:
        if not isinstance(body["answer_body"], str):
            raise BadControl("answer_body: a string")
        fault["answer_body"] = body["answer_body"]
    if "errcode" in body:
        fault["errcode"] = need_int(body, "errcode")
        fault["errmsg"] = body.get("errmsg") if isinstance(body.get("errmsg"), str) \
            else ERRMSG.get(fault["errcode"], "system error")
    if "http_status" in body:
        fault["http_status"] = need_int(body, "http_status", lo=100)
        if fault["http_status"] > 599:
            raise BadControl("http_status: 100..599")
        fault["body"] = body.get("body") if isinstance(body.get("body"), str) else ""
        repeat = need_int(body, "repeat", 1, lo=1)
        if len(fault["body"]) * repeat > 4 * MAX_BODY:
            raise BadControl("body: at most 4 MiB repeated")
        fault["body"] *= repeat
    STATE.faults.setdefault(path, []).append(fault)
    return {"ok": True}


def ctl_clear_faults(body, query, now):
    STATE.faults.clear()
    return {"ok": True}


def ctl_requests(body, query, now):
    path = query.get("path")
    return {"requests": [dict(r) for r in STATE.requests if path is None or r["path"] == path]}


def ctl_stats(body, query, now):
    return {"stable_token_calls": dict(STATE.stable_token_calls), "delivered": list(STATE.delivered)}


def ctl_session_keys(body, query, now):
    return {"session_keys": list(STATE.session_keys)}


def ctl_reset(body, query, now):
    STATE.clear()
    return {"ok": True}


# path -> {method: handler}; GET handlers get body None
CONTROLS = {
    "/_fake/apps": {"POST": ctl_apps},
    "/_fake/config": {"POST": ctl_config},
    "/_fake/login_codes": {"POST": ctl_login_codes},
    "/_fake/phone_codes": {"POST": ctl_phone_codes},
    "/_fake/subscribe_quota": {"POST": ctl_quota, "GET": ctl_quota},
    "/_fake/followers": {"POST": ctl_followers},
    "/_fake/expire_tokens": {"POST": ctl_expire_tokens},
    "/_fake/tokens": {"GET": ctl_tokens},
    "/_fake/session_keys": {"GET": ctl_session_keys},
    "/_fake/faults": {"POST": ctl_faults},
    "/_fake/faults/clear": {"POST": ctl_clear_faults},
    "/_fake/requests": {"GET": ctl_requests},
    "/_fake/stats": {"GET": ctl_stats},
    "/_fake/reset": {"POST": ctl_reset},
}


# ---------------------------------------------------------------------------
# HTTP plumbing.

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wechat-fake"
    # Headers and body leave in two writes: with Nagle on, a kept-alive
    # connection waits for the client's delayed ACK (40 ms) between them.
    disable_nagle_algorithm = True
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: no access log
        pass

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    # -- body ---------------------------------------------------------------

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise BodyTooLarge()
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BodyTooLarge()  # unparseable: refuse and close, like too large
        if n > MAX_BODY or n < 0:
            raise BodyTooLarge()
        return self.rfile.read(n) if n else b""

    # -- responses ----------------------------------------------------------

    def send_json(self, status, obj, close=False):
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_raw(self, status, text):
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # -- dispatch -----------------------------------------------------------

    def dispatch(self):
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc(file=sys.stderr)
            try:
                self.send_json(500, {"errcode": -1, "errmsg": "fake internal error"}, close=True)
            except OSError:
                self.close_connection = True

    def _dispatch(self):
        now = time.time()
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.startswith("/_fake/"):
            return self.control(path, query, now)

        try:
            raw = self.read_body()
        except BodyTooLarge:
            with STATE.lock:
                STATE.requests.append({"method": self.command, "path": path, "query": query,
                                       "body": None, "errcode": None, "http_status": 413,
                                       "time": now})
            return self.send_json(413, {"errcode": -1, "errmsg": "request entity too large"},
                                  close=True)
        body_rec = None
        if raw:
            try:
                body_rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                body_rec = raw.decode("utf-8", errors="replace")

        with STATE.lock:
            rec = {"method": self.command, "path": path, "query": query, "body": body_rec,
                   "errcode": None, "time": now}
            STATE.requests.append(rec)
            fault = STATE.take_fault(path)
            if fault is not None:
                rec["fault"] = True
                delay_only = not (fault["close"] or "http_status" in fault or "errcode" in fault)
                # A delay-only fault is then handled normally, which counts the call.
                if path == "/cgi-bin/stable_token" and isinstance(body_rec, dict) \
                        and not delay_only \
                        and isinstance(body_rec.get("appid"), str) and body_rec["appid"]:
                    a = body_rec["appid"]
                    STATE.stable_token_calls[a] = STATE.stable_token_calls.get(a, 0) + 1

        if fault is not None:
            if fault["delay_ms"]:
                time.sleep(fault["delay_ms"] / 1000.0)
            if fault["close"]:
                self.close_connection = True
                return  # no answer at all
            if "http_status" in fault:
                with STATE.lock:
                    rec["http_status"] = fault["http_status"]
                return self.send_raw(fault["http_status"], fault["body"])
            if "errcode" in fault:
                with STATE.lock:
                    rec["errcode"] = fault["errcode"]
                    rec["http_status"] = 200
                return self.send_json(200, {"errcode": fault["errcode"], "errmsg": fault["errmsg"]})
            now = time.time()  # delay only: handle normally, as of now

        ep = ENDPOINTS.get(path)
        with STATE.lock:
            if ep is None:
                status, out = 404, {"errcode": -1, "errmsg": "not found"}
            else:
                status = 200
                try:
                    out = ep(self.command, query, raw, now)
                except WxError as e:
                    out = {"errcode": e.errcode, "errmsg": e.errmsg}
            rec["errcode"] = out.get("errcode", 0)
            rec["http_status"] = status
        if fault is not None and fault["lose_answer"]:
            self.close_connection = True
            return  # handled, but no answer reaches the caller
        if fault is not None and "answer_body" in fault:
            return self.send_raw(200, fault["answer_body"])  # handled, answered garbled
        self.send_json(status, out)

    def control(self, path, query, now):
        methods = CONTROLS.get(path)
        if methods is None:
            return self.send_json(404, {"errcode": -1, "errmsg": "not found"})
        fn = methods.get(self.command)
        if fn is None:
            return self.send_json(405, {"error": "method not allowed"})
        try:
            raw = self.read_body()
        except BodyTooLarge:
            return self.send_json(413, {"error": "body too large"}, close=True)
        body = None
        if self.command == "POST":
            try:
                body = json.loads(raw.decode("utf-8")) if raw else {}
            except (UnicodeDecodeError, ValueError):
                return self.send_json(400, {"error": "body is not UTF-8 JSON"})
            if not isinstance(body, dict):
                return self.send_json(400, {"error": "body must be a JSON object"})
        with STATE.lock:
            try:
                out = fn(body, query, now)
            except BadControl as e:
                return self.send_json(400, {"error": str(e)})
        self.send_json(200, out)


def main():
    global STATE
    ap = argparse.ArgumentParser(description="Fake WeChat API server for tests.")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--app", action="append", type=parse_pair, default=[], metavar="APPID:SECRET")
    ap.add_argument("--expires-in", type=int, default=7200)
    args = ap.parse_args()
    if args.expires_in < 1:
        ap.error("--expires-in must be >= 1")
    STATE = State(dict(args.app), args.expires_in)

    return serve(Handler, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
