#!/usr/bin/env node
// An independent cross-check of pointsgw's WeChat message crypto (Node 20).
//
// Uses the npm package wechat-crypto@0.0.2 (node-webot; research/wechat-api.md
// §8), which the test installs with
//   npm install --prefix DIR wechat-crypto@0.0.2
// and makes visible with NODE_PATH=DIR/node_modules. Nothing here
// re-implements the algorithm (research §5.4); the package does all of it.
//
// Reads one JSON object from stdin, writes one JSON object (and a newline)
// to stdout:
//   {"op":"encrypt","token","aes_key","appid","message","timestamp","nonce"}
//     -> {"encrypt": b64, "msg_signature": hex,
//         "xml": "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[b64]]></Encrypt></xml>"}
//     ("to_user" optional, default gh_test; the random prefix is not
//     injectable in this package, so the output differs on every run)
//   {"op":"decrypt","token","aes_key","appid","encrypt","timestamp","nonce","msg_signature"}
//     -> {"ok": signature matches (exact, lowercase hex), "message", "id"}   (id is returned, not
//     compared with appid: the caller does that, as the package leaves it)
//   {"op":"sign","token","timestamp","nonce","encrypt"}
//     -> {"signature": hex}   (sha1 of the sorted 4 values, research §5.3)
// Any error -> {"error": "..."} and exit status 1.
'use strict';

// The package uses the deprecated `new Buffer`; keep Node's warning off stderr.
process.noDeprecation = true;

function fail(msg) {
  process.stdout.write(JSON.stringify({ error: String(msg) }) + '\n');
  process.exitCode = 1;
}

function str(req, key) {
  const v = req[key];
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  throw new Error('missing or non-string field: ' + key);
}

function run(req) {
  let WXBizMsgCrypt;
  try {
    WXBizMsgCrypt = require('wechat-crypto');
  } catch (e) {
    throw new Error('cannot load wechat-crypto (set NODE_PATH): ' + e.message);
  }
  if (req === null || typeof req !== 'object' || Array.isArray(req)) {
    throw new Error('input must be a JSON object');
  }
  switch (req.op) {
    case 'encrypt': {
      const c = new WXBizMsgCrypt(str(req, 'token'), str(req, 'aes_key'), str(req, 'appid'));
      const encrypt = c.encrypt(str(req, 'message'));
      const sig = c.getSignature(str(req, 'timestamp'), str(req, 'nonce'), encrypt);
      const to = req.to_user === undefined ? 'gh_test' : str(req, 'to_user');
      const xml = '<xml><ToUserName><![CDATA[' + to + ']]></ToUserName>' +
        '<Encrypt><![CDATA[' + encrypt + ']]></Encrypt></xml>';
      return { encrypt: encrypt, msg_signature: sig, xml: xml };
    }
    case 'decrypt': {
      const c = new WXBizMsgCrypt(str(req, 'token'), str(req, 'aes_key'), str(req, 'appid'));
      const encrypt = str(req, 'encrypt');
      const sig = c.getSignature(str(req, 'timestamp'), str(req, 'nonce'), encrypt);
      const out = c.decrypt(encrypt);
      return { ok: sig === str(req, 'msg_signature'), message: out.message, id: out.id };
    }
    case 'sign': {
      // getSignature uses only the token; the constructor insists on a valid
      // key and an id, so give it placeholders (43 chars -> 32 bytes).
      const c = new WXBizMsgCrypt(str(req, 'token'), 'A'.repeat(43), 'unused');
      return { signature: c.getSignature(str(req, 'timestamp'), str(req, 'nonce'), str(req, 'encrypt')) };
    }
    default:
      throw new Error('unknown op: ' + JSON.stringify(req.op));
  }
}

const chunks = [];
process.stdin.on('data', (d) => chunks.push(d));
process.stdin.on('error', (e) => fail('stdin: ' + e.message));
process.stdin.on('end', () => {
  let req;
  try {
    req = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    fail('input is not JSON: ' + e.message);
    return;
  }
  try {
    process.stdout.write(JSON.stringify(run(req)) + '\n');
  } catch (e) {
    fail(e && e.message ? e.message : e);
  }
});
