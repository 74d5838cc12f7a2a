/*
 * test_sms_sign.c - the SMS providers' signatures (adapters/sms/sign.c)
 * against every vector of research/sms-api.md: Tencent TC3 T1, T2, T3
 * (section 1.8) with each published intermediate, Alibaba RPC A1 (GET and
 * POST) and A2 (section 2.6); then percent-encoding edge cases and every
 * bound refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "adapters/sms/sign.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Tencent TC3 (research 1.8) ------------------------------------------- */

/* The CVM DescribeInstances body, with literal backslash-u escapes. */
static const char CVM_BODY[] = "{\"Limit\": 1, \"Filters\": [{\"Values\": "
                               "[\"\\u672a\\u547d\\u540d\"], \"Name\": \"instance-name\"}]}";
#define CVM_PAYLOAD_HASH "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
#define CVM_TIMESTAMP    1551113065

static pgw_tc3_signature *sign_ok(const pgw_tc3_input *in)
{
    pgw_tc3_signature *sig = malloc(sizeof(*sig));
    assert_non_null(sig);
    pgw_err err = {0};
    int rc = pgw_tc3_sign(in, sig, &err);
    if (rc != PGW_OK)
        fail_msg("pgw_tc3_sign: %s", err.msg);
    return sig;
}

/* T1: the current documentation revision, x-tc-action signed too; the key
 * is the documentation's mask of 32 asterisks. */
static void test_tc3_t1(void **state)
{
    (void)state;
    const pgw_tc3_header h[] = {{"X-TC-Action", "DescribeInstances"},
                                {"Host", "cvm.tencentcloudapi.com"},
                                {"Content-Type", "application/json; charset=utf-8"}};
    pgw_tc3_input in = {.secret_id = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
                        .secret_key = "********************************",
                        .service = "cvm",
                        .timestamp = CVM_TIMESTAMP,
                        .headers = h,
                        .n_headers = 3,
                        .payload = CVM_BODY,
                        .payload_len = strlen(CVM_BODY)};
    pgw_tc3_signature *sig = sign_ok(&in);
    assert_string_equal(sig->hashed_payload, CVM_PAYLOAD_HASH);
    assert_string_equal(sig->canonical_request, "POST\n/\n\n"
                                                "content-type:application/json; charset=utf-8\n"
                                                "host:cvm.tencentcloudapi.com\n"
                                                "x-tc-action:describeinstances\n"
                                                "\n"
                                                "content-type;host;x-tc-action\n" CVM_PAYLOAD_HASH);
    assert_string_equal(sig->hashed_canonical_request,
                        "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84");
    assert_string_equal(sig->date, "2019-02-25");
    assert_string_equal(sig->credential_scope, "2019-02-25/cvm/tc3_request");
    assert_string_equal(sig->string_to_sign,
                        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
                        "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84");
    assert_string_equal(sig->secret_date,
                        "da98fb70dcf6b112dc21038d1eeeb3a95c74b4dcb12c1131f864f6066bd02be0");
    assert_string_equal(sig->secret_service,
                        "8d70cbefb03939f929db64d32dc2ba89b1095620119fe3e050e2b18c5bd2752f");
    assert_string_equal(sig->secret_signing,
                        "b596b923aad85185e2d1f6659d2a062e0a86731226e021e61bfe06f7ed05f5af");
    assert_string_equal(sig->signature,
                        "10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f");
    assert_string_equal(sig->signed_headers, "content-type;host;x-tc-action");
    assert_string_equal(
        sig->authorization,
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/"
        "2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host;x-tc-action, "
        "Signature=10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f");
    free(sig);
}

/* T2: the older English revision, content-type and host only. Header
 * names and values are signed trimmed and lower-cased, whatever we pass. */
static void test_tc3_t2(void **state)
{
    (void)state;
    const pgw_tc3_header h[] = {{"content-type", "  application/json; charset=utf-8 "},
                                {"HOST", "CVM.tencentcloudapi.com"}};
    pgw_tc3_input in = {.secret_id = "AKIDEXAMPLE",
                        .secret_key = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
                        .service = "cvm",
                        .timestamp = CVM_TIMESTAMP,
                        .headers = h,
                        .n_headers = 2,
                        .payload = CVM_BODY,
                        .payload_len = strlen(CVM_BODY)};
    pgw_tc3_signature *sig = sign_ok(&in);
    assert_string_equal(sig->hashed_payload, CVM_PAYLOAD_HASH);
    assert_string_equal(sig->hashed_canonical_request,
                        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031");
    assert_string_equal(sig->signature,
                        "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168");
    assert_string_equal(sig->signed_headers, "content-type;host");
    free(sig);
}

/* T3: an SMS-shaped request as the Node SDK signs it; raw UTF-8 body. */
static void test_tc3_t3_sms(void **state)
{
    (void)state;
    static const char body[] =
        "{\"PhoneNumberSet\":[\"+8613800138000\"],\"SmsSdkAppId\":\"1400006666\",\"SignName\":"
        "\"测试\",\"TemplateId\":\"1234\",\"TemplateParamSet\":[\"100\"],\"SessionContext\":\"s\"}";
    const pgw_tc3_header h[] = {{"Content-Type", "application/json"},
                                {"Host", "sms.tencentcloudapi.com"}};
    pgw_tc3_input in = {.secret_id = "AKIDtest",
                        .secret_key = "skTest",
                        .service = "sms",
                        .timestamp = 1795520302,
                        .headers = h,
                        .n_headers = 2,
                        .payload = body,
                        .payload_len = strlen(body)};
    pgw_tc3_signature *sig = sign_ok(&in);
    assert_string_equal(sig->date, "2026-11-24");
    assert_string_equal(sig->signature,
                        "baec56821a2daada0701d514514bc6fde894b90ae5b59f3cdaf8f895eaa7a6de");
    assert_string_equal(sig->authorization,
                        "TC3-HMAC-SHA256 Credential=AKIDtest/2026-11-24/sms/tc3_request, "
                        "SignedHeaders=content-type;host, Signature="
                        "baec56821a2daada0701d514514bc6fde894b90ae5b59f3cdaf8f895eaa7a6de");
    free(sig);
}

/* The date is UTC's: 23:59:59Z and 00:00:00Z fall on two dates, although
 * both are the same Beijing day (07:59 and 08:00 CST). */
static void test_tc3_utc_date(void **state)
{
    (void)state;
    const pgw_tc3_header h[] = {{"Content-Type", "application/json"}, {"Host", "h"}};
    pgw_tc3_input in = {.secret_id = "id",
                        .secret_key = "key",
                        .service = "sms",
                        .timestamp = 1795564799, /* 2026-11-24T23:59:59Z */
                        .headers = h,
                        .n_headers = 2};
    pgw_tc3_signature *sig = sign_ok(&in);
    assert_string_equal(sig->date, "2026-11-24");
    in.timestamp++;
    pgw_tc3_signature *next = sign_ok(&in);
    assert_string_equal(next->date, "2026-11-25");
    assert_string_equal(next->hashed_payload, /* SHA-256 of nothing */
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_string_not_equal(sig->signature, next->signature);
    free(sig);
    free(next);
}

static void tc3_refused(const pgw_tc3_input *in, int want)
{
    pgw_tc3_signature *sig = malloc(sizeof(*sig));
    assert_non_null(sig);
    pgw_err err = {0};
    int rc = pgw_tc3_sign(in, sig, &err);
    if (rc != want)
        fail_msg("want %s, got %s (%s)", pgw_code_name(want), pgw_code_name(rc), err.msg);
    assert_true(err.msg[0] != '\0');
    assert_string_equal(sig->authorization, ""); /* nothing half-made left behind */
    /* The secret never appears in a message. */
    if (in->secret_key != NULL && strlen(in->secret_key) >= 4)
        assert_null(strstr(err.msg, in->secret_key));
    free(sig);
}

static void test_tc3_bounds(void **state)
{
    (void)state;
    const pgw_tc3_header ok[] = {{"Content-Type", "application/json"},
                                 {"Host", "sms.tencentcloudapi.com"}};
    pgw_tc3_input base = {.secret_id = "AKIDtest",
                          .secret_key = "skTest-secret",
                          .service = "sms",
                          .timestamp = 1795520302,
                          .headers = ok,
                          .n_headers = 2,
                          .payload = "{}",
                          .payload_len = 2};
    pgw_tc3_input in = base;
    in.secret_key = "";
    tc3_refused(&in, PGW_EINVAL);
    in = base;
    in.secret_id = "";
    tc3_refused(&in, PGW_EINVAL);
    in = base;
    in.secret_id = "AKID, Signature=forged"; /* would rewrite the Authorization header */
    tc3_refused(&in, PGW_EINVAL);

    char long_key[PGW_SMS_KEY_MAX + 2];
    memset(long_key, 'k', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    in = base;
    in.secret_key = long_key;
    tc3_refused(&in, PGW_ETOOLARGE);
    long_key[PGW_SMS_KEY_MAX] = '\0'; /* exactly the cap: accepted */
    pgw_tc3_signature *sig = sign_ok(&in);
    free(sig);

    in = base;
    in.service = "SMS";
    tc3_refused(&in, PGW_EINVAL);
    in = base;
    in.timestamp = -1;
    tc3_refused(&in, PGW_EINVAL);
    in = base;
    in.timestamp = INT64_C(253402300800); /* year 10000 */
    tc3_refused(&in, PGW_EINVAL);

    /* Headers: missing host, duplicate, forged line, over caps. */
    const pgw_tc3_header no_host[] = {{"Content-Type", "application/json"}};
    in = base;
    in.headers = no_host;
    in.n_headers = 1;
    tc3_refused(&in, PGW_EINVAL);
    const pgw_tc3_header twice[] = {
        {"Content-Type", "application/json"}, {"Host", "a"}, {"host", "b"}};
    in = base;
    in.headers = twice;
    in.n_headers = 3;
    tc3_refused(&in, PGW_EINVAL);
    const pgw_tc3_header forged[] = {{"Content-Type", "application/json\nhost:evil"},
                                     {"Host", "a"}};
    in = base;
    in.headers = forged;
    tc3_refused(&in, PGW_EINVAL);
    const pgw_tc3_header bad_name[] = {{"Content Type", "application/json"}, {"Host", "a"}};
    in = base;
    in.headers = bad_name;
    tc3_refused(&in, PGW_EINVAL);
    const pgw_tc3_header empty_value[] = {{"Content-Type", "   "}, {"Host", "a"}};
    in = base;
    in.headers = empty_value;
    tc3_refused(&in, PGW_EINVAL);

    char long_value[PGW_TC3_HEADER_VALUE_MAX + 2];
    memset(long_value, 'v', sizeof(long_value) - 1);
    long_value[sizeof(long_value) - 1] = '\0';
    const pgw_tc3_header too_long[] = {{"Content-Type", long_value}, {"Host", "a"}};
    in = base;
    in.headers = too_long;
    tc3_refused(&in, PGW_ETOOLARGE);

    pgw_tc3_header many[PGW_TC3_HEADERS_MAX + 1];
    char names[PGW_TC3_HEADERS_MAX + 1][16];
    many[0] = ok[0];
    many[1] = ok[1];
    for (size_t i = 2; i < PGW_TC3_HEADERS_MAX + 1; i++) {
        snprintf(names[i], sizeof(names[i]), "X-Extra-%zu", i);
        many[i] = (pgw_tc3_header){names[i], "v"};
    }
    in = base;
    in.headers = many;
    in.n_headers = PGW_TC3_HEADERS_MAX + 1;
    tc3_refused(&in, PGW_ETOOLARGE);
    in.n_headers = PGW_TC3_HEADERS_MAX; /* at the cap: the buffers hold the largest */
    for (size_t i = 2; i < PGW_TC3_HEADERS_MAX; i++)
        many[i].value = long_value + 1; /* PGW_TC3_HEADER_VALUE_MAX bytes each */
    sig = sign_ok(&in);
    free(sig);

    in = base;
    in.payload_len = PGW_TC3_PAYLOAD_MAX + 1;
    in.payload = calloc(1, PGW_TC3_PAYLOAD_MAX + 1);
    assert_non_null(in.payload);
    tc3_refused(&in, PGW_ETOOLARGE);
    free((void *)in.payload);
}

/* ---- Alibaba RPC (research 2.6) ------------------------------------------- */

static const pgw_rpc_param A1[] = {
    {"AccessKeyId", "testId"},
    {"Action", "SendSms"},
    {"Format", "XML"},
    {"OutId", "123"},
    {"PhoneNumbers", "15300000001"},
    {"RegionId", "cn-hangzhou"},
    {"SignName", "阿里云短信测试专用"},
    {"SignatureMethod", "HMAC-SHA1"},
    {"SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"},
    {"SignatureVersion", "1.0"},
    {"TemplateCode", "SMS_71390007"},
    {"TemplateParam", "{\"customer\":\"test\"}"},
    {"Timestamp", "2017-07-12T02:42:19Z"},
    {"Version", "2017-05-25"},
};
#define A1_N (sizeof(A1) / sizeof(A1[0]))

static void test_rpc_a1_get(void **state)
{
    (void)state;
    /* Shuffled on purpose: the order given must not matter. */
    pgw_rpc_param p[A1_N];
    for (size_t i = 0; i < A1_N; i++)
        p[i] = A1[(i * 5 + 3) % A1_N];
    char query[PGW_RPC_QUERY_MAX + 1];
    char *sts = malloc(PGW_RPC_STRING_TO_SIGN_MAX + 1);
    assert_non_null(sts);
    pgw_err err = {0};
    size_t qlen = 0, slen = 0;
    assert_int_equal(pgw_rpc_canonical_query(p, A1_N, query, sizeof(query), &qlen, &err), PGW_OK);
    assert_int_equal(qlen, strlen(query));
    assert_string_equal(
        query, "AccessKeyId=testId&Action=SendSms&Format=XML&OutId=123&PhoneNumbers=15300000001&"
               "RegionId=cn-hangzhou&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%"
               "8B%E8%AF%95%E4%B8%93%E7%94%A8&SignatureMethod=HMAC-SHA1&SignatureNonce=45e25e9b-"
               "0a6f-4070-8c85-2956eda1b466&SignatureVersion=1.0&TemplateCode=SMS_71390007&"
               "TemplateParam=%7B%22customer%22%3A%22test%22%7D&Timestamp=2017-07-12T02%3A42%"
               "3A19Z&Version=2017-05-25");
    assert_int_equal(
        pgw_rpc_string_to_sign("GET", query, sts, PGW_RPC_STRING_TO_SIGN_MAX + 1, &slen, &err),
        PGW_OK);
    assert_int_equal(slen, strlen(sts));
    /* What the research quotes of the published string to sign. */
    static const char head[] =
        "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123";
    assert_memory_equal(sts, head, strlen(head));
    assert_non_null(strstr(sts, "SignName%3D%25E9%2598%25BF"));
    assert_non_null(strstr(sts, "Timestamp%3D2017-07-12T02%253A42%253A19Z"));
    char sig[PGW_RPC_SIGNATURE_LEN + 1];
    assert_int_equal(pgw_rpc_signature("testSecret", sts, sig, &err), PGW_OK);
    assert_string_equal(sig, "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
    char shown[3 * PGW_RPC_SIGNATURE_LEN + 1];
    assert_int_equal(pgw_rpc_percent_encode(sig, shown, sizeof(shown), NULL, &err), PGW_OK);
    assert_string_equal(shown, "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D");

    /* The one-call form gives the same. */
    char query2[PGW_RPC_QUERY_MAX + 1], sig2[PGW_RPC_SIGNATURE_LEN + 1];
    assert_int_equal(
        pgw_rpc_sign("GET", A1, A1_N, "testSecret", query2, sizeof(query2), sig2, &err), PGW_OK);
    assert_string_equal(query2, query);
    assert_string_equal(sig2, sig);

    /* Case matters: testid / testsecret is another signature. */
    assert_int_equal(pgw_rpc_signature("testsecret", sts, sig, &err), PGW_OK);
    assert_string_not_equal(sig, "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
    free(sts);
}

static void test_rpc_a1_post(void **state)
{
    (void)state;
    char query[PGW_RPC_QUERY_MAX + 1], sig[PGW_RPC_SIGNATURE_LEN + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_rpc_sign("POST", A1, A1_N, "testSecret", query, sizeof(query), sig, &err),
                     PGW_OK);
    assert_string_equal(sig, "Xvhv7fPXrPkLVSnlt0jIr08o8NQ=");
}

static void test_rpc_a2(void **state)
{
    (void)state;
    const pgw_rpc_param p[] = {
        {"Version", "2014-05-26"},
        {"Timestamp", "2016-02-23T12:46:24Z"},
        {"SignatureVersion", "1.0"},
        {"SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"},
        {"SignatureMethod", "HMAC-SHA1"},
        {"Format", "XML"},
        {"Action", "DescribeRegions"},
        {"AccessKeyId", "testid"},
    };
    char query[PGW_RPC_QUERY_MAX + 1], sig[PGW_RPC_SIGNATURE_LEN + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_rpc_sign("GET", p, 8, "testsecret", query, sizeof(query), sig, &err),
                     PGW_OK);
    assert_string_equal(sig, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
}

static void encodes(const char *in, const char *want)
{
    char out[256];
    size_t len = 99;
    pgw_err err = {0};
    int rc = pgw_rpc_percent_encode(in, out, sizeof(out), &len, &err);
    if (rc != PGW_OK)
        fail_msg("encode(%s): %s", in, err.msg);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
}

static void test_percent_encoding(void **state)
{
    (void)state;
    encodes("", "");
    encodes("AZaz09-_.~", "AZaz09-_.~"); /* the unreserved set, '~' included */
    encodes("a b", "a%20b");             /* never '+' */
    encodes("*", "%2A");
    encodes("+", "%2B");
    encodes("~", "~");
    encodes("%7E", "%257E");
    encodes("/=&?#", "%2F%3D%26%3F%23");
    encodes("!'()", "%21%27%28%29");
    encodes("静安汇", "%E9%9D%99%E5%AE%89%E6%B1%87"); /* upper-case hex */
    encodes("静安汇 积分 *~", "%E9%9D%99%E5%AE%89%E6%B1%87%20%E7%A7%AF%E5%88%86%20%2A~");
    encodes("\xF0\x9F\x98\x80", "%F0%9F%98%80"); /* 4-byte UTF-8 */
    encodes("\x7F", "%7F");

    /* A sign name with spaces, '*' and '~' sorts and encodes in the query. */
    const pgw_rpc_param p[] = {{"b", "x y*z~"}, {"SignName", "积分 商城"}, {"a", ""}};
    char q[256];
    pgw_err err = {0};
    assert_int_equal(pgw_rpc_canonical_query(p, 3, q, sizeof(q), NULL, &err), PGW_OK);
    assert_string_equal(q, "SignName=%E7%A7%AF%E5%88%86%20%E5%95%86%E5%9F%8E&a=&b=x%20y%2Az~");

    /* Byte order, not case-insensitive order: 'Z' (0x5A) before 'a'. */
    const pgw_rpc_param order[] = {{"a", "1"}, {"Z", "2"}, {"AB", "3"}, {"A", "4"}};
    assert_int_equal(pgw_rpc_canonical_query(order, 4, q, sizeof(q), NULL, &err), PGW_OK);
    assert_string_equal(q, "A=4&AB=3&Z=2&a=1");

    /* The string to sign encodes the query once more: %XY becomes %25XY. */
    char sts[256];
    assert_int_equal(pgw_rpc_string_to_sign("POST", "a=%20&b=~", sts, sizeof(sts), NULL, &err),
                     PGW_OK);
    assert_string_equal(sts, "POST&%2F&a%3D%2520%26b%3D~");
}

static void test_rpc_bounds(void **state)
{
    (void)state;
    pgw_err err = {0};
    char out[8];
    size_t len = 7;
    /* Exactly fits (7 bytes + NUL), one more byte does not. */
    assert_int_equal(pgw_rpc_percent_encode("a b*", out, sizeof(out), &len, &err), PGW_ETOOLARGE);
    assert_string_equal(out, "");
    assert_int_equal(len, 0);
    assert_int_equal(pgw_rpc_percent_encode("a b", out, sizeof(out), &len, &err), PGW_OK);
    assert_int_equal(len, 5);
    assert_int_equal(pgw_rpc_percent_encode("ab%", out, 0, NULL, &err), PGW_ETOOLARGE);
    assert_int_equal(pgw_rpc_percent_encode("\xC3\x28", out, sizeof(out), NULL, &err), PGW_EINVAL);
    assert_int_equal(pgw_rpc_percent_encode("\xED\xA0\x80", out, sizeof(out), NULL, &err),
                     PGW_EINVAL); /* a surrogate */

    char q[PGW_RPC_QUERY_MAX + 1], sig[PGW_RPC_SIGNATURE_LEN + 1];
    const pgw_rpc_param dup[] = {{"A", "1"}, {"B", "2"}, {"A", "3"}};
    assert_int_equal(pgw_rpc_canonical_query(dup, 3, q, sizeof(q), NULL, &err), PGW_EINVAL);
    const pgw_rpc_param signature[] = {{"Signature", "x"}};
    assert_int_equal(pgw_rpc_canonical_query(signature, 1, q, sizeof(q), NULL, &err), PGW_EINVAL);
    const pgw_rpc_param empty_name[] = {{"", "x"}};
    assert_int_equal(pgw_rpc_canonical_query(empty_name, 1, q, sizeof(q), NULL, &err), PGW_EINVAL);
    const pgw_rpc_param bad_utf8[] = {{"SignName", "\xFF"}};
    assert_int_equal(pgw_rpc_canonical_query(bad_utf8, 1, q, sizeof(q), NULL, &err), PGW_EINVAL);

    char *big = malloc(PGW_RPC_VALUE_MAX + 2);
    assert_non_null(big);
    memset(big, 'v', PGW_RPC_VALUE_MAX + 1);
    big[PGW_RPC_VALUE_MAX + 1] = '\0';
    const pgw_rpc_param too_long[] = {{"V", big}};
    assert_int_equal(pgw_rpc_canonical_query(too_long, 1, q, sizeof(q), NULL, &err), PGW_ETOOLARGE);
    big[PGW_RPC_VALUE_MAX] = '\0'; /* at the cap: accepted */
    assert_int_equal(pgw_rpc_canonical_query(too_long, 1, q, sizeof(q), NULL, &err), PGW_OK);
    /* Within the value cap, but not within a small output. */
    char small[64];
    assert_int_equal(pgw_rpc_canonical_query(too_long, 1, small, sizeof(small), NULL, &err),
                     PGW_ETOOLARGE);
    assert_string_equal(small, "");
    /* Values that each fit but together overflow the query cap: 5 values of
     * 4096 '*', 3 bytes each encoded. */
    memset(big, '*', PGW_RPC_VALUE_MAX);
    const pgw_rpc_param heavy[] = {{"A", big}, {"B", big}, {"C", big}, {"D", big}, {"E", big}};
    assert_int_equal(pgw_rpc_sign("GET", heavy, 5, "secret", q, sizeof(q), sig, &err),
                     PGW_ETOOLARGE);
    free(big);

    pgw_rpc_param many[PGW_RPC_PARAMS_MAX + 1];
    char names[PGW_RPC_PARAMS_MAX + 1][8];
    for (size_t i = 0; i < PGW_RPC_PARAMS_MAX + 1; i++) {
        snprintf(names[i], sizeof(names[i]), "P%02zu", i);
        many[i] = (pgw_rpc_param){names[i], "v"};
    }
    assert_int_equal(
        pgw_rpc_canonical_query(many, PGW_RPC_PARAMS_MAX + 1, q, sizeof(q), NULL, &err),
        PGW_ETOOLARGE);
    assert_int_equal(pgw_rpc_canonical_query(many, PGW_RPC_PARAMS_MAX, q, sizeof(q), NULL, &err),
                     PGW_OK);

    assert_int_equal(pgw_rpc_sign("PUT", A1, A1_N, "testSecret", q, sizeof(q), sig, &err),
                     PGW_EINVAL);
    assert_string_equal(q, "");
    assert_int_equal(pgw_rpc_sign("get", A1, A1_N, "testSecret", q, sizeof(q), sig, &err),
                     PGW_EINVAL);
    assert_int_equal(pgw_rpc_sign("GET", A1, A1_N, "", q, sizeof(q), sig, &err), PGW_EINVAL);
    char long_secret[PGW_SMS_KEY_MAX + 2];
    memset(long_secret, 's', sizeof(long_secret) - 1);
    long_secret[sizeof(long_secret) - 1] = '\0';
    assert_int_equal(pgw_rpc_sign("GET", A1, A1_N, long_secret, q, sizeof(q), sig, &err),
                     PGW_ETOOLARGE);
    assert_null(strstr(err.msg, long_secret));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tc3_t1),           cmocka_unit_test(test_tc3_t2),
        cmocka_unit_test(test_tc3_t3_sms),       cmocka_unit_test(test_tc3_utc_date),
        cmocka_unit_test(test_tc3_bounds),       cmocka_unit_test(test_rpc_a1_get),
        cmocka_unit_test(test_rpc_a1_post),      cmocka_unit_test(test_rpc_a2),
        cmocka_unit_test(test_percent_encoding), cmocka_unit_test(test_rpc_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
