/*
 * test_wechat_message.c - the official account's push XML and passive
 * replies: the research's samples (../shared/research/wechat-api.md
 * sections 5.5 and 7, decrypted here with crypto.h where only the
 * ciphertext is published), text in pieces, every refusal, and replies
 * read back by the parser.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "adapters/wechat_oa/crypto.h"
#include "adapters/wechat_oa/message.h"
#include "core/utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* V5: the Tencent WXBizMsgCrypt sample. */
#define V5_KEY   "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
#define V5_APPID "wx5823bf96d3bd56c7"
#define V5_ENCRYPT                                                                                 \
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdC"   \
    "Upj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4X"   \
    "gpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+K"   \
    "qCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XX"   \
    "ZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHB"   \
    "ZZIs2pDBS8R07+qN+E7Q=="
#define V5_PLAIN                                                                                   \
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"                               \
    "<FromUserName><![CDATA[mycreate]]></FromUserName>\n"                                          \
    "<CreateTime>1409659813</CreateTime>\n"                                                        \
    "<MsgType><![CDATA[text]]></MsgType>\n"                                                        \
    "<Content><![CDATA[hello]]></Content>\n"                                                       \
    "<MsgId>4561255354251345929</MsgId>\n"                                                         \
    "<AgentID>218</AgentID>\n"                                                                     \
    "</xml>"

/* V6: wechatpy's round trip with fixed random bytes. */
#define V6_KEY   "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
#define V6_APPID "wx49f0ab532d5d035a"
#define V6_DECRYPT                                                                                 \
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHC"     \
    "rsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpX"     \
    "aG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQi"     \
    "MS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQi"     \
    "pvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
#define V6_REPLY_PLAIN                                                                             \
    "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n"            \
    "<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n"                                \
    "<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n"                        \
    "<CreateTime>1411525903</CreateTime>\n</xml>"
#define V6_REPLY_ENCRYPT                                                                           \
    "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGs" \
    "L8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZS"  \
    "jPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPP"  \
    "JvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2X"  \
    "eFYFMNMpatF9XiKzHo3"

#define HEAD                                                                                       \
    "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>"                                    \
    "<FromUserName><![CDATA[oia2TjjewbmiOUlr6X-1crbLOvLw]]></FromUserName>"                        \
    "<CreateTime>1700000000</CreateTime>"

static int parse(const char *xml, pgw_oa_message *m, pgw_err *err)
{
    return pgw_oa_message_parse(xml, strlen(xml), m, err);
}

/* Parses xml, expecting code and an error message containing `says`; the
 * message left behind must be all empty. */
static void refused(const char *xml, int code, const char *says)
{
    pgw_oa_message m;
    pgw_err err = {0};
    int rc = parse(xml, &m, &err);
    if (rc != code || strstr(err.msg, says) == NULL)
        fail_msg("%s\n  got %d \"%s\", want %d \"...%s...\"", xml, rc, err.msg, code, says);
    assert_string_equal(m.to_user, "");
    assert_string_equal(m.from_user, "");
    assert_string_equal(m.content, "");
    assert_int_equal(m.create_time, 0);
}

static void decrypt(const char *encoding_aes_key, const char *appid, const char *b64, char *out,
                    size_t cap, size_t *len)
{
    uint8_t key[PGW_WX_AES_KEY_LEN];
    assert_int_equal(pgw_wx_aes_key(encoding_aes_key, key, NULL), PGW_OK);
    assert_int_equal(pgw_wx_decrypt(key, appid, b64, out, cap, len, NULL), PGW_OK);
}

static void test_v5_sample(void **state)
{
    (void)state;
    pgw_oa_message m;
    pgw_err err;
    assert_int_equal(parse(V5_PLAIN, &m, &err), PGW_OK);
    assert_string_equal(m.to_user, "wx5823bf96d3bd56c7");
    assert_string_equal(m.from_user, "mycreate");
    assert_int_equal(m.create_time, 1409659813);
    assert_string_equal(m.msg_type, "text");
    assert_string_equal(m.content, "hello");
    assert_string_equal(m.msg_id, "4561255354251345929");
    assert_string_equal(m.event, "");
    assert_string_equal(m.event_key, "");
    /* The same bytes as they come out of the published ciphertext. */
    char plain[1024];
    size_t len = 0;
    decrypt(V5_KEY, V5_APPID, V5_ENCRYPT, plain, sizeof(plain), &len);
    assert_int_equal(len, strlen(V5_PLAIN));
    assert_memory_equal(plain, V5_PLAIN, len);
}

static void test_v6_sample(void **state)
{
    (void)state;
    char plain[1024];
    size_t len = 0;
    decrypt(V6_KEY, V6_APPID, V6_DECRYPT, plain, sizeof(plain), &len);
    assert_int_equal(len, 281);
    pgw_oa_message m;
    assert_int_equal(pgw_oa_message_parse(plain, len, &m, NULL), PGW_OK);
    assert_string_equal(m.to_user, "wx49f0ab532d5d035a");
    assert_string_equal(m.from_user, "messense");
    assert_int_equal(m.create_time, 1411525903);
    assert_string_equal(m.msg_type, "text");
    assert_string_equal(m.content, "test");
    assert_string_equal(m.msg_id, "4363689963896700987");
    /* V6's reply side: another field order, no MsgId. */
    assert_int_equal(parse(V6_REPLY_PLAIN, &m, NULL), PGW_OK);
    assert_string_equal(m.to_user, "messense");
    assert_string_equal(m.from_user, "wx49f0ab532d5d035a");
    assert_int_equal(m.create_time, 1411525903);
    assert_string_equal(m.content, "test");
    assert_string_equal(m.msg_id, "");
}

static void test_events(void **state)
{
    (void)state;
    pgw_oa_message m;
    pgw_err err;
    assert_int_equal(parse("<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>\n"
                           "<FromUserName><![CDATA[oia2TjjewbmiOUlr6X-1crbLOvLw]]></FromUserName>\n"
                           "<CreateTime>1700000000</CreateTime>\n"
                           "<MsgType><![CDATA[event]]></MsgType>\n"
                           "<Event><![CDATA[subscribe]]></Event>\n"
                           "<EventKey><![CDATA[qrscene_123]]></EventKey>\n"
                           "<Ticket><![CDATA[TICKET]]></Ticket>\n</xml>",
                           &m, &err),
                     PGW_OK);
    assert_string_equal(m.to_user, "gh_7f083739789a");
    assert_string_equal(m.from_user, "oia2TjjewbmiOUlr6X-1crbLOvLw");
    assert_int_equal(m.create_time, 1700000000);
    assert_string_equal(m.msg_type, "event");
    assert_string_equal(m.event, "subscribe");
    assert_string_equal(m.event_key, "qrscene_123");
    assert_string_equal(m.msg_id, "");
    assert_string_equal(m.content, "");

    assert_int_equal(parse(HEAD "<MsgType><![CDATA[event]]></MsgType>"
                                "<Event><![CDATA[unsubscribe]]></Event>"
                                "<EventKey><![CDATA[]]></EventKey></xml>",
                           &m, &err),
                     PGW_OK);
    assert_string_equal(m.event, "unsubscribe");
    assert_string_equal(m.event_key, "");

    /* A menu's scan event: nested elements we do not read are skipped,
     * including ones named like our fields. */
    assert_int_equal(parse(HEAD "<MsgType><![CDATA[event]]></MsgType>"
                                "<Event><![CDATA[scancode_push]]></Event>"
                                "<EventKey><![CDATA[rselfmenu_0_1]]></EventKey>"
                                "<ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType>"
                                "<ScanResult><![CDATA[1]]></ScanResult>"
                                "<Content>not ours</Content></ScanCodeInfo></xml>",
                           &m, &err),
                     PGW_OK);
    assert_string_equal(m.event, "scancode_push");
    assert_string_equal(m.event_key, "rselfmenu_0_1");
    assert_string_equal(m.content, "");

    /* The deepest WeChat sends (pictures from a menu). */
    assert_int_equal(parse(HEAD "<MsgType><![CDATA[event]]></MsgType>"
                                "<Event><![CDATA[pic_sysphoto]]></Event>"
                                "<SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum>"
                                "<![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum>"
                                "</item></PicList></SendPicsInfo></xml>",
                           &m, &err),
                     PGW_OK);
    assert_string_equal(m.event, "pic_sysphoto");
}

static void test_text_in_chinese(void **state)
{
    (void)state;
    pgw_oa_message m;
    pgw_err err;
    /* MsgId past INT64_MAX: kept as the digits, never converted. */
    assert_int_equal(parse(HEAD "<MsgType><![CDATA[text]]></MsgType>"
                                "<Content><![CDATA[积分]]></Content>"
                                "<MsgId>18446744073709551615</MsgId>"
                                "<MsgDataId>xxxx</MsgDataId><Idx>0</Idx></xml>",
                           &m, &err),
                     PGW_OK);
    assert_string_equal(m.content, "积分");
    assert_int_equal(strlen(m.content), 6);
    assert_string_equal(m.msg_id, "18446744073709551615");
    assert_string_equal(m.msg_type, "text");
    /* Another declared encoding does not change how the bytes are read. */
    assert_int_equal(parse("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>" HEAD
                           "<MsgType>text</MsgType><Content>积分</Content></xml>",
                           &m, &err),
                     PGW_OK);
    assert_string_equal(m.content, "积分");
}

static void test_text_in_pieces(void **state)
{
    (void)state;
    pgw_oa_message m;
    pgw_err err;
    /* CDATA sections, entities, character references and plain text in one
     * field; expat hands each over separately. */
    assert_int_equal(parse(HEAD "<MsgType>text</MsgType>"
                                "<Content><![CDATA[a]]]]><![CDATA[>b]]>&amp;&lt;&#x79EF;&#20998;"
                                " x\r\ny <![CDATA[<not a tag/>]]></Content></xml>",
                           &m, &err),
                     PGW_OK);
    assert_string_equal(m.content, "a]]>b&<积分 x\ny <not a tag/>");
    assert_string_equal(m.msg_type, "text");
    assert_string_equal(m.msg_id, "");

    /* Exactly PGW_OA_CONTENT_MAX bytes in 1024 line pieces and 48 entities
     * (each its own callback); one byte more is cut off, not refused: a
     * refusal is answered with an error, and WeChat then tells the member
     * the account "cannot provide service" and sends the message again. */
    size_t cap = 16384;
    char *xml = malloc(cap), *want = malloc(PGW_OA_CONTENT_MAX + 2);
    assert_non_null(xml);
    assert_non_null(want);
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = (size_t)snprintf(xml, cap, HEAD "<MsgType>text</MsgType><Content>");
        size_t w = 0;
        for (int i = 0; i < 1000; i++) {
            n += (size_t)snprintf(xml + n, cap - n, "a\n");
            w += (size_t)snprintf(want + w, PGW_OA_CONTENT_MAX + 2 - w, "a\n");
        }
        for (int i = 0; i < 48 + extra; i++) {
            n += (size_t)snprintf(xml + n, cap - n, "&amp;");
            want[w++] = '&';
        }
        want[w] = '\0';
        snprintf(xml + n, cap - n, "</Content></xml>");
        assert_int_equal(parse(xml, &m, &err), PGW_OK);
        assert_int_equal(strlen(m.content), PGW_OA_CONTENT_MAX);
        want[PGW_OA_CONTENT_MAX] = '\0';
        assert_string_equal(m.content, want);
        assert_int_equal(m.content_cut, extra == 1);
    }
    /* Cut on a character's boundary: 700 CJK characters (2,100 bytes). */
    size_t n = (size_t)snprintf(xml, cap, HEAD "<MsgType>text</MsgType><Content>");
    for (int i = 0; i < 700; i++)
        n += (size_t)snprintf(xml + n, cap - n, "积");
    snprintf(xml + n, cap - n, "</Content></xml>");
    assert_int_equal(parse(xml, &m, &err), PGW_OK);
    assert_true(m.content_cut);
    assert_int_equal(strlen(m.content), PGW_OA_CONTENT_MAX / 3 * 3);
    assert_true(pgw_utf8_valid(m.content));
    free(xml);
    free(want);
}

static void test_refuses_dtds(void **state)
{
    (void)state;
    refused("<?xml version=\"1.0\"?>\n"
            "<!DOCTYPE xml [\n"
            " <!ENTITY a \"aaaaaaaaaa\">\n"
            " <!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">\n"
            " <!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">\n"
            " <!ENTITY d \"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">\n"
            "]>\n" HEAD "<MsgType>text</MsgType><Content>&d;</Content></xml>",
            PGW_EINVAL, "DOCTYPE is refused");
    refused("<!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>" HEAD
            "<MsgType>text</MsgType><Content>&xxe;</Content></xml>",
            PGW_EINVAL, "DOCTYPE is refused");
    refused("<!DOCTYPE xml SYSTEM \"http://example.com/x.dtd\">" HEAD
            "<MsgType>text</MsgType></xml>",
            PGW_EINVAL, "DOCTYPE is refused");
    refused("<!DOCTYPE xml>" HEAD "<MsgType>text</MsgType></xml>", PGW_EINVAL,
            "DOCTYPE is refused");
    /* Without a DTD an entity reference is simply undefined. */
    refused(HEAD "<MsgType>text</MsgType><Content>&xxe;</Content></xml>", PGW_EINVAL,
            "undefined entity");
    char encrypt[64];
    pgw_err err;
    static const char doctype[] = "<!DOCTYPE xml><xml><Encrypt>QUJD</Encrypt></xml>";
    assert_int_equal(
        pgw_oa_envelope_parse(doctype, strlen(doctype), encrypt, sizeof(encrypt), NULL, &err),
        PGW_EINVAL);
    assert_non_null(strstr(err.msg, "DOCTYPE is refused"));
}

static void test_refuses_sizes(void **state)
{
    (void)state;
    pgw_oa_message m;
    pgw_err err;
    char xml[4096], id[PGW_OA_FIELD_MAX + 2];
    memset(id, 'o', sizeof(id));
    id[PGW_OA_FIELD_MAX] = '\0';
    snprintf(xml, sizeof(xml),
             "<xml><ToUserName>gh_1</ToUserName><FromUserName>%s</FromUserName>"
             "<CreateTime>1</CreateTime><MsgType>text</MsgType></xml>",
             id);
    assert_int_equal(parse(xml, &m, &err), PGW_OK);
    assert_string_equal(m.from_user, id);
    id[PGW_OA_FIELD_MAX] = 'o';
    id[PGW_OA_FIELD_MAX + 1] = '\0';
    snprintf(xml, sizeof(xml),
             "<xml><ToUserName>gh_1</ToUserName><FromUserName>%s</FromUserName>"
             "<CreateTime>1</CreateTime><MsgType>text</MsgType></xml>",
             id);
    refused(xml, PGW_ETOOLARGE, "<FromUserName> is longer than 128 bytes");
    /* Split in two CDATA sections: the bound is on the whole value. */
    snprintf(xml, sizeof(xml), HEAD "<MsgType><![CDATA[%.100s]]><![CDATA[%.100s]]></MsgType></xml>",
             id, id);
    refused(xml, PGW_ETOOLARGE, "<MsgType> is longer than 128 bytes");

    char key[PGW_OA_EVENT_KEY_MAX + 2];
    memset(key, 'k', sizeof(key));
    key[PGW_OA_EVENT_KEY_MAX] = '\0';
    snprintf(xml, sizeof(xml),
             HEAD "<MsgType>event</MsgType><Event>VIEW</Event><EventKey>%s</EventKey></xml>", key);
    assert_int_equal(parse(xml, &m, &err), PGW_OK);
    assert_int_equal(strlen(m.event_key), PGW_OA_EVENT_KEY_MAX);
    key[PGW_OA_EVENT_KEY_MAX] = 'k';
    key[PGW_OA_EVENT_KEY_MAX + 1] = '\0';
    snprintf(xml, sizeof(xml),
             HEAD "<MsgType>event</MsgType><Event>VIEW</Event><EventKey>%s</EventKey></xml>", key);
    refused(xml, PGW_ETOOLARGE, "<EventKey> is longer than 1024 bytes");

    /* A body of exactly PGW_OA_XML_MAX bytes (a long skipped field) is read;
     * one byte more is refused before parsing. */
    char *big = malloc(PGW_OA_XML_MAX + 2);
    assert_non_null(big);
    const char *start = HEAD "<MsgType>text</MsgType><Padding>", *end = "</Padding></xml>";
    size_t fill = PGW_OA_XML_MAX - strlen(start) - strlen(end);
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = (size_t)snprintf(big, PGW_OA_XML_MAX + 2, "%s", start);
        memset(big + n, 'p', fill + (size_t)extra);
        n += fill + (size_t)extra;
        n += (size_t)snprintf(big + n, PGW_OA_XML_MAX + 2 - n, "%s", end);
        assert_int_equal(n, PGW_OA_XML_MAX + (size_t)extra);
        if (extra == 0) {
            assert_int_equal(pgw_oa_message_parse(big, n, &m, &err), PGW_OK);
            assert_string_equal(m.msg_type, "text");
        } else {
            refused(big, PGW_ETOOLARGE, "of 65537 bytes is over 65536");
        }
    }
    free(big);
    assert_int_equal(pgw_oa_message_parse("", 0, &m, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "empty"));
}

static void test_refuses_missing_fields(void **state)
{
    (void)state;
    static const char *const names[] = {"ToUserName", "FromUserName", "CreateTime", "MsgType"};
    static const char *const values[] = {"gh_1", "openid1", "1700000000", "text"};
    for (size_t skip = 0; skip < 4; skip++) {
        char xml[512], want[64];
        size_t n = (size_t)snprintf(xml, sizeof(xml), "<xml>");
        for (size_t i = 0; i < 4; i++)
            if (i != skip)
                n += (size_t)snprintf(xml + n, sizeof(xml) - n, "<%s>%s</%s>", names[i], values[i],
                                      names[i]);
        snprintf(xml + n, sizeof(xml) - n, "<Content>hi</Content></xml>");
        snprintf(want, sizeof(want), "no <%s>", names[skip]);
        refused(xml, PGW_EINVAL, want);
        /* Present but empty is as good as missing. */
        n = (size_t)snprintf(xml, sizeof(xml), "<xml>");
        for (size_t i = 0; i < 4; i++)
            n += (size_t)snprintf(xml + n, sizeof(xml) - n, "<%s>%s</%s>", names[i],
                                  i == skip ? "<![CDATA[]]>" : values[i], names[i]);
        snprintf(xml + n, sizeof(xml) - n, "</xml>");
        snprintf(want, sizeof(want), "<%s> is empty", names[skip]);
        refused(xml, PGW_EINVAL, want);
    }
    refused(HEAD "<MsgType>event</MsgType><EventKey>k</EventKey></xml>", PGW_EINVAL,
            "without <Event>");
}

static void test_refuses_numbers(void **state)
{
    (void)state;
    pgw_oa_message m;
    pgw_err err;
    static const char *const bad[] = {"-1",
                                      "+1",
                                      " 1",
                                      "1 ",
                                      "12a",
                                      "1.5",
                                      "0x10",
                                      "9223372036854775808",
                                      "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char xml[512];
        snprintf(xml, sizeof(xml),
                 "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName>"
                 "<CreateTime>%s</CreateTime><MsgType>text</MsgType></xml>",
                 bad[i]);
        refused(xml, PGW_EINVAL, "<CreateTime> is not unix seconds");
    }
    assert_int_equal(parse("<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName>"
                           "<CreateTime>9223372036854775807</CreateTime><MsgType>text</MsgType>"
                           "</xml>",
                           &m, &err),
                     PGW_OK);
    assert_int_equal(m.create_time, INT64_MAX);
    assert_int_equal(parse("<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName>"
                           "<CreateTime>0</CreateTime><MsgType>text</MsgType></xml>",
                           &m, &err),
                     PGW_OK);
    assert_int_equal(m.create_time, 0);
    refused(HEAD "<MsgType>text</MsgType><MsgId>12x</MsgId></xml>", PGW_EINVAL,
            "<MsgId> is not digits");
    refused(HEAD "<MsgType>text</MsgType><MsgId>-5</MsgId></xml>", PGW_EINVAL,
            "<MsgId> is not digits");
    refused(HEAD "<MsgType>text</MsgType><MsgId></MsgId></xml>", PGW_EINVAL,
            "<MsgId> is not digits");
    /* WeChat's MsgId is a 64-bit number (research 5.5). Regression: any
     * digits up to the field's 128 bytes passed, and the sign-in's key
     * (api.c oa_event) keeps 64 of them: two ids alike in those were one
     * message. */
    refused(HEAD "<MsgType>text</MsgType><MsgId>18446744073709551616</MsgId></xml>", PGW_EINVAL,
            "<MsgId> is past 64 bits");
    refused(HEAD "<MsgType>text</MsgType><MsgId>018446744073709551615</MsgId></xml>", PGW_EINVAL,
            "<MsgId> is past 64 bits");
    refused(HEAD "<MsgType>text</MsgType><MsgId>"
                 "12345678901234567890123456789012345678901234567890123456789012341"
                 "</MsgId></xml>",
            PGW_EINVAL, "<MsgId> is past 64 bits");
    assert_int_equal(
        parse(HEAD "<MsgType>text</MsgType><MsgId>18446744073709551615</MsgId></xml>", &m, &err),
        PGW_OK);
    assert_string_equal(m.msg_id, "18446744073709551615");
    assert_int_equal(parse(HEAD "<MsgType>text</MsgType><MsgId>0</MsgId></xml>", &m, &err), PGW_OK);
    assert_string_equal(m.msg_id, "0");
}

static void test_refuses_structure(void **state)
{
    (void)state;
    pgw_oa_message m;
    pgw_err err;
    refused(HEAD "<MsgType>text</MsgType><MsgType>event</MsgType></xml>", PGW_EINVAL,
            "<MsgType> appears twice");
    refused(HEAD "<MsgType>text</MsgType><FromUserName>other</FromUserName></xml>", PGW_EINVAL,
            "<FromUserName> appears twice");
    refused("<root><ToUserName>gh_1</ToUserName></root>", PGW_EINVAL,
            "root element is <root>, not <xml>");
    refused("<XML><ToUserName>gh_1</ToUserName></XML>", PGW_EINVAL, "root element is <XML>");
    refused(HEAD "<MsgType>text</MsgType><Content>a<b>c</b></Content></xml>", PGW_EINVAL,
            "<Content> holds an element <b>");
    refused(HEAD "<MsgType>text</MsgType></xml><xml></xml>", PGW_EINVAL, "not well-formed");
    refused(HEAD "<MsgType>text</MsgType><Content>\xff</Content></xml>", PGW_EINVAL,
            "not well-formed");
    refused(HEAD "<MsgType>text</MsgType><Content>&#1;</Content></xml>", PGW_EINVAL,
            "not well-formed");
    /* A NUL inside the body (its length says where it ends). */
    static const char with_nul[] = HEAD "<MsgType>te\0xt</MsgType></xml>";
    assert_int_equal(pgw_oa_message_parse(with_nul, sizeof(with_nul) - 1, &m, &err), PGW_EINVAL);
    /* Depth: <xml> and 7 more levels are read, 8 are refused. */
    assert_int_equal(parse(HEAD "<MsgType>text</MsgType><a><b><c><d><e><f><g/></f></e></d></c></b>"
                                "</a></xml>",
                           &m, &err),
                     PGW_OK);
    refused(HEAD "<MsgType>text</MsgType><a><b><c><d><e><f><g><h/></g></f></e></d></c></b></a>"
                 "</xml>",
            PGW_EINVAL, "nested deeper than 8");
    /* Every truncation of a valid message is refused. */
    size_t full = strlen(V5_PLAIN);
    for (size_t len = 0; len < full; len++) {
        pgw_err_clear(&err);
        int rc = pgw_oa_message_parse(V5_PLAIN, len, &m, &err);
        if (rc != PGW_EINVAL)
            fail_msg("prefix of %zu bytes: %d %s", len, rc, err.msg);
        assert_string_equal(m.to_user, "");
    }
    assert_int_equal(pgw_oa_message_parse(V5_PLAIN, full, &m, &err), PGW_OK);
}

static void test_text_reply(void **state)
{
    (void)state;
    char out[16384];
    size_t len = 0;
    pgw_err err;
    assert_int_equal(pgw_oa_text_reply("oia2TjjewbmiOUlr6X-1crbLOvLw", "gh_7f083739789a",
                                       1700000001, "hi", out, sizeof(out), &len, &err),
                     PGW_OK);
    static const char want[] =
        "<xml><ToUserName><![CDATA[oia2TjjewbmiOUlr6X-1crbLOvLw]]></ToUserName>"
        "<FromUserName><![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1700000001"
        "</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content></xml>";
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));

    /* Round trip through the parser: "]]>" at the start, the end, twice
     * in a row, Chinese, line breaks and tabs. */
    const char *content = "]]>积分到账 +100]]>]]>\n余额\t1,234 ]]]]> 末]]>";
    assert_int_equal(pgw_oa_text_reply("oia2TjjewbmiOUlr6X-1crbLOvLw", "gh_7f083739789a",
                                       1700000002, content, out, sizeof(out), &len, &err),
                     PGW_OK);
    assert_int_equal(strlen(out), len);
    assert_non_null(strstr(out, "<![CDATA[]]]]><![CDATA[>积分到账"));
    pgw_oa_message m;
    assert_int_equal(pgw_oa_message_parse(out, len, &m, &err), PGW_OK);
    assert_string_equal(m.content, content);
    assert_string_equal(m.to_user, "oia2TjjewbmiOUlr6X-1crbLOvLw");
    assert_string_equal(m.from_user, "gh_7f083739789a");
    assert_int_equal(m.create_time, 1700000002);
    assert_string_equal(m.msg_type, "text");
    assert_string_equal(m.msg_id, "");

    /* The longest content fits and reads back. */
    char *longest = malloc(PGW_OA_CONTENT_MAX + 2);
    assert_non_null(longest);
    for (size_t i = 0; i + 3 <= PGW_OA_CONTENT_MAX; i += 3)
        memcpy(longest + i, "]]>", 3);
    size_t used = PGW_OA_CONTENT_MAX / 3 * 3;
    memset(longest + used, 'x', PGW_OA_CONTENT_MAX - used);
    longest[PGW_OA_CONTENT_MAX] = '\0';
    assert_int_equal(pgw_oa_text_reply("o1", "gh_1", 1, longest, out, sizeof(out), &len, &err),
                     PGW_OK);
    assert_int_equal(pgw_oa_message_parse(out, len, &m, &err), PGW_OK);
    assert_string_equal(m.content, longest);
    longest[PGW_OA_CONTENT_MAX] = 'x';
    longest[PGW_OA_CONTENT_MAX + 1] = '\0';
    assert_int_equal(pgw_oa_text_reply("o1", "gh_1", 1, longest, out, sizeof(out), &len, &err),
                     PGW_ETOOLARGE);
    assert_non_null(strstr(err.msg, "Content is longer than 2048 bytes"));
    free(longest);

    /* An exact fit, and one byte short. */
    size_t need = strlen(want) + 1;
    assert_int_equal(pgw_oa_text_reply("oia2TjjewbmiOUlr6X-1crbLOvLw", "gh_7f083739789a",
                                       1700000001, "hi", out, need, &len, &err),
                     PGW_OK);
    assert_string_equal(out, want);
    len = 12345;
    assert_int_equal(pgw_oa_text_reply("oia2TjjewbmiOUlr6X-1crbLOvLw", "gh_7f083739789a",
                                       1700000001, "hi", out, need - 1, &len, &err),
                     PGW_ETOOLARGE);
    assert_string_equal(out, "");
    assert_int_equal(len, 12345);
    char expect[64];
    snprintf(expect, sizeof(expect), "needs %zu bytes, %zu given", need, need - 1);
    assert_non_null(strstr(err.msg, expect));
}

static void test_text_reply_refusals(void **state)
{
    (void)state;
    char out[1024];
    size_t len = 0;
    pgw_err err;
    static const struct {
        const char *content, *says;
    } bad[] = {
        {"", "Content is empty"},
        {"bad \xff byte", "Content is not valid UTF-8 (byte 4)"},
        {"cut \xe7\xa7", "not valid UTF-8"},
        {"overlong \xc0\xaf", "not valid UTF-8"},
        {"surrogate \xed\xa0\x80", "not valid UTF-8"},
        {"bell \x07", "holds U+0007 at byte 5"},
        {"cr \r\n", "holds U+000D"},
        {"esc \x1b[0m", "holds U+001B"},
        {"del \x7f", "holds U+007F"},
        {"c1 \xc2\x85", "holds U+0085"},
        {"nonchar \xef\xbf\xbe", "holds U+FFFE"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pgw_err_clear(&err);
        int rc = pgw_oa_text_reply("o1", "gh_1", 1, bad[i].content, out, sizeof(out), &len, &err);
        if (rc != PGW_EINVAL || strstr(err.msg, bad[i].says) == NULL)
            fail_msg("case %zu: %d \"%s\", want \"%s\"", i, rc, err.msg, bad[i].says);
        assert_string_equal(out, "");
    }
    assert_int_equal(pgw_oa_text_reply("", "gh_1", 1, "hi", out, sizeof(out), &len, &err),
                     PGW_EINVAL);
    assert_non_null(strstr(err.msg, "ToUserName is empty"));
    assert_int_equal(pgw_oa_text_reply("o1", "gh\n\x01", 1, "hi", out, sizeof(out), &len, &err),
                     PGW_EINVAL);
    assert_non_null(strstr(err.msg, "FromUserName holds U+0001"));
    char id[PGW_OA_FIELD_MAX + 2];
    memset(id, 'o', sizeof(id) - 1);
    id[PGW_OA_FIELD_MAX + 1] = '\0';
    assert_int_equal(pgw_oa_text_reply(id, "gh_1", 1, "hi", out, sizeof(out), &len, &err),
                     PGW_ETOOLARGE);
    assert_non_null(strstr(err.msg, "ToUserName is longer than 128 bytes"));
    assert_int_equal(pgw_oa_text_reply("o1", "gh_1", -1, "hi", out, sizeof(out), &len, &err),
                     PGW_EINVAL);
    assert_non_null(strstr(err.msg, "before 1970"));
    /* What is allowed: newline and tab. */
    assert_int_equal(pgw_oa_text_reply("o1", "gh_1", 0, "a\nb\tc", out, sizeof(out), &len, &err),
                     PGW_OK);
}

static void test_encrypted_reply(void **state)
{
    (void)state;
    /* V6's reply: encrypted and signed with crypto.h, then wrapped. */
    uint8_t key[PGW_WX_AES_KEY_LEN];
    assert_int_equal(pgw_wx_aes_key(V6_KEY, key, NULL), PGW_OK);
    char encrypt[1024];
    assert_int_equal(pgw_wx_encrypt(key, V6_APPID, (const uint8_t *)"1234567890123456",
                                    V6_REPLY_PLAIN, strlen(V6_REPLY_PLAIN), encrypt,
                                    sizeof(encrypt), NULL),
                     PGW_OK);
    assert_string_equal(encrypt, V6_REPLY_ENCRYPT);
    char signature[PGW_WX_SIGNATURE_HEX + 1];
    const char *parts[] = {"123456", "1411525903", "461056294", encrypt};
    assert_int_equal(pgw_wx_signature(parts, 4, signature), PGW_OK);
    assert_string_equal(signature, "407518b7649e86ef23978113f92d27afa9296533");
    char out[2048];
    size_t len = 0;
    pgw_err err;
    assert_int_equal(pgw_oa_encrypted_reply(encrypt, signature, 1411525903, "461056294", out,
                                            sizeof(out), &len, &err),
                     PGW_OK);
    assert_string_equal(out, "<xml><Encrypt><![CDATA[" V6_REPLY_ENCRYPT "]]></Encrypt>"
                             "<MsgSignature><![CDATA[407518b7649e86ef23978113f92d27afa9296533]]>"
                             "</MsgSignature><TimeStamp>1411525903</TimeStamp>"
                             "<Nonce><![CDATA[461056294]]></Nonce></xml>");
    assert_int_equal(len, strlen(out));
    /* Read back as an envelope and decrypted: the reply we encrypted. */
    char back[1024], plain[1024];
    assert_int_equal(pgw_oa_envelope_parse(out, len, back, sizeof(back), NULL, &err), PGW_OK);
    assert_string_equal(back, V6_REPLY_ENCRYPT);
    size_t plain_len = 0;
    decrypt(V6_KEY, V6_APPID, back, plain, sizeof(plain), &plain_len);
    assert_string_equal(plain, V6_REPLY_PLAIN);

    /* Refusals. */
    assert_int_equal(
        pgw_oa_encrypted_reply("not base64!", signature, 1, "n", out, sizeof(out), &len, &err),
        PGW_EINVAL);
    assert_non_null(strstr(err.msg, "Encrypt is not base64"));
    assert_int_equal(pgw_oa_encrypted_reply("", signature, 1, "n", out, sizeof(out), &len, &err),
                     PGW_EINVAL);
    assert_int_equal(pgw_oa_encrypted_reply(encrypt, "407518B7649E86EF23978113F92D27AFA9296533", 1,
                                            "n", out, sizeof(out), &len, &err),
                     PGW_EINVAL);
    assert_non_null(strstr(err.msg, "MsgSignature is not 40 lowercase hex"));
    assert_int_equal(
        pgw_oa_encrypted_reply(encrypt, "407518b7", 1, "n", out, sizeof(out), &len, &err),
        PGW_EINVAL);
    assert_int_equal(
        pgw_oa_encrypted_reply(encrypt, signature, -5, "n", out, sizeof(out), &len, &err),
        PGW_EINVAL);
    assert_int_equal(
        pgw_oa_encrypted_reply(encrypt, signature, 1, "", out, sizeof(out), &len, &err),
        PGW_EINVAL);
    assert_non_null(strstr(err.msg, "Nonce is empty"));
    assert_int_equal(
        pgw_oa_encrypted_reply(encrypt, signature, 1, "n\x01", out, sizeof(out), &len, &err),
        PGW_EINVAL);
    assert_int_equal(
        pgw_oa_encrypted_reply(encrypt, signature, 1411525903, "461056294", out, 100, &len, &err),
        PGW_ETOOLARGE);
    assert_string_equal(out, "");
    char *huge = malloc(PGW_OA_XML_MAX + 5);
    assert_non_null(huge);
    memset(huge, 'A', PGW_OA_XML_MAX + 4);
    huge[PGW_OA_XML_MAX + 4] = '\0';
    assert_int_equal(pgw_oa_encrypted_reply(huge, signature, 1, "n", out, sizeof(out), &len, &err),
                     PGW_ETOOLARGE);
    free(huge);
}

static void test_envelope(void **state)
{
    (void)state;
    static const char envelope[] = "<xml><ToUserName><![CDATA[gh_x]]></ToUserName>"
                                   "<Encrypt><![CDATA[" V5_ENCRYPT "]]></Encrypt></xml>";
    char encrypt[1024], to_user[PGW_OA_FIELD_MAX + 1];
    pgw_err err;
    assert_int_equal(
        pgw_oa_envelope_parse(envelope, strlen(envelope), encrypt, sizeof(encrypt), to_user, &err),
        PGW_OK);
    assert_string_equal(encrypt, V5_ENCRYPT);
    assert_string_equal(to_user, "gh_x");
    /* The whole safe-mode path: envelope, decryption, message. */
    char plain[1024];
    size_t len = 0;
    decrypt(V5_KEY, V5_APPID, encrypt, plain, sizeof(plain), &len);
    pgw_oa_message m;
    assert_int_equal(pgw_oa_message_parse(plain, len, &m, &err), PGW_OK);
    assert_string_equal(m.from_user, "mycreate");
    assert_string_equal(m.content, "hello");
    assert_string_equal(m.msg_id, "4561255354251345929");

    /* Encrypt exactly fits, then is one byte too long for cap. */
    size_t n = strlen(V5_ENCRYPT);
    assert_int_equal(
        pgw_oa_envelope_parse(envelope, strlen(envelope), encrypt, n + 1, to_user, &err), PGW_OK);
    assert_string_equal(encrypt, V5_ENCRYPT);
    assert_int_equal(pgw_oa_envelope_parse(envelope, strlen(envelope), encrypt, n, to_user, &err),
                     PGW_ETOOLARGE);
    assert_non_null(strstr(err.msg, "<Encrypt> is longer than"));
    assert_string_equal(encrypt, "");
    assert_string_equal(to_user, "");

    /* No ToUserName (to_user ""), to_user not wanted, compatible mode. */
    static const char bare[] = "<xml><Encrypt>QUJD</Encrypt></xml>";
    assert_int_equal(
        pgw_oa_envelope_parse(bare, strlen(bare), encrypt, sizeof(encrypt), to_user, &err), PGW_OK);
    assert_string_equal(encrypt, "QUJD");
    assert_string_equal(to_user, "");
    assert_int_equal(
        pgw_oa_envelope_parse(bare, strlen(bare), encrypt, sizeof(encrypt), NULL, &err), PGW_OK);
    static const char compatible[] = HEAD "<MsgType>text</MsgType><Content>hi</Content>"
                                          "<Encrypt>QUJD</Encrypt></xml>";
    assert_int_equal(pgw_oa_envelope_parse(compatible, strlen(compatible), encrypt, sizeof(encrypt),
                                           to_user, &err),
                     PGW_OK);
    assert_string_equal(to_user, "gh_7f083739789a");
    assert_int_equal(parse(compatible, &m, &err), PGW_OK);
    assert_string_equal(m.content, "hi");

    /* Refusals. */
    static const struct {
        const char *xml, *says;
        int code;
    } bad[] = {
        {"<xml><ToUserName>gh_x</ToUserName></xml>", "no <Encrypt>", PGW_EINVAL},
        {"<xml><Encrypt></Encrypt></xml>", "not base64", PGW_EINVAL},
        {"<xml><Encrypt>QUJD QUJD</Encrypt></xml>", "not base64", PGW_EINVAL},
        {"<xml><Encrypt>QUJ</Encrypt></xml>", "not base64", PGW_EINVAL},
        {"<xml><Encrypt>QUJD</Encrypt><Encrypt>QUJE</Encrypt></xml>", "<Encrypt> appears twice",
         PGW_EINVAL},
        {"<envelope><Encrypt>QUJD</Encrypt></envelope>", "not <xml>", PGW_EINVAL},
        {"<xml><Encrypt>QUJD</Encrypt>", "not well-formed", PGW_EINVAL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pgw_err_clear(&err);
        int rc = pgw_oa_envelope_parse(bad[i].xml, strlen(bad[i].xml), encrypt, sizeof(encrypt),
                                       to_user, &err);
        if (rc != bad[i].code || strstr(err.msg, bad[i].says) == NULL)
            fail_msg("%s: %d \"%s\", want \"%s\"", bad[i].xml, rc, err.msg, bad[i].says);
        assert_string_equal(encrypt, "");
    }
}

/* A refusal quotes what it refuses: cut by bytes, the quote would end
 * inside a character and the message (logged, answered as JSON) would not
 * be UTF-8. "a" (or "ab") and three-byte characters put byte 32 (or 64)
 * inside one. */
static void test_refusal_text_stays_utf8(void **state)
{
    (void)state;
    static const char *const xml[] = {
        "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName>"
        "<CreateTime>a一二三四五六七八九十一二三四五</CreateTime><MsgType>text</MsgType></xml>",
        HEAD "<MsgType>text</MsgType><MsgId>a一二三四五六七八九十一二三四五</MsgId></xml>",
        "<ab一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十><x/>"
        "</ab一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十>",
        HEAD
        "<MsgType>text</MsgType><Content>x<ab一二三四五六七八九十一二三四五六七八九十一二三四五"
        "六七八九十/></Content></xml>",
    };
    size_t broken = 0;
    for (size_t i = 0; i < sizeof(xml) / sizeof(xml[0]); i++) {
        pgw_oa_message m;
        pgw_err err = {0};
        assert_int_equal(parse(xml[i], &m, &err), PGW_EINVAL);
        if (!pgw_utf8_valid(err.msg))
            print_message("case %zu: not UTF-8\n", i), broken++;
    }
    assert_int_equal(broken, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v5_sample),
        cmocka_unit_test(test_v6_sample),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_text_in_chinese),
        cmocka_unit_test(test_text_in_pieces),
        cmocka_unit_test(test_refuses_dtds),
        cmocka_unit_test(test_refuses_sizes),
        cmocka_unit_test(test_refuses_missing_fields),
        cmocka_unit_test(test_refuses_numbers),
        cmocka_unit_test(test_refuses_structure),
        cmocka_unit_test(test_refusal_text_stays_utf8),
        cmocka_unit_test(test_text_reply),
        cmocka_unit_test(test_text_reply_refusals),
        cmocka_unit_test(test_encrypted_reply),
        cmocka_unit_test(test_envelope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
