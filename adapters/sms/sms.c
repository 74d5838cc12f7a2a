/*
 * sms.c - see sms.h.
 */
#include "sms.h"

#include "adapters/sms/sign.h"
#include "core/assertions.h"
#include "core/civil.h"
#include "core/utf8.h"
#include "util/env.h"
#include "util/http_client.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HOST_MAX         255
#define TEMPLATE_ID_MAX  64
#define NONCE_MAX        64
#define TENCENT_VERSION  "2021-01-11"
#define ALIYUN_VERSION   "2017-05-25"
#define TENCENT_SERVICE  "sms"          /* fixed: never derived from the host (research 3.1) */
#define TENCENT_REGION   "ap-guangzhou" /* Tencent's own SMS demo (research 1.2) */
#define ALIYUN_REGION    "cn-hangzhou"
#define RPC_BODY_MAX     (PGW_RPC_QUERY_MAX + 16 + 3 * PGW_RPC_SIGNATURE_LEN)
#define URL_MAX          (PGW_URL_MAX + 2 + RPC_BODY_MAX)
#define SCRUB_MIN_SECRET 8 /* shorter "secrets" would blank ordinary words */

typedef enum provider { TENCENT = 0, ALIYUN = 1 } provider;

static const char *const PROVIDER_NAMES[] = {"tencent", "aliyun"};

struct pgw_sms_client {
    provider provider;
    char api_base[PGW_URL_MAX + 1]; /* scheme://authority, no trailing '/' */
    char host[HOST_MAX + 1];        /* signed by TC3: lower case, no port */
    char sign_name[PGW_NAME_MAX + 1];
    size_t sign_chars;
    char sdk_app_id[PGW_ID_MAX + 1];
    char region[PGW_ID_MAX + 1];
    char key_id[PGW_SMS_KEY_MAX + 1];
    char key_secret[PGW_SMS_KEY_MAX + 1];
    pgw_sms_options opt;
};

/* ---- classification (research 1.5, 2.3) --------------------------------- */

typedef struct code_rule {
    const char *code;
    bool prefix; /* matches every code starting with `code` */
    pgw_sms_outcome outcome;
    int rc;
    bool server_fault; /* the provider's own failure: the message may have gone */
} code_rule;

/* Exact codes are matched before prefixes, whatever their order here. */
static const code_rule TENCENT_RULES[] = {
    {"Ok", false, PGW_SMS_SENT, PGW_OK, false},
    /* Per-number frequency: the number will take messages again later. */
    {"LimitExceeded.PhoneNumberThirtySecondLimit", false, PGW_SMS_RATE_LIMITED, PGW_ERISK, false},
    {"LimitExceeded.PhoneNumberOneHourLimit", false, PGW_SMS_RATE_LIMITED, PGW_ERISK, false},
    {"LimitExceeded.PhoneNumberDailyLimit", false, PGW_SMS_RATE_LIMITED, PGW_ERISK, false},
    {"LimitExceeded.PhoneNumberSameContentDailyLimit", false, PGW_SMS_RATE_LIMITED, PGW_ERISK,
     false},
    {"LimitExceeded.DeliveryFrequencyLimit", false, PGW_SMS_RATE_LIMITED, PGW_ERISK, false},
    /* Marketing texts only 08:00-22:00: "not now" too, whatever the number. */
    {"FailedOperation.MarketingSendTimeConstraint", false, PGW_SMS_RATE_LIMITED, PGW_ERISK, false},
    /* The number: the member opted out at the carrier, or it is no mobile's. */
    {"FailedOperation.PhoneNumberInBlacklist", false, PGW_SMS_NUMBER_REFUSED, PGW_EINVAL, false},
    {"FailedOperation.PhoneNumberOnBlacklist", false, PGW_SMS_NUMBER_REFUSED, PGW_EINVAL, false},
    {"InvalidParameterValue.IncorrectPhoneNumber", false, PGW_SMS_NUMBER_REFUSED, PGW_EINVAL,
     false},
    /* Account-wide volume caps: an operator raises them, retrying does not. */
    {"LimitExceeded.AppDailyLimit", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},
    {"LimitExceeded.DailyLimit", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},
    {"LimitExceeded.PhoneNumberCountLimit", false, PGW_SMS_GIVE_UP, PGW_EINVAL, false},
    {"LimitExceeded", true, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},
    /* Request-level throttling (3000/s per account) passes in a moment. */
    {"RequestLimitExceeded", true, PGW_SMS_RETRY, PGW_EUNAVAILABLE, false},
    {"InternalError", true, PGW_SMS_RETRY, PGW_EUNAVAILABLE, true},
    /* Includes SignatureExpire: a clock 5 minutes off stays off between
     * retries; the operator must fix it. */
    {"AuthFailure", true, PGW_SMS_GIVE_UP, PGW_EUNAUTHORIZED, false},
    {"UnauthorizedOperation", true, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},
    {"FailedOperation.InsufficientBalanceInSmsPackage", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN,
     false},
    {"FailedOperation", true, PGW_SMS_GIVE_UP, PGW_EINVAL, false},
    {"InvalidParameter", true, PGW_SMS_GIVE_UP, PGW_EINVAL,
     false}, /* and InvalidParameterValue.* */
    {"MissingParameter", true, PGW_SMS_GIVE_UP, PGW_EINVAL, false},
    {"UnsupportedOperation", true, PGW_SMS_GIVE_UP, PGW_EINVAL, false},
};

static const code_rule ALIYUN_RULES[] = {
    {"OK", false, PGW_SMS_SENT, PGW_OK, false},
    {"isv.BUSINESS_LIMIT_CONTROL", false, PGW_SMS_RATE_LIMITED, PGW_ERISK, false},
    {"isv.MOBILE_NUMBER_ILLEGAL", false, PGW_SMS_NUMBER_REFUSED, PGW_EINVAL, false},
    {"isv.DAY_LIMIT_CONTROL", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},   /* console cap */
    {"isv.MONTH_LIMIT_CONTROL", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false}, /* console cap */
    {"isv.AMOUNT_NOT_ENOUGH", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},
    {"isv.OUT_OF_SERVICE", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},
    {"isv.DENY_IP_RANGE", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},
    {"isp.RAM_PERMISSION_DENY", false, PGW_SMS_GIVE_UP, PGW_EFORBIDDEN, false},
    /* Numbers, signs, templates, parameters, content: the request is wrong. */
    {"isv.", true, PGW_SMS_GIVE_UP, PGW_EINVAL, false},
    {"isp.", true, PGW_SMS_RETRY, PGW_EUNAVAILABLE, true}, /* isp.SYSTEM_ERROR */
    {"SignatureDoesNotMatch", false, PGW_SMS_GIVE_UP, PGW_EUNAUTHORIZED, false},
    {"InvalidTimeStamp", true, PGW_SMS_GIVE_UP, PGW_EUNAUTHORIZED, false}, /* the clock */
    {"InvalidAccessKeyId", true, PGW_SMS_GIVE_UP, PGW_EUNAUTHORIZED, false},
    /* Every attempt draws a new nonce, so a repeat cannot repeat. */
    {"SignatureNonceUsed", false, PGW_SMS_RETRY, PGW_EUNAVAILABLE, false},
    {"Throttling", true, PGW_SMS_RETRY, PGW_EUNAVAILABLE, false},
};

const char *pgw_sms_outcome_name(pgw_sms_outcome outcome)
{
    switch (outcome) {
    case PGW_SMS_SENT:
        return "sent";
    case PGW_SMS_RETRY:
        return "retry";
    case PGW_SMS_GIVE_UP:
        return "give_up";
    case PGW_SMS_RATE_LIMITED:
        return "rate_limited";
    case PGW_SMS_NUMBER_REFUSED:
        return "number_refused";
    }
    return "?";
}

/* The rule for `code`, exact codes first, or NULL. */
static const code_rule *rule_in(const code_rule *rules, size_t n, const char *code)
{
    for (size_t i = 0; i < n; i++) {
        if (!rules[i].prefix && strcmp(rules[i].code, code) == 0)
            return &rules[i];
    }
    for (size_t i = 0; i < n; i++) {
        if (rules[i].prefix && strncmp(rules[i].code, code, strlen(rules[i].code)) == 0)
            return &rules[i];
    }
    return NULL;
}

/* The provider's rule for `code`, or NULL (an unknown provider or code). */
static const code_rule *rule_of(const char *provider_name, const char *code)
{
    if (provider_name == NULL || code == NULL || code[0] == '\0')
        return NULL;
    if (strcmp(provider_name, "tencent") == 0)
        return rule_in(TENCENT_RULES, sizeof(TENCENT_RULES) / sizeof(TENCENT_RULES[0]), code);
    if (strcmp(provider_name, "aliyun") == 0)
        return rule_in(ALIYUN_RULES, sizeof(ALIYUN_RULES) / sizeof(ALIYUN_RULES[0]), code);
    return NULL;
}

pgw_sms_outcome pgw_sms_classify(const char *provider_name, const char *code, int *rc)
{
    int ignored;
    if (rc == NULL)
        rc = &ignored;
    const code_rule *rule = rule_of(provider_name, code);
    bool ours = provider_name != NULL &&
                (strcmp(provider_name, "tencent") == 0 || strcmp(provider_name, "aliyun") == 0);
    if (rule != NULL)
        *rc = rule->rc;
    else if (provider_name == NULL || code == NULL || code[0] == '\0' || ours)
        *rc = PGW_EIO; /* no code, or one not known here */
    else
        *rc = PGW_EINVAL; /* no such provider */
    return rule != NULL ? rule->outcome : PGW_SMS_GIVE_UP;
}

/* ---- checks --------------------------------------------------------------- */

bool pgw_sms_phone_ok(const char *s)
{
    if (s == NULL || strnlen(s, 15) != 14 || strncmp(s, "+861", 4) != 0 || s[4] < '3' || s[4] > '9')
        return false;
    return strspn(s + 5, "0123456789") == 9;
}

/* "138****8000": how a number appears in messages (README "phones"). */
static void mask_phone(const char *phone, char out[16])
{
    if (pgw_sms_phone_ok(phone))
        snprintf(out, 16, "%.3s****%.4s", phone + 3, phone + 10);
    else
        snprintf(out, 16, "(bad number)");
}

static bool is_cjk(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x20000 && cp <= 0x2FA1F);
}

static bool ascii_alnum(uint32_t cp)
{
    return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z');
}

/* Characters of the sign name, or 0 when it is not letters, digits and
 * Chinese characters (research 4: neither provider takes symbols, spaces
 * or the 【】 it adds itself). */
static size_t sign_chars(const char *s)
{
    size_t chars = 0, n;
    uint32_t cp;
    for (; (n = pgw_utf8_next(s, &cp)) > 0; s += n, chars++) {
        if (!ascii_alnum(cp) && !is_cjk(cp))
            return 0;
    }
    return *s == '\0' ? chars : 0;
}

static bool has_url(const char *s)
{
    for (; *s; s++) {
        if (strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0 ||
            strncasecmp(s, "www.", 4) == 0)
            return true;
    }
    return false;
}

/* Characters of a parameter value; 0 with err set when it is not one the
 * providers take. */
static int param_chars(const pgw_sms_param *p, size_t i, size_t limit, size_t *chars, pgw_err *err)
{
    *chars = 0;
    if (p->value == NULL || p->value[0] == '\0')
        return pgw_err_set(err, PGW_EINVAL, "SMS parameter %zu is empty", i + 1);
    /* Bytes are bounded before characters are counted: 4 per character. */
    if (strnlen(p->value, 4 * PGW_SMS_TEXT_CHARS_MAX + 1) > 4 * PGW_SMS_TEXT_CHARS_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "SMS parameter %zu: over %d characters", i + 1,
                           PGW_SMS_TEXT_CHARS_MAX);
    size_t n;
    uint32_t cp;
    const char *s = p->value;
    for (; (n = pgw_utf8_next(s, &cp)) > 0; s += n) {
        /* Control characters break the rendered text; 【】 would pose as a
         * second signature, which Tencent refuses in templates. */
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
            cp == 0x3010 || cp == 0x3011)
            return pgw_err_set(err, PGW_EINVAL,
                               "SMS parameter %zu: control characters and 【】 are not allowed",
                               i + 1);
        (*chars)++;
    }
    if (*s != '\0')
        return pgw_err_set(err, PGW_EINVAL, "SMS parameter %zu is not valid UTF-8", i + 1);
    /* Both providers refuse URLs in variables (ProhibitedUseUrlInTemplate-
     * Parameter, isv.PARAM_NOT_SUPPORT_URL). */
    if (has_url(p->value))
        return pgw_err_set(err, PGW_EINVAL, "SMS parameter %zu: URLs are not allowed", i + 1);
    if (*chars > limit)
        return pgw_err_set(err, PGW_ETOOLARGE, "SMS parameter %zu: %zu characters, at most %zu",
                           i + 1, *chars, limit);
    return PGW_OK;
}

static bool name_ok(const char *name)
{
    size_t n = name ? strnlen(name, PGW_SMS_PARAM_NAME_MAX + 1) : 0;
    return n > 0 && n <= PGW_SMS_PARAM_NAME_MAX &&
           strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static size_t param_limit(const pgw_sms_client *c)
{
    if (c->opt.param_chars_max > 0)
        return c->opt.param_chars_max;
    return c->provider == TENCENT ? PGW_SMS_TENCENT_PARAM_CHARS : PGW_SMS_TEXT_CHARS_MAX;
}

size_t pgw_sms_param_chars_max(const pgw_sms_client *c)
{
    return param_limit(c);
}

int pgw_sms_check(const pgw_sms_client *c, const pgw_sms_message *msg, pgw_err *err)
{
    if (msg == NULL || msg->phone == NULL || msg->template_id == NULL)
        return pgw_err_set(err, PGW_EINVAL, "an SMS needs a phone and a template");
    if (!pgw_sms_phone_ok(msg->phone))
        return pgw_err_set(err, PGW_EINVAL,
                           "an SMS goes to a mainland mobile in E.164 (+86 and 11 digits)");
    size_t t = strnlen(msg->template_id, TEMPLATE_ID_MAX + 1);
    if (t == 0 || t > TEMPLATE_ID_MAX ||
        strspn(msg->template_id,
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != t)
        return pgw_err_set(err, PGW_EINVAL, "SMS template id must be 1..%d of [A-Za-z0-9_-]",
                           TEMPLATE_ID_MAX);
    if (msg->n_params > PGW_SMS_PARAMS_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "an SMS has at most %d parameters",
                           PGW_SMS_PARAMS_MAX);
    if (msg->n_params > 0 && msg->params == NULL)
        return pgw_err_set(err, PGW_EINVAL, "SMS parameters missing");
    /* The rendered text is at least the signature, its 【】 and the
     * variables; the template's own words come on top. */
    size_t total = c->sign_chars + 2, limit = param_limit(c);
    for (size_t i = 0; i < msg->n_params; i++) {
        const pgw_sms_param *p = &msg->params[i];
        size_t chars;
        int rc = param_chars(p, i, limit, &chars, err);
        if (rc != PGW_OK)
            return rc;
        total += chars;
        if (c->provider != ALIYUN)
            continue;
        /* Alibaba fills variables by name: each needs one, once. */
        if (!name_ok(p->name))
            return pgw_err_set(err, PGW_EINVAL,
                               "SMS parameter %zu: Alibaba needs a name of 1..%d [A-Za-z0-9_]",
                               i + 1, PGW_SMS_PARAM_NAME_MAX);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(msg->params[j].name, p->name) == 0)
                return pgw_err_set(err, PGW_EINVAL, "SMS parameter %s given twice", p->name);
        }
    }
    if (total > PGW_SMS_TEXT_CHARS_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE,
                           "SMS: signature and parameters make %zu characters, at most %d", total,
                           PGW_SMS_TEXT_CHARS_MAX);
    if (msg->out_id != NULL && msg->out_id[0] != '\0') {
        size_t cap = c->provider == TENCENT ? PGW_SMS_SESSION_MAX : PGW_SMS_OUT_ID_MAX;
        size_t n = strnlen(msg->out_id, cap + 1);
        if (n > cap)
            return pgw_err_set(err, PGW_ETOOLARGE, "SMS out_id: at most %zu characters", cap);
        for (size_t i = 0; i < n; i++) {
            if (msg->out_id[i] <= 0x20 || msg->out_id[i] > 0x7E)
                return pgw_err_set(err, PGW_EINVAL,
                                   "SMS out_id must be printable ASCII without spaces");
        }
    }
    return PGW_OK;
}

/* ---- the client ----------------------------------------------------------- */

/* Splits api_base into what is called (no trailing '/') and the host TC3
 * signs (no port). Only "/" may follow the authority: Tencent signs the
 * path "/" and Alibaba's string to sign names "/" as well. */
static int parse_base(const char *base, pgw_sms_client *c, pgw_err *err)
{
    size_t skip = strncmp(base, "https://", 8) == 0 ? 8 : strncmp(base, "http://", 7) == 0 ? 7 : 0;
    size_t len = strnlen(base, PGW_URL_MAX + 1);
    if (skip == 0 || len > PGW_URL_MAX)
        return pgw_err_set(err, PGW_EINVAL, "SMS api_base must be http(s)://host[:port]");
    const char *auth = base + skip;
    size_t a = strcspn(auth, "/?#@");
    if (a == 0 || (auth[a] != '\0' && strcmp(auth + a, "/") != 0))
        return pgw_err_set(err, PGW_EINVAL,
                           "SMS api_base must be http(s)://host[:port] with no "
                           "path, query or user");
    snprintf(c->api_base, sizeof(c->api_base), "%.*s", (int)(skip + a), base);
    size_t h = auth[0] == '[' ? strcspn(auth, "]") + 1 : strcspn(auth, ":");
    if (h > a)
        h = a;
    if (h == 0 || h > HOST_MAX)
        return pgw_err_set(err, PGW_EINVAL, "SMS api_base has no usable host");
    for (size_t i = 0; i < h; i++) {
        char ch = auth[i];
        c->host[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    c->host[h] = '\0';
    return PGW_OK;
}

static int key_ok(const char *s, const char *what, pgw_err *err)
{
    size_t n = s ? strnlen(s, PGW_SMS_KEY_MAX + 1) : 0;
    if (n == 0 || n > PGW_SMS_KEY_MAX)
        return pgw_err_set(err, PGW_EINVAL, "SMS %s must be 1..%d bytes", what, PGW_SMS_KEY_MAX);
    for (size_t i = 0; i < n; i++) {
        if (s[i] <= 0x20 || s[i] > 0x7E)
            return pgw_err_set(err, PGW_EINVAL, "SMS %s must be printable ASCII", what);
    }
    return PGW_OK;
}

int pgw_sms_client_new(const pgw_sms_channel *ch, const char *key_id, const char *key_secret,
                       const pgw_sms_options *options, pgw_sms_client **out, pgw_err *err)
{
    *out = NULL;
    provider p;
    if (strcmp(ch->provider, "tencent") == 0)
        p = TENCENT;
    else if (strcmp(ch->provider, "aliyun") == 0)
        p = ALIYUN;
    else
        return pgw_err_set(err, PGW_EINVAL, "SMS provider %.16s: tencent or aliyun", ch->provider);
    pgw_sms_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the SMS client");
    c->provider = p;
    int rc = parse_base(ch->api_base, c, err);
    if (rc == PGW_OK)
        rc = key_ok(key_id, "key id", err);
    if (rc == PGW_OK)
        rc = key_ok(key_secret, "key secret", err);
    /* The key id goes into Tencent's Authorization header, split on these. */
    if (rc == PGW_OK && strpbrk(key_id, ",/=") != NULL)
        rc = pgw_err_set(err, PGW_EINVAL, "SMS key id must not contain ',', '/' or '='");
    if (rc == PGW_OK) {
        c->sign_chars = sign_chars(ch->sign_name);
        if (c->sign_chars < PGW_SMS_SIGN_CHARS_MIN || c->sign_chars > PGW_SMS_SIGN_CHARS_MAX)
            rc = pgw_err_set(err, PGW_EINVAL,
                             "SMS sign_name must be %d..%d letters, digits or Chinese characters",
                             PGW_SMS_SIGN_CHARS_MIN, PGW_SMS_SIGN_CHARS_MAX);
    }
    size_t app = strnlen(ch->sdk_app_id, sizeof(ch->sdk_app_id));
    if (rc == PGW_OK && p == TENCENT && (app == 0 || strspn(ch->sdk_app_id, "0123456789") != app))
        rc = pgw_err_set(err, PGW_EINVAL, "Tencent SMS needs a numeric sdk_app_id");
    const char *region = ch->region[0] ? ch->region : p == TENCENT ? TENCENT_REGION : ALIYUN_REGION;
    if (rc == PGW_OK && strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(region))
        rc = pgw_err_set(err, PGW_EINVAL, "SMS region must be [a-z0-9-]");
    if (rc != PGW_OK) {
        pgw_sms_client_free(c);
        return rc;
    }
    snprintf(c->sign_name, sizeof(c->sign_name), "%s", ch->sign_name);
    snprintf(c->sdk_app_id, sizeof(c->sdk_app_id), "%s", ch->sdk_app_id);
    snprintf(c->region, sizeof(c->region), "%s", region);
    snprintf(c->key_id, sizeof(c->key_id), "%s", key_id);
    snprintf(c->key_secret, sizeof(c->key_secret), "%s", key_secret);
    if (options != NULL)
        c->opt = *options;
    if (c->opt.timeout_ms <= 0)
        c->opt.timeout_ms = PGW_HTTP_TIMEOUT_MS;
    if (c->opt.param_chars_max > PGW_SMS_TEXT_CHARS_MAX)
        c->opt.param_chars_max = PGW_SMS_TEXT_CHARS_MAX;
    *out = c;
    return PGW_OK;
}

void pgw_sms_client_free(pgw_sms_client *c)
{
    if (c == NULL)
        return;
    /* The secret should not outlive the client in freed memory. */
    memset(c, 0, sizeof(*c));
    free(c);
}

static int64_t now_of(const pgw_sms_client *c)
{
    return c->opt.clock != NULL ? c->opt.clock(c->opt.ctx) : (int64_t)time(NULL);
}

/* What provider text must not carry into our results and messages. */
typedef struct scrub {
    const char *secret;
    const char *phone; /* E.164 */
} scrub;

/* Bytes of spaces or hyphens a copy of the number may hold between two
 * digits: numbers are written in groups ("138 0013 8000", "138-0013-8000",
 * "138 - 0013 - 8000"). Bounded, so that a copy is at most 11 + 10 * 3 =
 * 41 bytes, inside what copy_text reads past its cut. */
#define NUMBER_GAP_MAX 3

/* Whether a copy of the 11 digits `national` begins at s, grouped or not;
 * digit_at[d] gets the offset of its d-th digit. */
static bool number_at(const char *s, const char *national, size_t digit_at[11])
{
    size_t at = 0;
    for (size_t d = 0; d < 11; d++) {
        for (size_t gap = 0; d > 0 && gap < NUMBER_GAP_MAX && (s[at] == ' ' || s[at] == '-'); gap++)
            at++;
        if (s[at] != national[d])
            return false;
        digit_at[d] = at++;
    }
    return true;
}

/* The longest needle copy_text looks for: the secret percent-encoded,
 * every byte of it %XY. */
#define NEEDLE_MAX (3 * PGW_SMS_KEY_MAX)
_Static_assert(11 + 10 * NUMBER_GAP_MAX <= NEEDLE_MAX, "a number fits what copy_text reads");

/* Stars over every copy of `needle` found in text, at the same place in out. */
static void blank(const char *text, char *out, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *hit = strstr(text, needle); hit != NULL; hit = strstr(hit + 1, needle))
        memset(out + (hit - text), '*', n);
}

/* Copies provider text into dst with the secret and the number blanked,
 * should they appear there (Alibaba's SignatureDoesNotMatch message quotes
 * its string to sign, which holds the number), then cut to cap: blanked
 * first, so one across the cut leaves none of itself; control characters
 * become spaces. Only what can reach into dst is read: cap, and the
 * longest needle (the encoded secret) past it. */
static void copy_text(char *dst, size_t cap, const char *src, const scrub *sc)
{
    char text[PGW_SMS_MESSAGE_MAX + NEEDLE_MAX + 1];
    PGW_ASSERT(cap >= 1 && cap <= PGW_SMS_MESSAGE_MAX + 1);
    size_t len = src != NULL ? strnlen(src, cap - 1 + NEEDLE_MAX) : 0;
    memcpy(text, src != NULL ? src : "", len);
    text[len] = '\0';
    /* Every copy is found in the text as it came and masked in `out`: a
     * copy sharing bytes with one masked before (a number that begins as it
     * ends, whose masked form keeps its last four digits) is found too. */
    char out[sizeof(text)];
    memcpy(out, text, len + 1);
    /* A number keeps its first three and last four digits and whatever
     * separates them, as the masked form (138****8000) does; only stars
     * are written, so that no copy's digits land on bytes another copy or
     * the secret blanked. */
    const char *national = sc->phone + 3;
    size_t digit_at[11];
    for (size_t i = 0; i < len; i++) {
        if (number_at(text + i, national, digit_at)) {
            for (size_t d = 3; d < 7; d++)
                out[i + digit_at[d]] = '*';
        }
    }
    PGW_ASSERT(strlen(sc->secret) <= PGW_SMS_KEY_MAX);
    if (strlen(sc->secret) >= SCRUB_MIN_SECRET) {
        /* As it is, and as the providers percent-encode it ('/' as %2F):
         * the form a quoted request would carry it in. */
        char encoded[NEEDLE_MAX + 1];
        blank(text, out, sc->secret);
        if (pgw_rpc_percent_encode(sc->secret, encoded, sizeof(encoded), NULL, NULL) == PGW_OK)
            blank(text, out, encoded);
        OPENSSL_cleanse(encoded, sizeof(encoded));
    }
    len = strnlen(out, cap - 1);
    /* A line break would start a line of the log the gateway never wrote. */
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7F)
            out[i] = ' ';
    }
    memcpy(dst, out, len);
    dst[pgw_utf8_prefix(out, len)] = '\0'; /* the cut may split a character: out ends */
}

/* The classification of an answer, and the message of a failure.
 * `unkept` (NULL when the body was read): why the body of an answer came
 * unread (too large, no memory); it is classified by its status, as one
 * without a code we read, and the message says why instead. */
static int conclude(const pgw_sms_client *c, const pgw_sms_message *msg, const char *unkept,
                    pgw_sms_result *out, pgw_err *err)
{
    const char *name = PROVIDER_NAMES[c->provider];
    long status = out->http_status;
    int rc;
    const char *why = out->code[0] == '\0' ? "no provider code" : "";
    const code_rule *rule = rule_of(name, out->code);
    /* Refused: the provider said it took nothing (a code it names, a
     * throttle, a wrong endpoint); not a 5xx, an answer we cannot read, its
     * own fault or a code we do not know, after which it may have sent. */
    out->refused =
        status < 500 && (status == 429 || (out->code[0] == '\0' && status != 200) ||
                         (rule != NULL && rule->outcome != PGW_SMS_SENT && !rule->server_fault));
    /* 408: the request was not whole when the other end closed; taken
     * nothing, as a throttle, and a blip, not a wrong endpoint. */
    if (status >= 500 || status == 429 || status == 408) {
        out->outcome = PGW_SMS_RETRY;
        rc = PGW_EUNAVAILABLE;
    } else if (out->code[0] != '\0') {
        out->outcome = pgw_sms_classify(name, out->code, &rc);
    } else if (status == 200) {
        /* The provider handled it, and most likely sent it: not sent
         * again (pgw_sms_result.unread). */
        out->outcome = PGW_SMS_GIVE_UP;
        out->unread = true;
        rc = PGW_EIO;
        why = "an answer we do not understand";
    } else {
        out->outcome = PGW_SMS_GIVE_UP;
        rc = PGW_EIO;
    }
    if (unkept != NULL)
        why = unkept;
    if (rc == PGW_OK)
        return PGW_OK;
    char masked[16];
    mask_phone(msg->phone, masked);
    return pgw_err_set(err, rc, "SMS %s to %s: %s%s%s%s (HTTP %ld, %s)", name, masked, why,
                       out->code, out->message[0] ? ": " : "", out->message, status,
                       pgw_sms_outcome_name(out->outcome));
}

/* Makes the call; on PGW_OK *answer holds the provider's answer. */
static int call(const pgw_sms_client *c, const pgw_http_call *hc, const pgw_sms_message *msg,
                pgw_http_answer *answer, pgw_sms_result *out, pgw_err *err)
{
    int rc = pgw_http_do(hc, answer, err);
    /* A request that never left (no connection) sent nothing: it uses no
     * slot of the number's frequency limit, and its code is forgotten. */
    out->attempted = answer->request_sent;
    if (rc == PGW_OK)
        return PGW_OK;
    /* An answer whose body we did not keep (too large, no memory) still
     * has its status: one rule with an answer of that status without a
     * code we read (conclude). A 200 came after the provider handled the
     * request (unread, not sent again); a 429 or 5xx, a gateway's page in
     * front of it maybe, did not say the SMS went: a retry. */
    bool unkept = rc == PGW_ETOOLARGE || rc == PGW_ENOMEM;
    if (unkept && answer->request_sent && answer->status != 0) {
        out->http_status = answer->status;
        char why[64];
        snprintf(why, sizeof(why),
                 rc == PGW_ETOOLARGE ? "an answer over %d bytes"
                                     : "no memory for an answer (%d bytes at most)",
                 PGW_HTTP_ANSWER_MAX);
        return conclude(c, msg, why, out, err);
    }
    /* No answer: whether it went out is unknown, try again. An answer
     * that came too large to keep (or with no memory for it) with no
     * status came from an end that handled the request: as a 200 not
     * understood (pgw_sms_result.unread), not sent again. */
    out->unread = answer->request_sent && (rc == PGW_ETOOLARGE || rc == PGW_ENOMEM);
    out->outcome = out->unread ? PGW_SMS_GIVE_UP : PGW_SMS_RETRY;
    int code = out->unread ? PGW_EIO : PGW_EUNAVAILABLE;
    char masked[16];
    mask_phone(msg->phone, masked);
    if (err != NULL)
        pgw_err_prefix(err, "SMS %s to %s: ", PROVIDER_NAMES[c->provider], masked);
    return err != NULL ? pgw_err_recode(err, code) : code;
}

static json_t *answer_json(const pgw_http_answer *a)
{
    json_t *doc = json_loadb(a->body, a->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static void copy_field(const json_t *obj, const char *key, char *dst, size_t cap, const scrub *sc)
{
    copy_text(dst, cap, json_string_value(json_object_get(obj, key)), sc);
}

/* An id of the provider's (RequestId, SerialNo, BizId) into dst (cap:
 * PGW_SMS_ID_MAX + 1), only whole: one cut, or with bytes that are not
 * printable ASCII, would be kept and shown as the provider's and match
 * nothing in its records, its console or its delivery reports. "" then. */
static void copy_id(const json_t *obj, const char *key, char *dst, size_t cap, const scrub *sc)
{
    const char *id = json_string_value(json_object_get(obj, key));
    size_t n = id != NULL ? strnlen(id, cap) : 0;
    bool printable = true;
    for (size_t i = 0; i < n; i++)
        printable &= id[i] > 0x20 && id[i] < 0x7F;
    copy_text(dst, cap, n < cap && printable ? id : NULL, sc);
}

/* ---- Tencent -------------------------------------------------------------- */

static char *tencent_body(const pgw_sms_client *c, const pgw_sms_message *msg)
{
    json_t *body = json_object(), *params = json_array();
    bool ok = body != NULL && params != NULL &&
              json_object_set_new(body, "PhoneNumberSet", json_pack("[s]", msg->phone)) == 0 &&
              json_object_set_new(body, "SmsSdkAppId", json_string(c->sdk_app_id)) == 0 &&
              json_object_set_new(body, "SignName", json_string(c->sign_name)) == 0 &&
              json_object_set_new(body, "TemplateId", json_string(msg->template_id)) == 0;
    for (size_t i = 0; ok && i < msg->n_params; i++)
        ok = json_array_append_new(params, json_string(msg->params[i].value)) == 0;
    /* No variables: the field is left out (research 1.3). */
    if (ok && msg->n_params > 0) {
        ok = json_object_set(body, "TemplateParamSet", params) == 0;
    }
    if (ok && msg->out_id != NULL && msg->out_id[0] != '\0')
        ok = json_object_set_new(body, "SessionContext", json_string(msg->out_id)) == 0;
    /* Compact, raw UTF-8 (no \u escapes): the bytes hashed are the bytes sent. */
    char *text = ok ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(params);
    json_decref(body);
    return text;
}

/* The SendStatus of our number in SendStatusSet, or NULL when there is
 * none, or more than one: we sent one number, and of two statuses for it
 * neither can be believed (the first a refusal, the second "Ok": read by
 * the first, the caller would send again an SMS the provider says went). */
static const json_t *tencent_status(const json_t *resp, const char *phone)
{
    const json_t *set = json_object_get(resp, "SendStatusSet");
    const json_t *ours = NULL;
    size_t i;
    const json_t *s;
    json_array_foreach(set, i, s)
    {
        const char *p = json_string_value(json_object_get(s, "PhoneNumber"));
        if (p == NULL || strcmp(p, phone) != 0)
            continue;
        if (ours != NULL)
            return NULL;
        ours = s;
    }
    return ours;
}

static void tencent_read(const pgw_sms_client *c, const pgw_sms_message *msg,
                         const pgw_http_answer *a, pgw_sms_result *out)
{
    const scrub sc = {c->key_secret, msg->phone};
    json_t *doc = answer_json(a);
    const json_t *resp = json_object_get(doc, "Response");
    if (json_is_object(resp)) {
        copy_id(resp, "RequestId", out->request_id, sizeof(out->request_id), &sc);
        /* The request failed as a whole ... */
        const json_t *e = json_object_get(resp, "Error");
        const json_t *s = json_is_object(e) ? e : tencent_status(resp, msg->phone);
        /* ... or each number has its own status, even in a 200 answer. */
        if (json_is_object(s)) {
            copy_field(s, "Code", out->code, sizeof(out->code), &sc);
            copy_field(s, "Message", out->message, sizeof(out->message), &sc);
        }
        if (json_is_object(s) && s != e) {
            copy_id(s, "SerialNo", out->message_id, sizeof(out->message_id), &sc);
            /* Billed parts: at most one per character of the longest SMS
             * (research 4); anything else is not a fee we can report. */
            const json_t *fee = json_object_get(s, "Fee");
            json_int_t parts = json_is_integer(fee) ? json_integer_value(fee) : 0;
            out->fee = parts >= 0 && parts <= PGW_SMS_TEXT_CHARS_MAX ? (int64_t)parts : 0;
        }
    }
    json_decref(doc);
}

static int send_tencent(const pgw_sms_client *c, const pgw_sms_message *msg, pgw_sms_result *out,
                        pgw_err *err)
{
    char *body = tencent_body(c, msg);
    if (body == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for an SMS request");
    int64_t now = now_of(c);
    const pgw_tc3_header signed_headers[] = {
        {"Content-Type", "application/json"},
        {"Host", c->host},
        {"X-TC-Action", "SendSms"}, /* signed too, as the current documentation does */
    };
    pgw_tc3_input in = {.secret_id = c->key_id,
                        .secret_key = c->key_secret,
                        .service = TENCENT_SERVICE,
                        .timestamp = now,
                        .headers = signed_headers,
                        .n_headers = 3,
                        .payload = body,
                        .payload_len = strlen(body)};
    pgw_tc3_signature *sig = malloc(sizeof(*sig));
    int rc = sig ? pgw_tc3_sign(&in, sig, err)
                 : pgw_err_set(err, PGW_ENOMEM, "out of memory for an SMS signature");
    if (rc != PGW_OK) {
        free(sig);
        free(body);
        return rc;
    }
    char url[PGW_URL_MAX + 2], ts[48], region[PGW_ID_MAX + 16],
        auth[PGW_TC3_AUTHORIZATION_MAX + 32];
    snprintf(url, sizeof(url), "%s/", c->api_base);
    snprintf(ts, sizeof(ts), "X-TC-Timestamp: %lld", (long long)now);
    snprintf(region, sizeof(region), "X-TC-Region: %s", c->region);
    snprintf(auth, sizeof(auth), "Authorization: %s", sig->authorization);
    free(sig);
    pgw_http_call hc = {.method = "POST",
                        .url = url,
                        .headers = {"Content-Type: application/json", "X-TC-Action: SendSms",
                                    "X-TC-Version: " TENCENT_VERSION, ts, region, auth,
                                    "Expect:" /* no 100-continue round trip */},
                        .body = body,
                        .body_len = strlen(body),
                        .timeout_ms = c->opt.timeout_ms};
    pgw_http_answer answer;
    rc = call(c, &hc, msg, &answer, out, err);
    free(body);
    if (rc != PGW_OK)
        return rc;
    out->http_status = answer.status;
    tencent_read(c, msg, &answer, out);
    pgw_http_answer_free(&answer);
    return conclude(c, msg, NULL, out, err);
}

/* ---- Alibaba -------------------------------------------------------------- */

static int aliyun_nonce(const pgw_sms_client *c, char out[NONCE_MAX + 1], pgw_err *err)
{
    if (c->opt.nonce != NULL) {
        out[0] = '\0';
        c->opt.nonce(c->opt.ctx, out);
        out[NONCE_MAX] = '\0';
        size_t n = strlen(out);
        if (n == 0 ||
            strspn(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") != n)
            return pgw_err_set(err, PGW_EINVAL, "SMS nonce must be 1..64 of [A-Za-z0-9-]");
        return PGW_OK;
    }
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return pgw_err_set(err, PGW_EIO, "no random bytes for an SMS nonce");
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = digits[raw[i] >> 4];
        out[2 * i + 1] = digits[raw[i] & 0x0F];
    }
    out[2 * sizeof(raw)] = '\0';
    return PGW_OK;
}

/* TemplateParam: a JSON string of an object of strings (research 2.1). */
static char *aliyun_template_param(const pgw_sms_message *msg)
{
    json_t *obj = json_object();
    bool ok = obj != NULL;
    for (size_t i = 0; ok && i < msg->n_params; i++)
        ok = json_object_set_new(obj, msg->params[i].name, json_string(msg->params[i].value)) == 0;
    char *text = ok ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(obj);
    return text;
}

/* Signs the request; *request (malloc'd) is the query or form body with
 * its Signature. */
static int aliyun_request(const pgw_sms_client *c, const pgw_sms_message *msg, const char *method,
                          char **request, pgw_err *err)
{
    *request = NULL;
    char nonce[NONCE_MAX + 1], stamp[32];
    int rc = aliyun_nonce(c, nonce, err);
    if (rc != PGW_OK)
        return rc;
    time_t t = (time_t)now_of(c);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return pgw_err_set(err, PGW_EIO, "SMS: the clock gives no date");
    char *tp = msg->n_params > 0 ? aliyun_template_param(msg) : NULL;
    if (msg->n_params > 0 && tp == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for an SMS request");
    pgw_rpc_param p[16];
    size_t n = 0;
    p[n++] = (pgw_rpc_param){"AccessKeyId", c->key_id};
    p[n++] = (pgw_rpc_param){"Action", "SendSms"};
    p[n++] = (pgw_rpc_param){"Format", "JSON"}; /* XML when left out */
    if (msg->out_id != NULL && msg->out_id[0] != '\0')
        p[n++] = (pgw_rpc_param){"OutId", msg->out_id};
    p[n++] = (pgw_rpc_param){"PhoneNumbers", msg->phone + 3}; /* the 11 national digits */
    p[n++] = (pgw_rpc_param){"RegionId", c->region};
    p[n++] = (pgw_rpc_param){"SignName", c->sign_name};
    p[n++] = (pgw_rpc_param){"SignatureMethod", "HMAC-SHA1"};
    p[n++] = (pgw_rpc_param){"SignatureNonce", nonce};
    p[n++] = (pgw_rpc_param){"SignatureVersion", "1.0"};
    p[n++] = (pgw_rpc_param){"TemplateCode", msg->template_id};
    if (tp != NULL)
        p[n++] = (pgw_rpc_param){"TemplateParam", tp};
    p[n++] = (pgw_rpc_param){"Timestamp", stamp};
    p[n++] = (pgw_rpc_param){"Version", ALIYUN_VERSION};
    PGW_ASSERT(n <= sizeof(p) / sizeof(p[0]));

    char *query = malloc(RPC_BODY_MAX + 1);
    char sig[PGW_RPC_SIGNATURE_LEN + 1], sig_enc[3 * PGW_RPC_SIGNATURE_LEN + 1];
    rc = query ? pgw_rpc_sign(method, p, n, c->key_secret, query, PGW_RPC_QUERY_MAX + 1, sig, err)
               : pgw_err_set(err, PGW_ENOMEM, "out of memory for an SMS request");
    free(tp);
    if (rc == PGW_OK)
        rc = pgw_rpc_percent_encode(sig, sig_enc, sizeof(sig_enc), NULL, err);
    if (rc != PGW_OK) {
        free(query);
        return rc;
    }
    /* The signature goes last, itself encoded (research 2.5 step 6). */
    size_t at = strlen(query);
    snprintf(query + at, RPC_BODY_MAX + 1 - at, "&Signature=%s", sig_enc);
    *request = query;
    return PGW_OK;
}

static void aliyun_read(const pgw_sms_client *c, const pgw_sms_message *msg,
                        const pgw_http_answer *a, pgw_sms_result *out)
{
    const scrub sc = {c->key_secret, msg->phone};
    json_t *doc = answer_json(a);
    if (doc != NULL) {
        copy_field(doc, "Code", out->code, sizeof(out->code), &sc);
        copy_field(doc, "Message", out->message, sizeof(out->message), &sc);
        copy_id(doc, "RequestId", out->request_id, sizeof(out->request_id), &sc);
        if (strcmp(out->code, "OK") == 0)
            copy_id(doc, "BizId", out->message_id, sizeof(out->message_id), &sc);
    }
    json_decref(doc);
}

static int send_aliyun(const pgw_sms_client *c, const pgw_sms_message *msg, pgw_sms_result *out,
                       pgw_err *err)
{
    const char *method = c->opt.aliyun_get ? "GET" : "POST";
    char *request = NULL;
    int rc = aliyun_request(c, msg, method, &request, err);
    if (rc != PGW_OK)
        return rc;
    char *url = malloc(URL_MAX + 1);
    if (url == NULL) {
        free(request);
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for an SMS request");
    }
    pgw_http_call hc = {.method = method, .url = url, .timeout_ms = c->opt.timeout_ms};
    if (c->opt.aliyun_get) {
        snprintf(url, URL_MAX + 1, "%s/?%s", c->api_base, request);
        hc.headers[0] = "Expect:";
    } else {
        snprintf(url, URL_MAX + 1, "%s/", c->api_base);
        hc.headers[0] = "Content-Type: application/x-www-form-urlencoded";
        hc.headers[1] = "Expect:";
        hc.body = request;
        hc.body_len = strlen(request);
    }
    pgw_http_answer answer;
    rc = call(c, &hc, msg, &answer, out, err);
    free(url);
    free(request);
    if (rc != PGW_OK)
        return rc;
    out->http_status = answer.status;
    aliyun_read(c, msg, &answer, out);
    pgw_http_answer_free(&answer);
    return conclude(c, msg, NULL, out, err);
}

int pgw_sms_send(const pgw_sms_client *c, const pgw_sms_message *msg, pgw_sms_result *out,
                 pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    out->outcome = PGW_SMS_GIVE_UP; /* until something better is known */
    int rc = pgw_sms_check(c, msg, err);
    if (rc != PGW_OK)
        return rc;
    rc = c->provider == TENCENT ? send_tencent(c, msg, out, err) : send_aliyun(c, msg, out, err);
    /* A failure before the request left (memory, randomness) may pass. */
    if (rc != PGW_OK && !out->attempted && (rc == PGW_ENOMEM || rc == PGW_EIO))
        out->outcome = PGW_SMS_RETRY;
    return rc;
}

/* ---- the limiter ---------------------------------------------------------- */

#define HOUR_S 3600
#define DAY_S  86400

typedef struct lim_entry {
    char phone[16]; /* E.164; "" = free */
    int64_t last;   /* the newest send (eviction order) */
    uint32_t n;     /* sends remembered, at most keep */
    uint32_t head;  /* ring index of the newest */
} lim_entry;

struct pgw_sms_limiter {
    pgw_sms_limits limits;
    uint32_t keep; /* timestamps per number: enough for the larger count limit */
    pthread_mutex_t lock;
    lim_entry *entries;
    int64_t *times; /* capacity * keep, entry i's ring at i * keep */
    pgw_sms_limiter_stats stats;
};

int pgw_sms_limits_default(const char *provider_name, pgw_sms_kind kind, pgw_sms_limits *out,
                           pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    out->capacity = 4096;
    if (kind != PGW_SMS_KIND_CODE && kind != PGW_SMS_KIND_NOTICE)
        return pgw_err_set(err, PGW_EINVAL, "SMS kind: a code or a notice");
    if (provider_name != NULL && strcmp(provider_name, "tencent") == 0) {
        /* One set for every kind: the research names no other. */
        out->min_gap_s = 30;      /* same number, same content: all revisions */
        out->per_day = 2;         /* current zh and en pages; older ones said 10 */
        out->calendar_day = true; /* "per calendar day" (research 1.6) */
        return PGW_OK;
    }
    if (provider_name != NULL && strcmp(provider_name, "aliyun") == 0 &&
        kind == PGW_SMS_KIND_NOTICE) {
        /* 50 a day per signature, template and number, and no shorter
         * window: counted per number, whatever the template, so never
         * looser than Alibaba. */
        out->per_day = 50;
        return PGW_OK;
    }
    if (provider_name != NULL && strcmp(provider_name, "aliyun") == 0) {
        out->min_gap_s = 60;
        out->per_hour = 5;
        out->per_day = 10;
        return PGW_OK;
    }
    return pgw_err_set(err, PGW_EINVAL, "SMS provider: tencent or aliyun");
}

int pgw_sms_limiter_new(const pgw_sms_limits *limits, pgw_sms_limiter **out, pgw_err *err)
{
    *out = NULL;
    if (limits->capacity == 0 || limits->capacity > PGW_SMS_LIMITER_CAPACITY_MAX ||
        limits->min_gap_s < 0 || limits->min_gap_s > DAY_S ||
        limits->per_hour > PGW_SMS_LIMIT_COUNT_MAX || limits->per_day > PGW_SMS_LIMIT_COUNT_MAX)
        return pgw_err_set(err, PGW_EINVAL, "SMS limits: capacity 1..%d, gap 0..%d s, counts 0..%d",
                           PGW_SMS_LIMITER_CAPACITY_MAX, DAY_S, PGW_SMS_LIMIT_COUNT_MAX);
    pgw_sms_limiter *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the SMS limiter");
    l->limits = *limits;
    l->keep = limits->per_hour > limits->per_day ? limits->per_hour : limits->per_day;
    if (l->keep == 0)
        l->keep = 1; /* the gap needs the newest */
    l->entries = calloc(limits->capacity, sizeof(*l->entries));
    l->times = calloc(limits->capacity * l->keep, sizeof(*l->times));
    if (l->entries == NULL || l->times == NULL) {
        free(l->entries);
        free(l->times);
        free(l);
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the SMS limiter");
    }
    pthread_mutex_init(&l->lock, NULL);
    *out = l;
    return PGW_OK;
}

void pgw_sms_limiter_free(pgw_sms_limiter *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l->entries);
    free(l->times);
    free(l);
}

/* The providers' calendar day is China's: UTC+8 all year, no DST. */
static const pgw_tz PROVIDER_TZ = {.name = "Asia/Shanghai", .offset_s = 8 * 3600};

/* How long past the provider's midnight a calendar day's sends still
 * count: our clock may run ahead of the provider's, and a message it then
 * refused would cost a slot of the new day and an hour's deferral. */
#define MIDNIGHT_MARGIN_S 60

/* When a send at t stops counting in a window of w seconds: the window
 * rolls, except a calendar day, which ends at the next 00:00 UTC+8 (and
 * the margin). */
static int64_t window_end(const pgw_sms_limiter *l, int64_t t, int64_t w)
{
    if (w == DAY_S && l->limits.calendar_day)
        return t - pgw_local_seconds_of_day(t, &PROVIDER_TZ) + DAY_S + MIDNIGHT_MARGIN_S;
    return t + w;
}

/* The k-th newest send of entry i (k = 0: the newest); k < n. */
static int64_t nth_newest(const pgw_sms_limiter *l, size_t i, uint32_t k)
{
    const lim_entry *e = &l->entries[i];
    uint32_t at = (e->head + l->keep - k) % l->keep;
    return l->times[i * l->keep + at];
}

/* When entry i may get its next message: <= now means now. A send at t
 * counts in a window until window_end(). */
static int64_t next_allowed(const pgw_sms_limiter *l, size_t i, int64_t now)
{
    const lim_entry *e = &l->entries[i];
    int64_t at = now;
    if (e->n == 0)
        return at;
    int64_t newest = nth_newest(l, i, 0);
    if (l->limits.min_gap_s > 0 && newest + l->limits.min_gap_s > at)
        at = newest + l->limits.min_gap_s;
    const struct {
        uint32_t count;
        int64_t window;
    } w[] = {{l->limits.per_hour, HOUR_S}, {l->limits.per_day, DAY_S}};
    for (size_t k = 0; k < 2; k++) {
        /* Over the limit while the count-th newest is inside the window:
         * the limit opens when it leaves. */
        if (w[k].count == 0 || e->n < w[k].count)
            continue;
        int64_t end = window_end(l, nth_newest(l, i, w[k].count - 1), w[k].window);
        if (end > at)
            at = end;
    }
    return at;
}

/* Whether every window of entry i has passed: it may be forgotten. */
static bool idle(const pgw_sms_limiter *l, size_t i, int64_t now)
{
    const lim_entry *e = &l->entries[i];
    int64_t until = e->last + l->limits.min_gap_s;
    if (l->limits.per_hour > 0 && until < e->last + HOUR_S)
        until = e->last + HOUR_S;
    /* A calendar day may end before the gap or the hour does. */
    if (l->limits.per_day > 0 && until < window_end(l, e->last, DAY_S))
        until = window_end(l, e->last, DAY_S);
    return e->n == 0 || until <= now;
}

/* The entry of phone, or where it would go (*found false); with `claim`,
 * a slot is always returned, evicting if it must. SIZE_MAX: not found. */
static size_t find(pgw_sms_limiter *l, const char *phone, int64_t now, bool claim, bool *found)
{
    size_t free_slot = SIZE_MAX, idle_slot = SIZE_MAX, oldest = SIZE_MAX;
    *found = false;
    /* A linear scan: at most 65536 short strings per SMS, under the lock. */
    for (size_t i = 0; i < l->limits.capacity; i++) {
        lim_entry *e = &l->entries[i];
        if (e->phone[0] == '\0') {
            if (free_slot == SIZE_MAX)
                free_slot = i;
            continue;
        }
        if (strcmp(e->phone, phone) == 0) {
            *found = true;
            return i;
        }
        if (idle_slot == SIZE_MAX && idle(l, i, now))
            idle_slot = i;
        if (oldest == SIZE_MAX || e->last < l->entries[oldest].last)
            oldest = i;
    }
    if (!claim)
        return SIZE_MAX;
    size_t i = free_slot != SIZE_MAX ? free_slot : idle_slot != SIZE_MAX ? idle_slot : oldest;
    if (free_slot == SIZE_MAX && idle_slot == SIZE_MAX)
        l->stats.evicted++;
    if (free_slot == SIZE_MAX)
        l->stats.tracked--;
    memset(&l->entries[i], 0, sizeof(l->entries[i]));
    return i;
}

static int limiter_ask(pgw_sms_limiter *l, const char *phone, int64_t now, bool take,
                       int64_t *retry_at, pgw_err *err)
{
    if (retry_at != NULL)
        *retry_at = now;
    if (!pgw_sms_phone_ok(phone))
        return pgw_err_set(err, PGW_EINVAL, "SMS limiter: not a mainland mobile in E.164");
    pthread_mutex_lock(&l->lock);
    bool found;
    size_t i = find(l, phone, now, false, &found);
    int64_t at = found ? next_allowed(l, i, now) : now;
    bool allowed = at <= now;
    if (allowed && take) {
        if (!found) {
            i = find(l, phone, now, true, &found);
            snprintf(l->entries[i].phone, sizeof(l->entries[i].phone), "%s", phone);
            l->stats.tracked++;
        }
        lim_entry *e = &l->entries[i];
        e->head = e->n == 0 ? 0 : (e->head + 1) % l->keep;
        l->times[i * l->keep + e->head] = now;
        if (e->n < l->keep)
            e->n++;
        e->last = now;
        l->stats.taken++;
    } else if (!allowed) {
        l->stats.refused++;
    }
    pthread_mutex_unlock(&l->lock);
    if (allowed)
        return PGW_OK;
    if (retry_at != NULL)
        *retry_at = at;
    char masked[16];
    mask_phone(phone, masked);
    return pgw_err_set(err, PGW_ERISK, "SMS limiter: %s may get a message again in %lld s", masked,
                       (long long)(at - now));
}

int pgw_sms_limiter_take(pgw_sms_limiter *l, const char *phone, int64_t now, int64_t *retry_at,
                         pgw_err *err)
{
    return limiter_ask(l, phone, now, true, retry_at, err);
}

void pgw_sms_limiter_give_back(pgw_sms_limiter *l, const char *phone, int64_t taken_at)
{
    pthread_mutex_lock(&l->lock);
    bool found;
    size_t i = find(l, phone, taken_at, false, &found);
    lim_entry *e = found ? &l->entries[i] : NULL;
    if (e != NULL && e->n > 0 && nth_newest(l, i, 0) == taken_at) {
        e->head = (e->head + l->keep - 1) % l->keep;
        e->n--;
        e->last = e->n > 0 ? nth_newest(l, i, 0) : 0;
        l->stats.taken--;
    }
    pthread_mutex_unlock(&l->lock);
}

int pgw_sms_limiter_peek(pgw_sms_limiter *l, const char *phone, int64_t now, int64_t *retry_at,
                         pgw_err *err)
{
    return limiter_ask(l, phone, now, false, retry_at, err);
}

void pgw_sms_limiter_get_stats(pgw_sms_limiter *l, pgw_sms_limiter_stats *out)
{
    pthread_mutex_lock(&l->lock);
    *out = l->stats;
    pthread_mutex_unlock(&l->lock);
}

bool pgw_sms_env_set(const pgw_sms_channel *ch, char *unset, size_t cap)
{
    const char *vars[] = {ch->key_id_env, ch->key_secret_env};
    return pgw_env_all_set(vars, 2, unset, cap);
}
