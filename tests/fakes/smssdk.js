#!/usr/bin/env node
// The SMS providers' own Node SDKs sending one SendSms to the fake
// (tests/fakes/sms_fake.py), so that the fake's signature checks are
// checked against the providers' code (sms_npm.py). Packages, installed by
// the test into a temporary prefix and found through NODE_PATH:
//   tencentcloud-sdk-nodejs-sms (TC3-HMAC-SHA256), @alicloud/pop-core (RPC).
//
// Reads one JSON object on stdin, writes one on stdout:
//   {"provider": "tencent", "port", "key_id", "key_secret", "phone",
//    "sdk_app_id", "sign_name", "template_id", "params": [...], "out_id"}
//   {"provider": "aliyun", "port", "key_id", "key_secret", "phone",
//    "sign_name", "template_id", "param_map": {...}, "out_id", "method"}
//   -> {"ok": true, "result": <the provider's answer>}
//      {"ok": false, "error": "<the provider's code or the SDK's message>"}
'use strict';

const http = require('http');
const net = require('net');

const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));

function out(o) {
  process.stdout.write(JSON.stringify(o) + '\n');
}

// The Tencent SDK signs the service named by the endpoint's first label
// ("sms") and the Host: it must talk to sms.tencentcloudapi.com. This
// agent carries its connections to the fake on 127.0.0.1 instead.
function toFake() {
  const agent = new http.Agent({ keepAlive: false });
  agent.createConnection = () => net.connect(input.port, '127.0.0.1');
  return agent;
}

async function tencent() {
  const Client = require('tencentcloud-sdk-nodejs-sms').sms.v20210111.Client;
  const client = new Client({
    credential: { secretId: input.key_id, secretKey: input.key_secret },
    region: 'ap-guangzhou',
    profile: {
      httpProfile: { endpoint: 'sms.tencentcloudapi.com', protocol: 'http://', agent: toFake() },
    },
  });
  return client.SendSms({
    PhoneNumberSet: [input.phone],
    SmsSdkAppId: input.sdk_app_id,
    SignName: input.sign_name,
    TemplateId: input.template_id,
    TemplateParamSet: input.params,
    SessionContext: input.out_id,
  });
}

async function aliyun() {
  const Core = require('@alicloud/pop-core');
  const client = new Core({
    accessKeyId: input.key_id,
    accessKeySecret: input.key_secret,
    endpoint: 'http://127.0.0.1:' + input.port, // RPC signatures do not cover the host
    apiVersion: '2017-05-25',
  });
  const params = {
    PhoneNumbers: input.phone,
    SignName: input.sign_name,
    TemplateCode: input.template_id,
    TemplateParam: JSON.stringify(input.param_map),
    OutId: input.out_id,
  };
  return client.request('SendSms', params, { method: input.method || 'POST' });
}

(input.provider === 'tencent' ? tencent() : aliyun())
  .then((result) => out({ ok: true, result }))
  .catch((e) => {
    out({ ok: false, error: String((e && (e.code || e.message)) || e) });
    process.exitCode = 1;
  });
