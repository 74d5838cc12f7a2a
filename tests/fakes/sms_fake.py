#!/usr/bin/env python3
"""A fake of two SMS providers for pointsgw's tests (Python standard library only).

Tencent Cloud SMS SendSms (2021-01-11, TC3-HMAC-SHA256) and Alibaba Cloud
dysmsapi SendSms (2017-05-25, RPC HMAC-SHA1) on one port of 127.0.0.1. The
gateway's `api_base` points here (http://127.0.0.1:PORT) for either
provider: a request carrying X-TC-* headers or a TC3 Authorization is
Tencent's, anything else Alibaba's. Facts are from
../../../shared/research/sms-api.md ("research" below).

    python3 sms_fake.py --port-file FILE [--tencent SECRETID:SECRETKEY ...]
                        [--aliyun KEYID:SECRET ...]

Binds 127.0.0.1 on a free port, writes that port (decimal + newline) to FILE
atomically once listening, and exits 0 on SIGTERM or SIGINT.

Faithful
--------
* Signatures are VERIFIED, recomputed from the request as it arrived:
  - Tencent (research 1.7): the Authorization header is parsed; the
    credential's date must be the UTC date of X-TC-Timestamp and its service
    "sms"; the headers named in SignedHeaders (which must include
    content-type and host, sorted, each present) are canonicalised from the
    request's own values (trimmed, lower-cased), the payload hash is of the
    raw body bytes, and the key chain TC3+key -> date -> service ->
    tc3_request signs the string to sign. A wrong signature is
    AuthFailure.SignatureFailure, an unknown SecretId
    AuthFailure.SecretIdNotFound, a timestamp more than 300 s from now
    AuthFailure.SignatureExpire (research 1.2).
  - Alibaba (research 2.5): every parameter but Signature, from the query
    and (POST) the form body, sorted by name in byte order, percent-encoded
    (RFC 3986 unreserved kept, %20 for space, upper-case hex), the string to
    sign with the HTTP method actually used, HMAC-SHA1 with secret + "&",
    base64. Wrong is SignatureDoesNotMatch (its message carries the server's
    string to sign, as Alibaba's does; that string holds no secret); an
    SignatureNonce seen before is SignatureNonceUsed; Timestamp must be
    YYYY-MM-DDThh:mm:ssZ, within 15 minutes of now.
* Answers have the real shapes: Tencent always HTTP 200 with
  {"Response": {"SendStatusSet": [...], "RequestId"}} or {"Response":
  {"Error": {"Code", "Message"}, "RequestId"}} (research 1.4); per-number
  failures INSIDE SendStatusSet with Code "Ok" (that capitalisation) for
  the others; SendStatus has SerialNo, PhoneNumber, Fee, SessionContext
  (echoed), Code, Message, IsoCode. Alibaba {"Code": "OK", "Message": "OK",
  "BizId", "RequestId"} (research 2.2).
* Required fields and their checks: Tencent PhoneNumberSet (1..200, else
  MissingParameter.EmptyPhoneNumberSet / LimitExceeded.PhoneNumberCountLimit),
  SmsSdkAppId, TemplateId, SignName (2..12 letters, digits or Chinese),
  TemplateParamSet (strings; URLs refused; per-variable length, 12
  characters by default: the personal-verified limit of research 1.3),
  SessionContext < 512 bytes. Alibaba PhoneNumbers (comma separated, at
  most 1000), SignName, TemplateCode (SMS_ + digits), TemplateParam (a JSON
  object of strings, else isv.INVALID_JSON_PARAM), OutId < 256 characters.
  Numbers are normalised as research 5 says (+86 / 0086 / 86 / bare).
* Frequency: Tencent's same number + same content once per 30 s
  (LimitExceeded.PhoneNumberThirtySecondLimit, research 1.6); Alibaba's 50 a
  day per signature + template + number (isv.BUSINESS_LIMIT_CONTROL,
  research 2.4). Lengths are counted in characters, never bytes.

Simplified (on purpose)
-----------------------
* Codes not named by the research: AuthFailure.InvalidAuthorization (a
  malformed Authorization), MissingParameter, InvalidAction, NoSuchVersion,
  InvalidParameter (Tencent); Missing<Name> for an absent parameter,
  InvalidAccessKeyId.NotFound, InvalidTimeStamp.Format, InvalidVersion,
  InvalidAction.NotFound, InvalidParameter (Alibaba). Messages are short
  English texts, not the providers' exact wording.
* Alibaba's gateway-level errors (signature, key, nonce, timestamp,
  missing parameters) are HTTP 400; its isv.* business errors HTTP 200 (the
  research did not check which status Alibaba uses: clients must read Code
  either way). Only Format=JSON is answered (XML would be the real default).
* Tencent: POST with application/json only (no GET, no v1 signatures); the
  host signed is the Host header without its port (a real host has none);
  X-TC-Region must be present, any value is accepted. Any numeric
  SmsSdkAppId and TemplateId are accepted, and any template not registered
  as unapproved; sign and template problems are per-number statuses.
* Alibaba has one Code for the request: with several numbers, the first
  failing number decides it. A number registered "blacklisted" is accepted
  by Alibaba (carriers block it at delivery, which the fake does not model).
* No delivery reports, no billing beyond Tencent's Fee (parts of the
  signature + variables, the template's own text being unknown), no
  per-account QPS limits (use faults), no verification-code template rules.

Control API (JSON in, JSON out; 400 {"error": ...} on bad input)
-----------------------------------------------------------------
  POST /_fake/faults     {"provider": "tencent"|"aliyun", "count": n (1),
                          "code"?, "message"?, "per_number"? (Tencent: put the
                          code in SendStatusSet instead of Response.Error),
                          "http_status"?, "body"?, "pad"? (that many spaces after
                          the body: answers over the control API's 1 MiB),
                          "latin1"? (the body sent as Latin-1, "\u00ff" one
                          byte 0xFF: answers that are not UTF-8),
                          "delay_ms"?, "lose_answer"?}
                         A fault answers the next `count` requests of that
                         provider before any check; delay_ms alone delays
                         and then answers normally; lose_answer handles the
                         request (an SMS accepted) and closes the connection
                         without an answer, as when it is lost on its way back.
  POST /_fake/numbers    {"phone", "state": "ok"|"invalid"|"limited"|"blacklisted"}
  POST /_fake/templates  {"provider", "template_id", "state": "approved"|"unapproved"}
  POST /_fake/config     {"tencent_param_chars_max"?, "tencent_same_content_gap_s"?,
                          "aliyun_daily_limit"?}
  GET  /_fake/messages   -> {"messages": [{"provider", "phone", "sign_name",
                          "template_id", "params", "out_id", "code", "method",
                          "time"}]}  one per number per accepted request
  GET  /_fake/requests   -> {"requests": [{"provider", "method", "http_status",
                          "code", "fault", "time"}]}  every request
  POST /_fake/reset      clears everything except the keys
"""
import argparse
import base64
import calendar
import hashlib
import hmac
import json
import re
import secrets
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, quote, urlsplit

from fake_server import parse_pair, serve

MAX_BODY = 1 << 20
TENCENT_VERSION = "2021-01-11"
ALIYUN_VERSION = "2017-05-25"
TC3_SKEW_S = 300  # research 1.2
ALIYUN_SKEW_S = 900  # not documented (research, open points): 15 minutes
TEXT_CHARS_MAX = 500  # research 4

DEFAULT_CONFIG = {
    "tencent_param_chars_max": 12,
    "tencent_same_content_gap_s": 30,
    "aliyun_daily_limit": 50,
}


class Refusal(Exception):
    """A provider error answer."""

    def __init__(self, code, message, http_status=200):
        super().__init__(code)
        self.code = code
        self.message = message
        self.http_status = http_status


class BadControl(Exception):
    pass


class BodyTooLarge(Exception):
    pass


# ---------------------------------------------------------------------------
# Shared rules

def is_cjk(ch):
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF
            or 0x20000 <= cp <= 0x2FA1F)


def sign_name_ok(s):
    """Research 4: 2..12 characters, Chinese, letters, digits."""
    return isinstance(s, str) and 2 <= len(s) <= 12 and all(
        is_cjk(c) or (c.isascii() and c.isalnum()) for c in s)


def has_url(s):
    low = s.lower()
    return "http://" in low or "https://" in low or "www." in low


def normalise_phone(s):
    """Research 5: +86 / 0086 / 86 / bare 11 digits -> "+86" + national, or None."""
    if not isinstance(s, str):
        return None
    s = re.sub(r"[\s\-()]", "", s)
    if s.startswith("+86"):
        s = s[3:]
    elif s.startswith("0086"):
        s = s[4:]
    elif s.startswith("86") and len(s) == 13:
        s = s[2:]
    if s.startswith("01") and len(s) == 12:
        s = s[1:]
    if re.fullmatch(r"1[3-9]\d{9}", s) is None:
        return None
    return "+86" + s


def fee_parts(chars):
    """Research 4: <= 70 characters one part, else ceil(n / 67)."""
    return 1 if chars <= 70 else -(-chars // 67)


def percent_encode(s):
    """Research 2.5 step 2: unreserved A-Z a-z 0-9 - _ . ~, the rest %XY."""
    return quote(s.encode("utf-8"), safe="-_.~")


# ---------------------------------------------------------------------------
# State. Every field is read and written under State.lock.

class State:
    def __init__(self, tencent, aliyun):
        self.lock = threading.Lock()
        self.tencent_keys = dict(tencent)
        self.aliyun_keys = dict(aliyun)
        self.clear()

    def clear(self):
        self.config = dict(DEFAULT_CONFIG)
        self.numbers = {}  # "+86..." -> state
        self.unapproved = set()  # (provider, template_id)
        self.faults = {"tencent": [], "aliyun": []}
        self.messages = []
        self.requests = []
        self.tencent_sent = {}  # (phone, content) -> last time accepted
        self.aliyun_sent = {}  # (sign, template, phone) -> [times accepted]
        self.nonces = {}  # nonce -> time seen
        self.serial = 1000 + secrets.randbelow(1 << 20)

    def take_fault(self, provider):
        queue = self.faults[provider]
        if not queue:
            return None
        fault = queue[0]
        fault["left"] -= 1
        if fault["left"] <= 0:
            queue.pop(0)
        return fault

    def next_serial(self):
        self.serial += 1
        return self.serial


STATE = None  # set in main()


# ---------------------------------------------------------------------------
# Tencent

AUTH_RE = re.compile(r"TC3-HMAC-SHA256 Credential=([^/, ]+)/(\d{4}-\d{2}-\d{2})/([a-z0-9]+)"
                     r"/tc3_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})")


def host_without_port(host):
    host = host.strip().lower()
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.split(":", 1)[0]


def tc3_signature(key, timestamp, date, service, canonical_request):
    def hm(k, m):
        return hmac.new(k, m.encode("utf-8"), hashlib.sha256).digest()

    string_to_sign = "TC3-HMAC-SHA256\n%d\n%s/%s/tc3_request\n%s" % (
        timestamp, date, service, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest())
    k_signing = hm(hm(hm(("TC3" + key).encode("utf-8"), date), service), "tc3_request")
    return hmac.new(k_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def tencent_verify(method, headers, raw, now):
    """Checks the request's transport and signature (research 1.2, 1.7)."""
    if method != "POST":
        raise Refusal("InvalidParameter", "fake: only POST with TC3-HMAC-SHA256")
    ctype = headers.get("content-type", "")
    if not ctype.lower().startswith("application/json"):
        raise Refusal("InvalidParameter", "fake: Content-Type must be application/json")
    action = headers.get("x-tc-action")
    if action is None:
        raise Refusal("MissingParameter", "X-TC-Action is missing")
    if action != "SendSms":
        raise Refusal("InvalidAction", "action %s not found" % action)
    if headers.get("x-tc-version") != TENCENT_VERSION:
        raise Refusal("NoSuchVersion", "version must be %s" % TENCENT_VERSION)
    if not headers.get("x-tc-region"):
        raise Refusal("MissingParameter", "X-TC-Region is missing")
    ts_text = headers.get("x-tc-timestamp", "")
    if re.fullmatch(r"\d{1,12}", ts_text) is None:
        raise Refusal("MissingParameter", "X-TC-Timestamp is missing or not an integer")
    timestamp = int(ts_text)
    m = AUTH_RE.fullmatch(headers.get("authorization", ""))
    if m is None:
        raise Refusal("AuthFailure.InvalidAuthorization", "Authorization is malformed")
    secret_id, date, service, signed, signature = m.groups()
    if abs(now - timestamp) > TC3_SKEW_S:
        raise Refusal("AuthFailure.SignatureExpire", "the signature has expired")
    key = STATE.tencent_keys.get(secret_id)
    if key is None:
        raise Refusal("AuthFailure.SecretIdNotFound", "the SecretId is not found")
    names = signed.split(";")
    if service != "sms" or date != time.strftime("%Y-%m-%d", time.gmtime(timestamp)) \
            or "content-type" not in names or "host" not in names \
            or names != sorted(set(names)) or any(n not in headers for n in names):
        raise Refusal("AuthFailure.SignatureFailure", "the signature is not correct")
    lines = []
    for n in names:
        value = headers[n]
        value = host_without_port(value) if n == "host" else value.strip().lower()
        lines.append("%s:%s\n" % (n, value))
    canonical = "POST\n/\n\n%s\n%s\n%s" % ("".join(lines), signed, hashlib.sha256(raw).hexdigest())
    expected = tc3_signature(key, timestamp, date, service, canonical)
    if not hmac.compare_digest(expected, signature):
        raise Refusal("AuthFailure.SignatureFailure", "the signature is not correct")


def tencent_body(raw):
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refusal("FailedOperation.JsonParseFail", "the body is not JSON")
    if not isinstance(body, dict):
        raise Refusal("FailedOperation.JsonParseFail", "the body is not a JSON object")
    return body


def need_string(body, key, missing_code="MissingParameter"):
    v = body.get(key)
    if v is None:
        raise Refusal(missing_code, "%s is missing" % key)
    if not isinstance(v, str) or v == "":
        raise Refusal("InvalidParameter", "%s must be a non-empty string" % key)
    return v


def tencent_content_code(body, sign, template, params):
    """The per-number code the content earns (sign, template, variables), or None."""
    if not sign_name_ok(sign):
        return "FailedOperation.SignatureIncorrectOrUnapproved", "signature is not approved"
    if ("tencent", template) in STATE.unapproved:
        return "FailedOperation.TemplateIncorrectOrUnapproved", "template is not approved"
    cap = STATE.config["tencent_param_chars_max"]
    for p in params:
        if has_url(p):
            return ("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter",
                    "URLs are not allowed in template parameters")
        if len(p) > cap:
            return ("InvalidParameterValue.TemplateParameterLengthLimit",
                    "a template parameter is over %d characters" % cap)
    if len(sign) + 2 + sum(len(p) for p in params) > TEXT_CHARS_MAX:
        return "InvalidParameterValue.ContentLengthLimit", "the message is too long"
    return None


def tencent_send(method, headers, raw, now, fault):
    body = tencent_body(raw)
    phones = body.get("PhoneNumberSet")
    if not isinstance(phones, list) or not phones:
        raise Refusal("MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty")
    if len(phones) > 200:
        raise Refusal("LimitExceeded.PhoneNumberCountLimit", "over 200 numbers")
    app = need_string(body, "SmsSdkAppId")
    if not app.isdigit():
        raise Refusal("InvalidParameterValue.SdkAppIdNotExist", "SmsSdkAppId does not exist")
    template = need_string(body, "TemplateId")
    sign = body.get("SignName", "")
    if not isinstance(sign, str):
        raise Refusal("InvalidParameter", "SignName must be a string")
    params = body.get("TemplateParamSet", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise Refusal("InvalidParameter", "TemplateParamSet must be an array of strings")
    session = body.get("SessionContext", "")
    if not isinstance(session, str) or len(session.encode("utf-8")) >= 512:
        raise Refusal("InvalidParameter", "SessionContext must be a string under 512 bytes")
    content_fail = tencent_content_code(body, sign, template, params)
    if fault is not None and fault.get("per_number") and "code" in fault:
        content_fail = (fault["code"], fault.get("message") or "fake fault")
    content = json.dumps([sign, template, params], ensure_ascii=False)
    statuses = []
    for given in phones:
        phone = normalise_phone(given)
        state = STATE.numbers.get(phone, "ok")
        if content_fail is not None:
            code, message = content_fail
        elif phone is None or state == "invalid":
            code, message = "InvalidParameterValue.IncorrectPhoneNumber", "incorrect phone number"
        elif state == "blacklisted":
            code, message = "FailedOperation.PhoneNumberInBlacklist", "the number is blacklisted"
        elif state == "limited":
            code, message = "LimitExceeded.PhoneNumberDailyLimit", "daily limit of the number"
        elif now - STATE.tencent_sent.get((phone, content), -1e18) \
                < STATE.config["tencent_same_content_gap_s"]:
            code, message = ("LimitExceeded.PhoneNumberThirtySecondLimit",
                             "same content to the number within 30 seconds")
        else:
            code, message = "Ok", "send success"
        chars = len(sign) + 2 + sum(len(p) for p in params)
        statuses.append({
            "SerialNo": "2433:%d%018d" % (STATE.next_serial(), secrets.randbelow(10 ** 18))
            if code == "Ok" else "",
            "PhoneNumber": phone if phone is not None else str(given),
            "Fee": fee_parts(chars) if code == "Ok" else 0,
            "SessionContext": session,
            "Code": code,
            "Message": message,
            "IsoCode": "CN" if phone is not None else "DEF",
        })
        if code == "Ok":
            STATE.tencent_sent[(phone, content)] = now
        STATE.messages.append({"provider": "tencent", "phone": phone or str(given),
                               "sign_name": sign, "template_id": template, "params": params,
                               "out_id": session, "code": code, "method": method, "time": now})
    return {"Response": {"SendStatusSet": statuses, "RequestId": str(uuid.uuid4())}}


def tencent_error(code, message):
    return {"Response": {"Error": {"Code": code, "Message": message},
                         "RequestId": str(uuid.uuid4())}}


# ---------------------------------------------------------------------------
# Alibaba

TIMESTAMP_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z")
COMMON = ["AccessKeyId", "Action", "SignatureMethod", "SignatureNonce", "SignatureVersion",
          "Timestamp", "Version", "Signature"]


def aliyun_params(method, query_text, headers, raw):
    pairs = parse_qsl(query_text, keep_blank_values=True)
    if method == "POST" and raw:
        ctype = headers.get("content-type", "")
        if not ctype.lower().startswith("application/x-www-form-urlencoded"):
            raise Refusal("InvalidParameter", "fake: the body must be a form", 400)
        try:
            pairs += parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise Refusal("InvalidParameter", "the form is not UTF-8", 400)
    params = {}
    for k, v in pairs:
        if k in params:
            raise Refusal("InvalidParameter", "parameter %s given twice" % k, 400)
        params[k] = v
    return params


def aliyun_string_to_sign(method, params):
    canonical = "&".join("%s=%s" % (percent_encode(k), percent_encode(v))
                         for k, v in sorted(params.items(), key=lambda kv: kv[0].encode("utf-8"))
                         if k != "Signature")
    return "%s&%s&%s" % (method, percent_encode("/"), percent_encode(canonical))


def aliyun_verify(method, params, now):
    for name in COMMON:
        if name not in params:
            raise Refusal("Missing" + name, "%s is mandatory for this action" % name, 400)
    secret = STATE.aliyun_keys.get(params["AccessKeyId"])
    if secret is None:
        raise Refusal("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 400)
    if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
        raise Refusal("InvalidParameter", "fake: HMAC-SHA1 signatures 1.0 only", 400)
    m = TIMESTAMP_RE.fullmatch(params["Timestamp"])
    if m is None:
        raise Refusal("InvalidTimeStamp.Format", "Specified time stamp is not in ISO 8601.", 400)
    try:
        stamp = calendar.timegm(time.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise Refusal("InvalidTimeStamp.Format", "Specified time stamp is not valid.", 400)
    if abs(now - stamp) > ALIYUN_SKEW_S:
        raise Refusal("InvalidTimeStamp.Expired", "Specified time stamp or date header is "
                      "expired.", 400)
    sts = aliyun_string_to_sign(method, params)
    expected = base64.b64encode(hmac.new((secret + "&").encode("utf-8"), sts.encode("utf-8"),
                                         hashlib.sha1).digest()).decode("ascii")
    if not hmac.compare_digest(expected, params["Signature"]):
        raise Refusal("SignatureDoesNotMatch", "Specified signature is not matched with our "
                      "calculation. server string to sign is:" + sts, 400)
    nonce = params["SignatureNonce"]
    for n, t in list(STATE.nonces.items()):  # a nonce only needs remembering while valid
        if now - t > 2 * ALIYUN_SKEW_S:
            del STATE.nonces[n]
    if nonce in STATE.nonces:
        raise Refusal("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
    STATE.nonces[nonce] = now
    if params["Action"] != "SendSms":
        raise Refusal("InvalidAction.NotFound", "Specified api is not found.", 400)
    if params["Version"] != ALIYUN_VERSION:
        raise Refusal("InvalidVersion", "Specified parameter Version is not valid.", 400)
    if params.get("Format", "XML").upper() != "JSON":
        raise Refusal("InvalidParameter", "fake: Format=JSON only", 400)


def aliyun_send(method, params, now):
    for name in ("PhoneNumbers", "SignName", "TemplateCode"):
        if params.get(name, "") == "":
            raise Refusal("Missing" + name, "%s is mandatory for this action" % name, 400)
    numbers = params["PhoneNumbers"].split(",")
    if len(numbers) > 1000:
        raise Refusal("isv.MOBILE_COUNT_OVER_LIMIT", "over 1000 numbers")
    sign, template = params["SignName"], params["TemplateCode"]
    if not sign_name_ok(sign):
        raise Refusal("isv.SMS_SIGNATURE_ILLEGAL", "the signature is not approved")
    if re.fullmatch(r"SMS_\d+", template) is None or ("aliyun", template) in STATE.unapproved:
        raise Refusal("isv.SMS_TEMPLATE_ILLEGAL", "the template is not approved")
    values = {}
    if "TemplateParam" in params:
        try:
            values = json.loads(params["TemplateParam"])
        except ValueError:
            raise Refusal("isv.INVALID_JSON_PARAM", "TemplateParam is not JSON")
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise Refusal("isv.INVALID_JSON_PARAM", "TemplateParam values must be strings")
    if any(has_url(v) for v in values.values()):
        raise Refusal("isv.PARAM_NOT_SUPPORT_URL", "URLs are not allowed in parameters")
    if len(sign) + 2 + sum(len(v) for v in values.values()) > TEXT_CHARS_MAX:
        raise Refusal("isv.PARAM_LENGTH_LIMIT", "the message is too long")
    out_id = params.get("OutId", "")
    if len(out_id) >= 256:
        raise Refusal("isv.INVALID_PARAMETERS", "OutId is 256 characters or more")
    phones = []
    for given in numbers:
        phone = normalise_phone(given)
        state = STATE.numbers.get(phone, "ok")
        if phone is None or state == "invalid":
            raise Refusal("isv.MOBILE_NUMBER_ILLEGAL", "illegal mobile number")
        key = (sign, template, phone)
        recent = [t for t in STATE.aliyun_sent.get(key, []) if now - t < 86400]
        STATE.aliyun_sent[key] = recent
        if state == "limited" or len(recent) >= STATE.config["aliyun_daily_limit"]:
            raise Refusal("isv.BUSINESS_LIMIT_CONTROL", "frequency control of the number")
        phones.append(phone)
    for phone in phones:
        STATE.aliyun_sent[(sign, template, phone)].append(now)
        STATE.messages.append({"provider": "aliyun", "phone": phone, "sign_name": sign,
                               "template_id": template, "params": values, "out_id": out_id,
                               "code": "OK", "method": method, "time": now})
    return {"Code": "OK", "Message": "OK",
            "BizId": "%d%06d^0" % (STATE.next_serial(), secrets.randbelow(10 ** 6)),
            "RequestId": str(uuid.uuid4()).upper()}


# ---------------------------------------------------------------------------
# Control endpoints (run with STATE.lock held)

def need_provider(body):
    p = body.get("provider")
    if p not in ("tencent", "aliyun"):
        raise BadControl("provider must be tencent or aliyun")
    return p


def need_int(body, key, default, lo, hi):
    v = body.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadControl("%s must be an integer in %d..%d" % (key, lo, hi))
    return v


def ctl_faults(body, now):
    provider = need_provider(body)
    fault = {"left": need_int(body, "count", 1, 1, 1000000),
             "delay_ms": need_int(body, "delay_ms", 0, 0, 60000),
             "lose_answer": body.get("lose_answer") is True}
    if "code" in body:
        if not isinstance(body["code"], str) or not body["code"]:
            raise BadControl("code must be a non-empty string")
        fault["code"] = body["code"]
        fault["message"] = str(body.get("message", "fake fault"))
        fault["per_number"] = bool(body.get("per_number", False))
    if "http_status" in body:
        fault["http_status"] = need_int(body, "http_status", 200, 100, 599)
        fault["body"] = str(body.get("body", "fake fault")) + \
            " " * need_int(body, "pad", 0, 0, 4 << 20)
        fault["encoding"] = "latin-1" if body.get("latin1") is True else "utf-8"
    if "code" not in fault and "http_status" not in fault and fault["delay_ms"] == 0 \
            and not fault["lose_answer"]:
        raise BadControl("a fault needs code, http_status, delay_ms or lose_answer")
    STATE.faults[provider].append(fault)
    return {"ok": True}


def ctl_numbers(body, now):
    phone = normalise_phone(body.get("phone"))
    if phone is None:
        raise BadControl("phone must be a mainland mobile")
    state = body.get("state")
    if state not in ("ok", "invalid", "limited", "blacklisted"):
        raise BadControl("state must be ok, invalid, limited or blacklisted")
    STATE.numbers[phone] = state
    return {"ok": True}


def ctl_templates(body, now):
    provider = need_provider(body)
    template = body.get("template_id")
    if not isinstance(template, str) or not template:
        raise BadControl("template_id must be a non-empty string")
    state = body.get("state")
    if state == "unapproved":
        STATE.unapproved.add((provider, template))
    elif state == "approved":
        STATE.unapproved.discard((provider, template))
    else:
        raise BadControl("state must be approved or unapproved")
    return {"ok": True}


def ctl_config(body, now):
    for key in body:
        if key not in DEFAULT_CONFIG:
            raise BadControl("unknown config key %s" % key)
        STATE.config[key] = need_int(body, key, 0, 0, 1000000)
    return dict(STATE.config)


def ctl_messages(body, now):
    return {"messages": STATE.messages}


def ctl_requests(body, now):
    return {"requests": STATE.requests}


def ctl_reset(body, now):
    STATE.clear()
    return {"ok": True}


CONTROLS = {
    "/_fake/faults": {"POST": ctl_faults},
    "/_fake/numbers": {"POST": ctl_numbers},
    "/_fake/templates": {"POST": ctl_templates},
    "/_fake/config": {"POST": ctl_config},
    "/_fake/messages": {"GET": ctl_messages},
    "/_fake/requests": {"GET": ctl_requests},
    "/_fake/reset": {"POST": ctl_reset},
}


# ---------------------------------------------------------------------------
# HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sms-fake"
    # Headers and body leave in two writes: with Nagle on, a kept-alive
    # connection waits for the client's delayed ACK (40 ms) between them.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet: no access log
        pass

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise BodyTooLarge()
        return self.rfile.read(n) if n > 0 else b""

    def send_bytes(self, status, data, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status, obj):
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_bytes(status, data, "application/json; charset=utf-8")

    def dispatch(self):
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc(file=sys.stderr)
            try:
                self.send_json(500, {"error": "fake internal error"})
            except OSError:
                self.close_connection = True

    def _dispatch(self):
        now = time.time()
        parts = urlsplit(self.path)
        try:
            raw = self.read_body()
        except BodyTooLarge:
            self.close_connection = True
            return self.send_json(413, {"error": "body too large"})
        if parts.path.startswith("/_fake/"):
            return self.control(parts.path, raw, now)
        if parts.path != "/":
            return self.send_json(404, {"error": "not found"})
        headers = {k.lower(): v for k, v in self.headers.items()}
        tencent = any(k.startswith("x-tc-") for k in headers) or \
            headers.get("authorization", "").startswith("TC3-")
        provider = "tencent" if tencent else "aliyun"
        with STATE.lock:
            rec = {"provider": provider, "method": self.command, "http_status": None,
                   "code": None, "fault": False, "time": now}
            STATE.requests.append(rec)
            fault = STATE.take_fault(provider)
            rec["fault"] = fault is not None
        if fault is not None and fault["delay_ms"]:
            time.sleep(fault["delay_ms"] / 1000.0)
            now = time.time()
        if fault is not None and "http_status" in fault and "code" not in fault:
            with STATE.lock:
                rec["http_status"] = fault["http_status"]
            return self.send_bytes(fault["http_status"], fault["body"].encode(fault["encoding"]),
                                   "text/plain; charset=utf-8")
        with STATE.lock:
            status = 200
            try:
                if fault is not None and "code" in fault and not fault["per_number"]:
                    raise Refusal(fault["code"], fault["message"], fault.get("http_status", 200))
                if tencent:
                    tencent_verify(self.command, headers, raw, now)
                    out = tencent_send(self.command, headers, raw, now, fault)
                    codes = [s["Code"] for s in out["Response"]["SendStatusSet"]]
                    rec["code"] = codes[0] if len(codes) == 1 else codes
                else:
                    params = aliyun_params(self.command, parts.query, headers, raw)
                    aliyun_verify(self.command, params, now)
                    out = aliyun_send(self.command, params, now)
                    rec["code"] = out["Code"]
            except Refusal as e:
                status = e.http_status  # Tencent's errors are all HTTP 200
                out = tencent_error(e.code, e.message) if tencent else {
                    "Code": e.code, "Message": e.message, "RequestId": str(uuid.uuid4()).upper()}
                rec["code"] = e.code
            rec["http_status"] = status
        if fault is not None and fault["lose_answer"]:
            self.close_connection = True
            return  # handled, but no answer reaches the caller
        self.send_json(status, out)

    def control(self, path, raw, now):
        methods = CONTROLS.get(path)
        if methods is None:
            return self.send_json(404, {"error": "not found"})
        fn = methods.get(self.command)
        if fn is None:
            return self.send_json(405, {"error": "method not allowed"})
        body = {}
        if self.command == "POST" and raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return self.send_json(400, {"error": "body is not UTF-8 JSON"})
            if not isinstance(body, dict):
                return self.send_json(400, {"error": "body must be a JSON object"})
        with STATE.lock:
            try:
                out = fn(body, now)
            except BadControl as e:
                return self.send_json(400, {"error": str(e)})
            data = json.dumps(out, ensure_ascii=False).encode("utf-8")
        self.send_bytes(200, data, "application/json; charset=utf-8")


def main():
    global STATE
    ap = argparse.ArgumentParser(description="Fake Tencent Cloud and Alibaba Cloud SMS APIs.")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--tencent", action="append", type=parse_pair, default=[],
                    metavar="SECRETID:SECRETKEY")
    ap.add_argument("--aliyun", action="append", type=parse_pair, default=[],
                    metavar="KEYID:SECRET")
    args = ap.parse_args()
    STATE = State(args.tencent, args.aliyun)

    return serve(Handler, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
