/*
 * message.c - see message.h.
 *
 * Both parsers share one expat walk: a table of the <xml> children to keep
 * (name, destination, capacity); everything else is skipped. A handler that
 * meets a refusal records it and stops the parser; the handlers that expat
 * may still call afterwards see the recorded code and do nothing.
 */
#include "message.h"

#include "core/arith.h"
#include "core/assertions.h"
#include "core/utf8.h"
#include "crypto.h"

#include <expat.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* A field of <xml> that we keep. */
struct slot {
    const char *name; /* the element's name, as WeChat spells it */
    char *dst;        /* where its text goes, always NUL-terminated */
    size_t cap;       /* bytes at dst, the NUL included */
    size_t len;
    bool seen;
    bool cut_ok; /* longer text is cut (on a character's boundary), not refused */
    bool cut;    /* it was */
};

struct walk {
    XML_Parser parser;
    struct slot *slots;
    size_t n_slots;
    struct slot *open; /* the kept field whose text is being read, or NULL */
    int depth;         /* elements open: 1 inside <xml>, 2 inside a field */
    int rc;            /* PGW_OK until a refusal */
    pgw_err *err;
};

/* Records a refusal (rc comes from pgw_err_set) and stops expat. A
 * refusal's quote of a name or a field ends on a character
 * (pgw_utf8_prefix: expat's names and text are UTF-8), as pgw_err_set
 * mends a cut at the message's end only. */
static void refuse(struct walk *w, int rc)
{
    w->rc = rc;
    XML_StopParser(w->parser, XML_FALSE);
}

static void XMLCALL on_start(void *data, const XML_Char *name, const XML_Char **attrs)
{
    struct walk *w = data;
    (void)attrs; /* WeChat puts nothing in attributes */
    if (w->rc != PGW_OK)
        return;
    if (w->depth == 0 && strcmp(name, "xml") != 0) {
        refuse(w, pgw_err_set(w->err, PGW_EINVAL, "the root element is <%.*s>, not <xml>",
                              (int)pgw_utf8_prefix(name, 64), name));
        return;
    }
    /* A field is text; markup inside one means the body is not WeChat's. */
    if (w->open != NULL) {
        refuse(w, pgw_err_set(w->err, PGW_EINVAL, "<%s> holds an element <%.*s>", w->open->name,
                              (int)pgw_utf8_prefix(name, 64), name));
        return;
    }
    if (w->depth >= PGW_OA_DEPTH_MAX) {
        refuse(w, pgw_err_set(w->err, PGW_EINVAL, "elements are nested deeper than %d",
                              PGW_OA_DEPTH_MAX));
        return;
    }
    if (w->depth == 1) {
        for (size_t i = 0; i < w->n_slots; i++) {
            struct slot *s = &w->slots[i];
            if (strcmp(name, s->name) != 0)
                continue;
            /* Two values for one field: whichever we kept, the sender may
             * have meant (and signed for) the other. */
            if (s->seen) {
                refuse(w, pgw_err_set(w->err, PGW_EINVAL, "<%s> appears twice", s->name));
                return;
            }
            s->seen = true;
            w->open = s;
            break;
        }
    }
    w->depth++;
}

static void XMLCALL on_end(void *data, const XML_Char *name)
{
    struct walk *w = data;
    (void)name; /* expat has checked that it matches its start */
    if (w->rc != PGW_OK)
        return;
    w->depth--;
    if (w->depth == 1)
        w->open = NULL;
}

/* Text arrives in pieces (at line breaks, entities, CDATA boundaries and
 * buffer ends): append each to the open field. */
static void XMLCALL on_text(void *data, const XML_Char *s, int n)
{
    struct walk *w = data;
    if (w->rc != PGW_OK || w->open == NULL)
        return; /* whitespace between fields, text of a skipped element */
    struct slot *f = w->open;
    if (f->cut)
        return; /* the rest of a text already cut */
    if ((size_t)n >= f->cap - f->len && f->cut_ok) {
        size_t room = f->cap - 1 - f->len; /* < n: s[room] is there */
        while (room > 0 && ((unsigned char)s[room] & 0xC0) == 0x80)
            room--; /* not inside a character */
        memcpy(f->dst + f->len, s, room);
        f->len += room;
        f->dst[f->len] = '\0';
        f->cut = true;
        return;
    }
    if ((size_t)n >= f->cap - f->len) {
        refuse(w, pgw_err_set(w->err, PGW_ETOOLARGE, "<%s> is longer than %zu bytes", f->name,
                              f->cap - 1));
        return;
    }
    memcpy(f->dst + f->len, s, (size_t)n);
    f->len += (size_t)n;
    f->dst[f->len] = '\0';
}

/* A DTD is where external entities (XXE) and expanding ones (billion
 * laughs) are declared; WeChat never sends one, so none is read at all. */
static void XMLCALL on_doctype(void *data, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    struct walk *w = data;
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)has_internal_subset;
    if (w->rc == PGW_OK)
        refuse(w, pgw_err_set(w->err, PGW_EINVAL,
                              "a DOCTYPE is refused: no DTD or entity declaration is read"));
}

/* Unreachable while on_doctype stops at the DTD's start; kept so that no
 * change there can let an entity through. */
static void XMLCALL on_entity(void *data, const XML_Char *name, int is_parameter,
                              const XML_Char *value, int value_len, const XML_Char *base,
                              const XML_Char *sysid, const XML_Char *pubid,
                              const XML_Char *notation)
{
    struct walk *w = data;
    (void)is_parameter;
    (void)value;
    (void)value_len;
    (void)base;
    (void)sysid;
    (void)pubid;
    (void)notation;
    if (w->rc == PGW_OK)
        refuse(w, pgw_err_set(w->err, PGW_EINVAL, "an entity declaration (%.*s) is refused",
                              (int)pgw_utf8_prefix(name, 64), name));
}

/* Walks one body, filling the slots; "what" names the body in errors. */
static int walk_xml(const char *xml, size_t len, struct slot *slots, size_t n_slots,
                    const char *what, pgw_err *err)
{
    for (size_t i = 0; i < n_slots; i++) {
        PGW_ASSERT(slots[i].cap >= 1);
        slots[i].dst[0] = '\0';
    }
    if (len > PGW_OA_XML_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "a %s of %zu bytes is over %d", what, len,
                           PGW_OA_XML_MAX);
    if (len == 0)
        return pgw_err_set(err, PGW_EINVAL, "the %s is empty", what);
    /* "UTF-8" overrides the document's declaration: WeChat sends UTF-8,
     * and a body claiming another encoding is not WeChat's. */
    XML_Parser parser = XML_ParserCreate("UTF-8");
    if (parser == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "no memory for an XML parser");
    struct walk w = {
        .parser = parser, .slots = slots, .n_slots = n_slots, .rc = PGW_OK, .err = err};
    XML_SetUserData(parser, &w);
    XML_SetElementHandler(parser, on_start, on_end);
    XML_SetCharacterDataHandler(parser, on_text);
    XML_SetStartDoctypeDeclHandler(parser, on_doctype);
    XML_SetEntityDeclHandler(parser, on_entity);
    /* Already expat's default; stated so that no external DTD is ever fetched. */
    XML_SetParamEntityParsing(parser, XML_PARAM_ENTITY_PARSING_NEVER);
    /* len <= PGW_OA_XML_MAX, so it fits expat's int. */
    enum XML_Status status = XML_Parse(parser, xml, (int)len, XML_TRUE);
    if (w.rc == PGW_OK && status != XML_STATUS_OK)
        w.rc = pgw_err_set(err, PGW_EINVAL,
                           "the %s is not well-formed XML: %s at line %lu, column %lu", what,
                           XML_ErrorString(XML_GetErrorCode(parser)),
                           (unsigned long)XML_GetCurrentLineNumber(parser),
                           (unsigned long)XML_GetCurrentColumnNumber(parser));
    XML_ParserFree(parser);
    return w.rc;
}

static bool all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* Unix seconds: digits only (no sign, no spaces), within int64. */
static bool parse_seconds(const char *s, int64_t *out)
{
    if (!all_digits(s))
        return false;
    int64_t v = 0;
    for (; *s != '\0'; s++)
        if (pgw_mul(v, 10, &v) != PGW_OK || pgw_add(v, *s - '0', &v) != PGW_OK)
            return false;
    *out = v;
    return true;
}

/* WeChat's MsgId, a 64-bit number: at most 20 digits, at most
 * UINT64_MAX. Kept as its digits, never converted. */
static bool within_64_bits(const char *digits)
{
    static const char max[] = "18446744073709551615";
    size_t n = strlen(digits);
    return n < sizeof(max) - 1 || (n == sizeof(max) - 1 && strcmp(digits, max) <= 0);
}

enum { F_TO, F_FROM, F_TIME, F_TYPE, F_EVENT, F_KEY, F_CONTENT, F_MSG_ID, F_COUNT };

static int check_message(const struct slot *slots, const char *create_time, pgw_oa_message *out,
                         pgw_err *err)
{
    /* Without both ids a reply has no address and the member no identity;
     * an empty openid would be one identity shared by every such push. */
    static const int required[] = {F_TO, F_FROM, F_TIME, F_TYPE};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        const struct slot *s = &slots[required[i]];
        if (!s->seen)
            return pgw_err_set(err, PGW_EINVAL, "the message has no <%s>", s->name);
        if (s->len == 0)
            return pgw_err_set(err, PGW_EINVAL, "<%s> is empty", s->name);
    }
    if (!parse_seconds(create_time, &out->create_time))
        return pgw_err_set(err, PGW_EINVAL, "<CreateTime> is not unix seconds: \"%.*s\"",
                           (int)pgw_utf8_prefix(create_time, 32), create_time);
    if (slots[F_MSG_ID].seen && !all_digits(out->msg_id))
        return pgw_err_set(err, PGW_EINVAL, "<MsgId> is not digits: \"%.*s\"",
                           (int)pgw_utf8_prefix(out->msg_id, 32), out->msg_id);
    /* A longer one is no id of WeChat's, and the sign-in's key (api.c
     * oa_event) keeps 64 characters of it: two alike in those were one. */
    if (slots[F_MSG_ID].seen && !within_64_bits(out->msg_id))
        return pgw_err_set(err, PGW_EINVAL, "<MsgId> is past 64 bits: \"%.32s\"", out->msg_id);
    /* Event pushes are dispatched on Event: one without it is unusable. */
    if (strcmp(out->msg_type, "event") == 0 && out->event[0] == '\0')
        return pgw_err_set(err, PGW_EINVAL, "an event message without <Event>");
    return PGW_OK;
}

int pgw_oa_message_parse(const char *xml, size_t len, pgw_oa_message *out, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    char create_time[PGW_OA_FIELD_MAX + 1];
    struct slot slots[F_COUNT] = {
        [F_TO] = {"ToUserName", out->to_user, sizeof(out->to_user), 0, false, false, false},
        [F_FROM] = {"FromUserName", out->from_user, sizeof(out->from_user), 0, false, false, false},
        [F_TIME] = {"CreateTime", create_time, sizeof(create_time), 0, false, false, false},
        [F_TYPE] = {"MsgType", out->msg_type, sizeof(out->msg_type), 0, false, false, false},
        [F_EVENT] = {"Event", out->event, sizeof(out->event), 0, false, false, false},
        [F_KEY] = {"EventKey", out->event_key, sizeof(out->event_key), 0, false, false, false},
        /* A member's text of any length is answered "success", never an
         * error (WeChat would tell them the account cannot serve, and send
         * it again): cut, it is no keyword. */
        [F_CONTENT] = {"Content", out->content, sizeof(out->content), 0, false, true, false},
        [F_MSG_ID] = {"MsgId", out->msg_id, sizeof(out->msg_id), 0, false, false, false},
    };
    int rc = walk_xml(xml, len, slots, F_COUNT, "push body", err);
    out->content_cut = slots[F_CONTENT].cut;
    if (rc == PGW_OK)
        rc = check_message(slots, create_time, out, err);
    if (rc != PGW_OK)
        memset(out, 0, sizeof(*out)); /* nothing half-read for a careless caller */
    return rc;
}

/* Standard base64 with '=' padding, as WeChat's Encrypt and ours are. */
static bool is_base64(const char *s, size_t len)
{
    if (len == 0 || len % 4 != 0)
        return false;
    size_t pad = s[len - 1] == '=' ? (s[len - 2] == '=' ? 2 : 1) : 0;
    for (size_t i = 0; i < len - pad; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return false;
    }
    return true;
}

int pgw_oa_envelope_parse(const char *xml, size_t len, char *encrypt, size_t cap,
                          char to_user[PGW_OA_FIELD_MAX + 1], pgw_err *err)
{
    char ignored[PGW_OA_FIELD_MAX + 1];
    struct slot slots[] = {
        {"Encrypt", encrypt, cap, 0, false, false, false},
        {"ToUserName", to_user != NULL ? to_user : ignored, PGW_OA_FIELD_MAX + 1, 0, false, false,
         false},
    };
    int rc = walk_xml(xml, len, slots, 2, "safe-mode envelope", err);
    if (rc == PGW_OK && !slots[0].seen)
        rc = pgw_err_set(err, PGW_EINVAL, "the envelope has no <Encrypt>");
    if (rc == PGW_OK && !is_base64(encrypt, slots[0].len))
        rc = pgw_err_set(err, PGW_EINVAL, "<Encrypt> is not base64");
    if (rc != PGW_OK) {
        encrypt[0] = '\0';
        slots[1].dst[0] = '\0';
    }
    return rc;
}

/*
 * Checks a string that goes into a reply: 1..max bytes of UTF-8 without
 * control characters other than newline and tab. Those, C1 controls and
 * U+FFFE/U+FFFF are not characters an XML reader takes (or, for C0/C1
 * controls, shows); a carriage return would come back as a newline.
 */
static int check_text(const char *what, const char *s, size_t max, pgw_err *err)
{
    size_t len = strnlen(s, max + 1);
    if (len > max)
        return pgw_err_set(err, PGW_ETOOLARGE, "%s is longer than %zu bytes", what, max);
    if (len == 0)
        return pgw_err_set(err, PGW_EINVAL, "%s is empty", what);
    for (size_t at = 0; at < len;) {
        uint32_t cp = 0;
        size_t n = pgw_utf8_next(s + at, &cp);
        if (n == 0)
            return pgw_err_set(err, PGW_EINVAL, "%s is not valid UTF-8 (byte %zu)", what, at);
        bool control = (cp < 0x20 && cp != '\n' && cp != '\t') || (cp >= 0x7f && cp <= 0x9f);
        if (control || cp == 0xfffe || cp == 0xffff)
            return pgw_err_set(err, PGW_EINVAL, "%s holds U+%04X at byte %zu", what, (unsigned)cp,
                               at);
        at += n;
    }
    return PGW_OK;
}

/* A reply being written: the length grows past cap when it does not fit,
 * so that the error can say how much was needed. */
struct writer {
    char *p;
    size_t cap;
    size_t len;
};

static void put(struct writer *o, const char *s, size_t n)
{
    if (o->len < o->cap && n < o->cap - o->len) /* room for s and the final NUL */
        memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void put_str(struct writer *o, const char *s)
{
    put(o, s, strlen(s));
}

/* s as CDATA: "]]>" would end the section, so each one is cut after its
 * "]]" into a new section that starts with the ">". */
static void put_cdata(struct writer *o, const char *s)
{
    put_str(o, "<![CDATA[");
    for (const char *end; (end = strstr(s, "]]>")) != NULL; s = end + 2) {
        put(o, s, (size_t)(end + 2 - s));
        put_str(o, "]]><![CDATA[");
    }
    put_str(o, s);
    put_str(o, "]]>");
}

static void put_int(struct writer *o, int64_t v)
{
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%lld", (long long)v);
    PGW_ASSERT(n > 0 && (size_t)n < sizeof(digits));
    put(o, digits, (size_t)n);
}

static int finish(struct writer *o, size_t *out_len, pgw_err *err)
{
    if (o->len >= o->cap) {
        if (o->cap > 0)
            o->p[0] = '\0';
        return pgw_err_set(err, PGW_ETOOLARGE, "the reply needs %zu bytes, %zu given", o->len + 1,
                           o->cap);
    }
    o->p[o->len] = '\0';
    *out_len = o->len;
    return PGW_OK;
}

int pgw_oa_text_reply(const char *to_user, const char *from_user, int64_t now, const char *content,
                      char *out, size_t cap, size_t *out_len, pgw_err *err)
{
    if (cap > 0)
        out[0] = '\0';
    int rc = check_text("ToUserName", to_user, PGW_OA_FIELD_MAX, err);
    if (rc == PGW_OK)
        rc = check_text("FromUserName", from_user, PGW_OA_FIELD_MAX, err);
    /* An empty Content is an invalid reply to WeChat, which then tells the
     * member the account "cannot provide service"; "success" says nothing. */
    if (rc == PGW_OK)
        rc = check_text("Content", content, PGW_OA_CONTENT_MAX, err);
    if (rc == PGW_OK && now < 0)
        rc = pgw_err_set(err, PGW_EINVAL, "CreateTime %lld is before 1970", (long long)now);
    if (rc != PGW_OK)
        return rc;
    struct writer o = {out, cap, 0};
    put_str(&o, "<xml><ToUserName>");
    put_cdata(&o, to_user);
    put_str(&o, "</ToUserName><FromUserName>");
    put_cdata(&o, from_user);
    put_str(&o, "</FromUserName><CreateTime>");
    put_int(&o, now);
    put_str(&o, "</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>");
    put_cdata(&o, content);
    put_str(&o, "</Content></xml>");
    return finish(&o, out_len, err);
}

int pgw_oa_encrypted_reply(const char *encrypt_b64, const char *msg_signature, int64_t timestamp,
                           const char *nonce, char *out, size_t cap, size_t *out_len, pgw_err *err)
{
    if (cap > 0)
        out[0] = '\0';
    size_t b64_len = strnlen(encrypt_b64, PGW_OA_XML_MAX + 1);
    if (b64_len > PGW_OA_XML_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "Encrypt is longer than %d bytes", PGW_OA_XML_MAX);
    if (!is_base64(encrypt_b64, b64_len))
        return pgw_err_set(err, PGW_EINVAL, "Encrypt is not base64");
    bool hex = strnlen(msg_signature, PGW_WX_SIGNATURE_HEX + 1) == PGW_WX_SIGNATURE_HEX;
    for (size_t i = 0; hex && i < PGW_WX_SIGNATURE_HEX; i++)
        hex = (msg_signature[i] >= '0' && msg_signature[i] <= '9') ||
              (msg_signature[i] >= 'a' && msg_signature[i] <= 'f');
    if (!hex)
        return pgw_err_set(err, PGW_EINVAL, "MsgSignature is not 40 lowercase hex digits");
    if (timestamp < 0)
        return pgw_err_set(err, PGW_EINVAL, "TimeStamp %lld is before 1970", (long long)timestamp);
    int rc = check_text("Nonce", nonce, PGW_OA_FIELD_MAX, err);
    if (rc != PGW_OK)
        return rc;
    struct writer o = {out, cap, 0};
    put_str(&o, "<xml><Encrypt>");
    put_cdata(&o, encrypt_b64);
    put_str(&o, "</Encrypt><MsgSignature>");
    put_cdata(&o, msg_signature);
    put_str(&o, "</MsgSignature><TimeStamp>");
    put_int(&o, timestamp);
    put_str(&o, "</TimeStamp><Nonce>");
    put_cdata(&o, nonce);
    put_str(&o, "</Nonce></xml>");
    return finish(&o, out_len, err);
}
