/*
 * test_wechat_crypto.c - WeChat signatures and safe-mode AES against the
 * published vectors (../shared/research/wechat-api.md section 7, each one
 * re-computed there), and the refusals.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "adapters/wechat_oa/crypto.h"

#include <stdio.h>
#include <string.h>

static void test_signatures(void **state)
{
    (void)state;
    char sig[PGW_WX_SIGNATURE_HEX + 1];
    const char *v1[] = {"test", "1410685589", "test"};
    assert_int_equal(pgw_wx_signature(v1, 3, sig), PGW_OK);
    assert_string_equal(sig, "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff");
    assert_true(pgw_wx_signature_ok(v1, 3, "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff"));
    assert_false(pgw_wx_signature_ok(v1, 3, "f21891de399b4e33a1a93c9a7b8a8fffb5a443fe"));
    assert_false(pgw_wx_signature_ok(v1, 3, "f21891de"));
    assert_false(pgw_wx_signature_ok(v1, 3, NULL));
    const char *v2[] = {"AAAAA", "1714037059", "486452656"};
    assert_true(pgw_wx_signature_ok(v2, 3, "899cf89e464efb63f54ddac96b0a0a235f53aa78"));
    /* V3, the message-push page's URL check: the nonce sorts first here. */
    const char *v3[] = {"AAAAA", "1714036504", "1514711492"};
    assert_true(pgw_wx_signature_ok(v3, 3, "f464b24fc39322e44b38aa78f5edd27bd1441696"));
    const char *v4[] = {"RMNlACHlV5ThzfRlVS4D4", "timestamp", "nonce", "encrypt"};
    assert_true(pgw_wx_signature_ok(v4, 4, "8edac0945683c119ee71c9f6256d76c48aa08a96"));
}

/* A research vector's URL check in safe mode: msg_signature over (token,
 * timestamp, nonce, echostr) holds, and echostr decrypts for appid to the
 * digits `want`. key: the vector's AES key, for what the caller checks next. */
static void echo_checks(const char *aes_key, const char *const parts[4], const char *signature,
                        const char *appid, const char *want, uint8_t key[PGW_WX_AES_KEY_LEN])
{
    assert_int_equal(pgw_wx_aes_key(aes_key, key, NULL), PGW_OK);
    assert_true(pgw_wx_signature_ok(parts, 4, signature));
    char msg[128];
    size_t len = 0;
    assert_int_equal(pgw_wx_decrypt(key, appid, parts[3], msg, sizeof(msg), &len, NULL), PGW_OK);
    assert_string_equal(msg, want);
    assert_int_equal(len, strlen(want));
}

static void test_official_sample_decrypts(void **state)
{
    (void)state;
    uint8_t key[PGW_WX_AES_KEY_LEN];
    /* URL verification: the echostr and its msg_signature. */
    const char *echo[] = {
        "QDG6eK", "1409659589", "263014780",
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="};
    echo_checks("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", echo,
                "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "wx5823bf96d3bd56c7",
                "1616140317555161061", key);
    static const uint8_t want_key[] = {0x8d, 0x69, 0x98, 0x9b, 0xba, 0xab, 0xe6, 0x73,
                                       0x28, 0x01, 0x4c, 0x19, 0x46, 0x31, 0xad, 0x07,
                                       0x19, 0xb3, 0xdc, 0xa0, 0x35, 0xb6, 0x40, 0x23,
                                       0xdf, 0x29, 0x24, 0x47, 0xaa, 0xb6, 0x07, 0x60};
    assert_memory_equal(key, want_key, sizeof(want_key));
    char msg[1024];
    size_t len = 0;
    /* A message: 284 bytes of XML. */
    const char *encrypt =
        "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdC"
        "Upj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4X"
        "gpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+K"
        "qCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XX"
        "ZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHB"
        "ZZIs2pDBS8R07+qN+E7Q==";
    const char *signed_msg[] = {"QDG6eK", "1409659813", "1372623149", encrypt};
    assert_true(pgw_wx_signature_ok(signed_msg, 4, "477715d11cdb4164915debcba66cb864d751f3e6"));
    assert_int_equal(
        pgw_wx_decrypt(key, "wx5823bf96d3bd56c7", encrypt, msg, sizeof(msg), &len, NULL), PGW_OK);
    assert_int_equal(len, 284);
    assert_non_null(strstr(msg, "<Content><![CDATA[hello]]></Content>"));
    assert_true(strncmp(msg, "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]>", 47) == 0);
    /* The wrong appid, a truncated or altered ciphertext, a small buffer. */
    pgw_err err;
    assert_int_equal(
        pgw_wx_decrypt(key, "wx0000000000000000", encrypt, msg, sizeof(msg), &len, &err),
        PGW_EINVAL);
    assert_non_null(strstr(err.msg, "another appid"));
    assert_int_equal(
        pgw_wx_decrypt(key, "wx5823bf96d3bd56c7", "P9nAzCzy", msg, sizeof(msg), &len, &err),
        PGW_EINVAL);
    assert_int_equal(
        pgw_wx_decrypt(key, "wx5823bf96d3bd56c7", "not base64!", msg, sizeof(msg), &len, &err),
        PGW_EINVAL);
    assert_int_equal(pgw_wx_decrypt(key, "wx5823bf96d3bd56c7", encrypt, msg, 100, &len, &err),
                     PGW_EINVAL);
    uint8_t other[PGW_WX_AES_KEY_LEN];
    assert_int_equal(pgw_wx_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", other, NULL),
                     PGW_OK);
    assert_int_equal(
        pgw_wx_decrypt(other, "wx5823bf96d3bd56c7", encrypt, msg, sizeof(msg), &len, &err),
        PGW_EINVAL);
}

/* V6's echo check (wechatpy): msg_signature over the encrypted echostr,
 * which decrypts to its digits; one nonce off, the signature fails. */
static void test_wechatpy_echo(void **state)
{
    (void)state;
    uint8_t key[PGW_WX_AES_KEY_LEN];
    const char *echo[] = {
        "123456", "1411443780", "437374425",
        "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="};
    echo_checks("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", echo,
                "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "wx49f0ab532d5d035a",
                "5927782489442352469", key);
    const char *off[] = {"123456", "1411443780", "437374424", echo[3]};
    assert_false(pgw_wx_signature_ok(off, 4, "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"));
}

static void test_java_sample_encrypts(void **state)
{
    (void)state;
    uint8_t key[PGW_WX_AES_KEY_LEN];
    assert_int_equal(pgw_wx_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", key, NULL),
                     PGW_OK);
    const char *msg = "我是中文abcd123";
    char out[256];
    assert_int_equal(pgw_wx_encrypt(key, "wxb11529c136998cb6", (const uint8_t *)"aaaabbbbccccdddd",
                                    msg, strlen(msg), out, sizeof(out), NULL),
                     PGW_OK);
    assert_string_equal(out, "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd"
                             "832WzZGMhkP72vVOfg==");
    const char *parts[] = {"pamtest", "1409304348", "xxxxxx", out};
    assert_true(pgw_wx_signature_ok(parts, 4, "82c962d39941aa48552f90ef55aa323dc620cc10"));
    char back[256];
    size_t len = 0;
    assert_int_equal(pgw_wx_decrypt(key, "wxb11529c136998cb6", out, back, sizeof(back), &len, NULL),
                     PGW_OK);
    assert_string_equal(back, msg);
    /* Every length round-trips, padding included (1..32 bytes). */
    char text[100];
    for (size_t n = 0; n < sizeof(text); n++) {
        memset(text, 'x', n);
        assert_int_equal(pgw_wx_encrypt(key, "wxb11529c136998cb6",
                                        (const uint8_t *)"0123456789abcdef", text, n, out,
                                        sizeof(out), NULL),
                         PGW_OK);
        assert_int_equal(
            pgw_wx_decrypt(key, "wxb11529c136998cb6", out, back, sizeof(back), &len, NULL), PGW_OK);
        assert_int_equal(len, n);
        assert_memory_equal(back, text, n);
    }
    pgw_err err;
    assert_int_equal(pgw_wx_encrypt(key, "wxb11529c136998cb6", (const uint8_t *)"aaaabbbbccccdddd",
                                    msg, strlen(msg), out, 16, &err),
                     PGW_ETOOLARGE);
    assert_int_equal(pgw_wx_aes_key("too-short", key, &err), PGW_EINVAL);
    assert_int_equal(pgw_wx_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF!", key, &err),
                     PGW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_official_sample_decrypts),
        cmocka_unit_test(test_wechatpy_echo),
        cmocka_unit_test(test_java_sample_encrypts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
