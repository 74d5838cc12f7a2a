/*
 * message.h - the official account's push messages (XML, read with expat)
 * and the passive replies sent back in the same HTTP response. Facts:
 * ../shared/research/wechat-api.md sections 5.3-5.6; the decryption of
 * safe-mode bodies is crypto.h's; tests/unit/test_wechat_message.c replays
 * the research's samples and every refusal below.
 *
 * A push is `<xml>` with one element per field, text in CDATA, numbers
 * bare:
 *     <xml><ToUserName><![CDATA[gh_...]]></ToUserName>
 *          <FromUserName><![CDATA[openid]]></FromUserName>
 *          <CreateTime>1409659813</CreateTime><MsgType><![CDATA[text]]></MsgType>
 *          <Content><![CDATA[积分]]></Content><MsgId>4561255354251345929</MsgId></xml>
 * A push body comes from the network before anything about it is trusted
 * (in plaintext mode the signature is all that vouches for it), so parsing
 * refuses, with PGW_EINVAL and a message saying which rule:
 *   - any DOCTYPE or entity declaration: no DTD is ever read, so no
 *     external entity (XXE) and no entity expansion (billion laughs);
 *   - a root other than <xml>, XML that is not well-formed (truncated,
 *     invalid UTF-8, an undefined entity), elements nested deeper than
 *     PGW_OA_DEPTH_MAX, an element inside a field we read;
 *   - a field we read given twice (which one would count?);
 *   - a missing or empty ToUserName, FromUserName, CreateTime or MsgType,
 *     an event without Event; a CreateTime that is not digits (no sign, no
 *     spaces) of a value within int64; a MsgId that is not digits of a
 *     64-bit number (at most 18446744073709551615).
 * and with PGW_ETOOLARGE a body over PGW_OA_XML_MAX bytes or a field over
 * its bound (never truncated: a cut openid would name another member).
 * Elements we do not read (AgentID, Ticket, MsgDataId, ScanCodeInfo and its
 * children, ...) are skipped: WeChat adds fields over time. The input is
 * read as UTF-8 whatever its XML declaration says, as WeChat sends it.
 *
 * Replies are built, never parsed by us: text goes into CDATA sections (a
 * "]]>" inside is split as "]]]]><![CDATA[>"), so only what XML cannot
 * carry is refused: invalid UTF-8 and control characters other than
 * newline and tab.
 */
#ifndef PGW_ADAPTERS_WECHAT_OA_MESSAGE_H
#define PGW_ADAPTERS_WECHAT_OA_MESSAGE_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ToUserName, FromUserName, MsgType, Event, MsgId, a reply's nonce: ids of
 * 15-30 bytes and short words, with room. */
#define PGW_OA_FIELD_MAX 128
/* Bytes of a text message's Content we accept, and of a reply's Content. */
#define PGW_OA_CONTENT_MAX 2048
/* Bytes of an EventKey: a menu key is at most 128 bytes, but a VIEW event's
 * key is the menu's URL, up to 1024 bytes by WeChat's menu rules. */
#define PGW_OA_EVENT_KEY_MAX 1024
/* Bytes of one push body (a safe-mode envelope included), and of the
 * base64 ciphertext put into an encrypted reply. */
#define PGW_OA_XML_MAX 65536
/* <xml> is depth 1 and its fields depth 2; WeChat's richest events
 * (pictures sent from a menu: SendPicsInfo > PicList > item > PicMd5Sum)
 * reach 5. Deeper is refused rather than walked. */
#define PGW_OA_DEPTH_MAX 8

/* One push message. Every string is NUL-terminated valid UTF-8; a field the
 * push did not carry is "". */
typedef struct pgw_oa_message {
    char to_user[PGW_OA_FIELD_MAX + 1];       /* the account's original id, gh_... */
    char from_user[PGW_OA_FIELD_MAX + 1];     /* the member's openid */
    int64_t create_time;                      /* unix seconds, >= 0 */
    char msg_type[PGW_OA_FIELD_MAX + 1];      /* "text", "event", "image", ... */
    char event[PGW_OA_FIELD_MAX + 1];         /* "subscribe", "unsubscribe", "SCAN", "CLICK", ... */
    char event_key[PGW_OA_EVENT_KEY_MAX + 1]; /* "qrscene_123", a menu key or URL */
    char content[PGW_OA_CONTENT_MAX + 1];     /* text messages; cut to fit... */
    bool content_cut;                         /* ...when it was longer */
    char msg_id[PGW_OA_FIELD_MAX + 1];        /* digits (64-bit); "" for events */
} pgw_oa_message;

/*
 * Parses a plain push message (len bytes at xml; a decrypted safe-mode
 * message is one too) into *out. On failure *out is all empty and err says
 * what was refused (see above), naming the field.
 */
int pgw_oa_message_parse(const char *xml, size_t len, pgw_oa_message *out, pgw_err *err);

/*
 * Reads a safe-mode envelope, <xml><ToUserName>..</ToUserName><Encrypt>..
 * </Encrypt></xml> (a compatible-mode body, which also has the plain
 * fields, is one too), with the same refusals as pgw_oa_message_parse.
 * Encrypt (required, base64) goes into encrypt (cap bytes, NUL-terminated;
 * PGW_ETOOLARGE when it does not fit). to_user, when not NULL, receives
 * ToUserName, "" when absent: the caller may check it is its account
 * before spending time on decryption.
 */
int pgw_oa_envelope_parse(const char *xml, size_t len, char *encrypt, size_t cap,
                          char to_user[PGW_OA_FIELD_MAX + 1], pgw_err *err);

/*
 * A passive text reply into out (cap bytes, NUL-terminated; *out_len is its
 * length without the NUL):
 *     <xml><ToUserName><![CDATA[to]]></ToUserName>
 *     <FromUserName><![CDATA[from]]></FromUserName><CreateTime>now</CreateTime>
 *     <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[content]]></Content></xml>
 * (without the line breaks). The caller swaps the push's ids: to_user is the
 * member's openid, from_user the account's gh_ id. PGW_EINVAL for an empty
 * or invalid string (see above), a negative now, or an empty content (to
 * say nothing, answer "success" instead); PGW_ETOOLARGE for a string over
 * its bound (ids PGW_OA_FIELD_MAX, content PGW_OA_CONTENT_MAX bytes) or a
 * reply that does not fit in cap, err giving the size needed.
 */
int pgw_oa_text_reply(const char *to_user, const char *from_user, int64_t now, const char *content,
                      char *out, size_t cap, size_t *out_len, pgw_err *err);

/*
 * The safe-mode reply around a reply encrypted with pgw_wx_encrypt:
 *     <xml><Encrypt><![CDATA[encrypt_b64]]></Encrypt>
 *     <MsgSignature><![CDATA[msg_signature]]></MsgSignature>
 *     <TimeStamp>timestamp</TimeStamp><Nonce><![CDATA[nonce]]></Nonce></xml>
 * msg_signature is pgw_wx_signature over (token, timestamp, nonce,
 * encrypt_b64) with these very values. PGW_EINVAL for encrypt_b64 that is
 * not base64, a signature that is not 40 lowercase hex digits, a negative
 * timestamp, an empty or invalid nonce; PGW_ETOOLARGE for encrypt_b64 over
 * PGW_OA_XML_MAX, a nonce over PGW_OA_FIELD_MAX, or a reply that does not
 * fit in cap. out, cap and *out_len as for pgw_oa_text_reply.
 */
int pgw_oa_encrypted_reply(const char *encrypt_b64, const char *msg_signature, int64_t timestamp,
                           const char *nonce, char *out, size_t cap, size_t *out_len, pgw_err *err);

#endif
