/*
 * reconcile.c - see reconcile.h.
 */
#include "reconcile.h"

#include "arith.h"
#include "assertions.h"
#include "utf8.h"

#include <stdio.h>
#include <string.h>

static const char *const KIND_NAMES[PGW_RECON_KINDS] = {
    [PGW_RECON_MATCHED] = "matched",
    [PGW_RECON_POINTS_MISMATCH] = "points_mismatch",
    [PGW_RECON_AMOUNT_MISMATCH] = "amount_mismatch",
    [PGW_RECON_MISSING_IN_LEDGER] = "missing_in_ledger",
    [PGW_RECON_MISSING_IN_STATEMENT] = "missing_in_statement",
    [PGW_RECON_DUPLICATE_IN_STATEMENT] = "duplicate_in_statement",
    [PGW_RECON_MALFORMED_ROW] = "malformed_row",
    [PGW_RECON_OUTSIDE_PERIOD] = "outside_period",
    [PGW_RECON_TYPE_MISMATCH] = "type_mismatch",
    [PGW_RECON_TIME_MISMATCH] = "time_mismatch",
    [PGW_RECON_MEMBER_MISMATCH] = "member_mismatch",
};

const char *pgw_recon_kind_name(pgw_recon_kind kind)
{
    PGW_ASSERT(kind >= 0 && kind < PGW_RECON_KINDS);
    return KIND_NAMES[kind];
}

/* The two heads of the merge and what was last taken from each. */
typedef struct merge {
    const pgw_recon_io *io;
    pgw_recon_summary *sum;
    pgw_recon_row s, l; /* current rows, valid unless s_end / l_end */
    bool s_end, l_end;
    pgw_recon_row peek; /* the ledger row after l, once looked at (have_peek) */
    bool have_peek, peek_end;
    bool have_prev_s, have_prev_l, have_last_s;
    pgw_recon_row prev_s; /* key (event_id, source) of the last readable statement row */
    pgw_recon_row prev_l; /* and of the last ledger row */
    pgw_recon_row last_s; /* and of the last statement row in the key order (keyed()) */
    /* An unreadable row that will take the ledger's row l (of its key)
     * unless a readable row of that key follows it (have_held). */
    pgw_recon_row held;
    bool have_held;
} merge;

int pgw_recon_key_cmp(const pgw_recon_row *a, const pgw_recon_row *b, bool by_shop)
{
    int c = strcmp(a->event_id, b->event_id);
    return c != 0 || !by_shop ? c : strcmp(a->source, b->source);
}

/* Which of a reported row's sides have their points in their side's total
 * (statement_points, ledger_points): the caller knows, as it read them. */
enum { NEITHER = 0, STATEMENT = 1, LEDGER = 2, BOTH = 3 };

/* Counts a row in its category, its points in the category's sums (the
 * totals' breakdown), and tells the caller unless it matched. */
static int report(merge *m, pgw_recon_kind kind, const pgw_recon_row *s, const pgw_recon_row *l,
                  unsigned counted, pgw_err *err)
{
    PGW_ASSERT(!(counted & STATEMENT) || s != NULL);
    PGW_ASSERT(!(counted & LEDGER) || l != NULL);
    pgw_recon_summary *sum = m->sum;
    sum->count[kind]++;
    /* A part of a total may overflow where the total did not (signs mix). */
    if (((counted & STATEMENT) && pgw_add(sum->statement_points_of[kind], s->points,
                                          &sum->statement_points_of[kind]) != PGW_OK) ||
        ((counted & LEDGER) &&
         pgw_add(sum->ledger_points_of[kind], l->points, &sum->ledger_points_of[kind]) != PGW_OK))
        return pgw_err_set(err, PGW_ERANGE, "the %s rows' points overflow",
                           pgw_recon_kind_name(kind));
    return kind == PGW_RECON_MATCHED ? PGW_OK : m->io->emit(m->io->sink, kind, s, l, err);
}

/* Whether a statement row takes part in the key order: a readable one, or
 * an unreadable one whose key was read (it may take its event). */
static bool keyed(const merge *m, const pgw_recon_row *s)
{
    return !s->malformed ||
           (s->key_read && s->event_id[0] != '\0' && (!m->io->by_shop || s->source[0] != '\0'));
}

/* Whether a statement row is dated outside the period read. */
static bool outside_period(const pgw_recon_io *io, const pgw_recon_row *s)
{
    return io->to > io->from && (s->occurred_at < io->from || s->occurred_at >= io->to);
}

static void remember(pgw_recon_row *prev, bool *have, const pgw_recon_row *row)
{
    memcpy(prev->event_id, row->event_id, sizeof(prev->event_id));
    memcpy(prev->source, row->source, sizeof(prev->source));
    *have = true;
}

/* Reads the next statement row; unreadable ones whose key is unknown and
 * those dated outside the period are reported on the way. */
static int next_statement(merge *m, pgw_err *err)
{
    for (;;) {
        int rc = m->io->statement(m->io->statement_source, &m->s, &m->s_end, err);
        if (rc != PGW_OK || m->s_end)
            return rc;
        m->sum->statement_rows++;
        /* An unreadable row's date counts where its key does: the
         * statement reader keys only rows whose date it read. */
        bool outside = (!m->s.malformed || m->s.key_read) && outside_period(m->io, &m->s);
        if (keyed(m, &m->s) && !outside)
            break;
        rc = report(m, m->s.malformed ? PGW_RECON_MALFORMED_ROW : PGW_RECON_OUTSIDE_PERIOD, &m->s,
                    NULL, NEITHER, err);
        if (rc != PGW_OK)
            return rc;
    }
    /* An unreadable row's points were not read: not the statement's sum. */
    if (!m->s.malformed &&
        pgw_add(m->sum->statement_points, m->s.points, &m->sum->statement_points) != PGW_OK)
        return pgw_err_set(err, PGW_ERANGE, "the statement's points overflow at line %zu",
                           m->s.line);
    if (m->have_last_s && pgw_recon_key_cmp(&m->s, &m->last_s, m->io->by_shop) < 0)
        return pgw_err_set(err, PGW_EINVAL,
                           "statement line %zu: event_id \"%.64s\" comes after \"%.64s\"; rows "
                           "must be in event_id order",
                           m->s.line, m->s.event_id, m->last_s.event_id);
    remember(&m->last_s, &m->have_last_s, &m->s);
    return PGW_OK;
}

/* The ledger row after l, into m->peek (m->peek_end: none). */
static int peek_ledger(merge *m, pgw_err *err)
{
    int rc =
        m->have_peek ? PGW_OK : m->io->ledger(m->io->ledger_source, &m->peek, &m->peek_end, err);
    m->have_peek = rc == PGW_OK;
    return rc;
}

static int next_ledger(merge *m, pgw_err *err)
{
    int rc = PGW_OK;
    if (m->have_peek) { /* looked at already: it is the next */
        m->have_peek = false;
        m->l_end = m->peek_end;
        if (!m->l_end)
            m->l = m->peek;
    } else {
        rc = m->io->ledger(m->io->ledger_source, &m->l, &m->l_end, err);
    }
    if (rc != PGW_OK || m->l_end)
        return rc;
    m->sum->ledger_rows++;
    if (pgw_add(m->sum->ledger_points, m->l.points, &m->sum->ledger_points) != PGW_OK)
        return pgw_err_set(err, PGW_ERANGE, "the ledger's points overflow");
    if (m->have_prev_l && pgw_recon_key_cmp(&m->l, &m->prev_l, m->io->by_shop) < 0)
        return pgw_err_set(err, PGW_ESTATE, "the ledger is out of event_id order at \"%.64s\"",
                           m->l.event_id);
    return PGW_OK;
}

/*
 * The member id a statement row names, or NULL. The log keeps each event's
 * member by id (resolved when it was posted), so only a row naming it so
 * can be compared here: a phone's or card's member is the store's to look
 * up, through the vault's blind index. An empty member is no claim at all.
 */
const char *pgw_recon_member_id(const pgw_recon_row *s)
{
    static const char prefix[] = "member_id:";
    return strncmp(s->member, prefix, sizeof(prefix) - 1) == 0 ? s->member + sizeof(prefix) - 1
                                                               : NULL;
}

/* MATCHED, or MEMBER_MISMATCH when the row names another member. */
static int compare_member(const merge *m, const pgw_recon_row *s, const pgw_recon_row *l,
                          pgw_recon_kind *kind, pgw_err *err)
{
    const char *named = pgw_recon_member_id(s);
    *kind = PGW_RECON_MATCHED;
    if (named == NULL || l->member[0] == '\0' || strcmp(named, l->member) == 0)
        return PGW_OK;
    bool same = false;
    int rc = m->io->same_member ? m->io->same_member(m->io->members, named, l->member, &same, err)
                                : PGW_OK;
    if (rc == PGW_OK && !same)
        *kind = PGW_RECON_MEMBER_MISMATCH;
    return rc;
}

/*
 * A statement row and a ledger row with the same event_id: the first of
 * points, amount, type, time and member that differs. Points first, as
 * before the other three were compared; member last, for it alone may ask
 * the caller. Times are instants (both sides unix seconds, however the
 * row wrote it); types are both the canonical names.
 */
static int compare(const merge *m, const pgw_recon_row *s, const pgw_recon_row *l,
                   pgw_recon_kind *kind, pgw_err *err)
{
    if (s->points != l->points)
        *kind = PGW_RECON_POINTS_MISMATCH;
    else if (s->amount_fen != l->amount_fen)
        *kind = PGW_RECON_AMOUNT_MISMATCH;
    else if (strcmp(s->type, l->type) != 0)
        *kind = PGW_RECON_TYPE_MISMATCH;
    else if (s->occurred_at != l->occurred_at)
        *kind = PGW_RECON_TIME_MISMATCH;
    else
        return compare_member(m, s, l, kind, err);
    return PGW_OK;
}

/*
 * A statement row dated in the period whose event the period's ledger
 * lacks: missing_in_ledger, unless the log has the event dated outside the
 * period (io->find_event), and then that pair's first difference, not a
 * missing row that --repair would post again under a key the log holds.
 * Its points are not the period's: ledger_points stay the period's rows'.
 */
static int not_in_period(merge *m, pgw_err *err)
{
    pgw_recon_row l;
    bool found = false;
    int rc = m->io->find_event ? m->io->find_event(m->io->events, &m->s, &l, &found, err) : PGW_OK;
    if (rc != PGW_OK || !found)
        return rc != PGW_OK ? rc
                            : report(m, PGW_RECON_MISSING_IN_LEDGER, &m->s, NULL, STATEMENT, err);
    pgw_recon_kind kind = PGW_RECON_MATCHED;
    rc = compare(m, &m->s, &l, &kind, err);
    return rc != PGW_OK ? rc : report(m, kind, &m->s, &l, STATEMENT, err); /* l: not the period's */
}

/* Whether the ledger has the current row's event_id at another shop too
 * (the next row: the ledger comes in event_id order, then shop). */
static int shared_event_id(merge *m, bool *shared, pgw_err *err)
{
    *shared = false;
    if (m->io->by_shop || !m->io->several_shops)
        return PGW_OK;
    int rc = peek_ledger(m, err);
    *shared = rc == PGW_OK && !m->peek_end && strcmp(m->peek.event_id, m->l.event_id) == 0;
    return rc;
}

/* The problem of a row not paired for its shops: the event_id (its
 * first 40 bytes), how many shops, the first of them. */
static void unpaired_problem(pgw_recon_row *r, const char (*shops)[PGW_ID_MAX + 1], size_t listed,
                             size_t total)
{
    char text[PGW_RECON_SHOPS_LISTED * (PGW_ID_MAX + 2) + 256];
    int n = snprintf(text, sizeof(text), "event_id %.*s is at %zu shops in the log (",
                     (int)pgw_utf8_prefix(r->event_id, 40), r->event_id, total);
    for (size_t i = 0; i < listed; i++)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "%s%s", i ? ", " : "", shops[i]);
    snprintf(text + n, sizeof(text) - (size_t)n,
             "%s): paired with none; name each row's shop (a shop_id column, or --shop)",
             total > listed ? ", ..." : "");
    size_t keep = pgw_utf8_prefix(text, sizeof(r->problem) - 1);
    memcpy(r->problem, text, keep);
    r->problem[keep] = '\0';
    r->malformed = true;
    r->fields_read = true;
}

/*
 * A statement row keyed by event_id alone whose event_id the ledger has at
 * several shops: pairing it with the first (as once) was a guess, silent,
 * and the others were missing_in_statement. Now each of them is, the row
 * is a malformed_row saying why (--repair posts none of them), and the
 * caller is told (io->unpaired).
 */
static int unpaired(merge *m, pgw_err *err)
{
    char shops[PGW_RECON_SHOPS_LISTED][PGW_ID_MAX + 1];
    size_t total = 0;
    int rc = PGW_OK;
    while (rc == PGW_OK && !m->l_end && strcmp(m->l.event_id, m->s.event_id) == 0) {
        if (total < PGW_RECON_SHOPS_LISTED)
            memcpy(shops[total], m->l.source, sizeof(shops[total]));
        total++;
        rc = report(m, PGW_RECON_MISSING_IN_STATEMENT, NULL, &m->l, LEDGER, err);
        remember(&m->prev_l, &m->have_prev_l, &m->l);
        if (rc == PGW_OK)
            rc = next_ledger(m, err);
    }
    if (rc != PGW_OK)
        return rc;
    PGW_ASSERT(total >= 2);
    size_t listed = total < PGW_RECON_SHOPS_LISTED ? total : PGW_RECON_SHOPS_LISTED;
    pgw_recon_row row = m->s;
    unpaired_problem(&row, (const char(*)[PGW_ID_MAX + 1]) shops, listed, total);
    rc = m->io->unpaired ? m->io->unpaired(m->io->sink, &row, (const char(*)[PGW_ID_MAX + 1]) shops,
                                           listed, total, err)
                         : PGW_OK;
    /* Read, its points are the statement's total's: this row's. */
    return rc != PGW_OK ? rc : report(m, PGW_RECON_MALFORMED_ROW, &row, NULL, STATEMENT, err);
}

/* The statement row and the ledger row of its key: their first difference. */
static int pair(merge *m, pgw_err *err)
{
    pgw_recon_kind kind = PGW_RECON_MATCHED;
    int rc = compare(m, &m->s, &m->l, &kind, err);
    if (rc == PGW_OK)
        rc = report(m, kind, &m->s, &m->l, BOTH, err);
    remember(&m->prev_l, &m->have_prev_l, &m->l);
    return rc != PGW_OK ? rc : next_ledger(m, err);
}

/*
 * An unreadable row whose key was read, the ledger at its key or past it.
 * It may take the ledger's row of its key when that row is still there (a
 * readable row of the key before it would have taken it), no unreadable
 * row of the key is held already and no other shop has that event_id: it
 * is then held until the statement's next row shows whether a readable
 * row of the key follows, which takes the event instead. Any other is
 * reported now, as malformed_row alone.
 */
static int unreadable(merge *m, pgw_err *err)
{
    bool shared = false;
    bool candidate =
        !m->have_held && !m->l_end && pgw_recon_key_cmp(&m->s, &m->l, m->io->by_shop) == 0;
    int rc = candidate ? shared_event_id(m, &shared, err) : PGW_OK;
    if (rc != PGW_OK)
        return rc;
    if (candidate && !shared) {
        m->held = m->s;
        m->have_held = true;
    } else {
        rc = report(m, PGW_RECON_MALFORMED_ROW, &m->s, NULL, NEITHER, err);
    }
    return rc != PGW_OK ? rc : next_statement(m, err);
}

/*
 * The held row, the statement at another key now: no readable row of its
 * key came, and it takes the ledger's row of its key (still l: nothing
 * moved the ledger since), as malformed_row naming the event, so that the
 * event is not missing_in_statement too.
 */
static int settle_held(merge *m, pgw_err *err)
{
    PGW_ASSERT(m->have_held && !m->l_end &&
               pgw_recon_key_cmp(&m->held, &m->l, m->io->by_shop) == 0);
    m->have_held = false;
    int rc = report(m, PGW_RECON_MALFORMED_ROW, &m->held, &m->l, LEDGER, err);
    remember(&m->prev_l, &m->have_prev_l, &m->l);
    return rc != PGW_OK ? rc : next_ledger(m, err);
}

/* One step of the merge: consumes at least one row. */
static int step(merge *m, pgw_err *err)
{
    PGW_ASSERT(!m->s_end || !m->l_end);
    bool by_shop = m->io->by_shop;
    if (m->have_held) {
        bool same = !m->s_end && pgw_recon_key_cmp(&m->s, &m->held, by_shop) == 0;
        if (!same)
            return settle_held(m, err);
        if (!m->s.malformed) { /* a readable row of its key takes the event: it takes none */
            m->have_held = false;
            return report(m, PGW_RECON_MALFORMED_ROW, &m->held, NULL, NEITHER, err);
        }
    }
    if (!m->s_end && !m->s.malformed && m->have_prev_s &&
        pgw_recon_key_cmp(&m->s, &m->prev_s, by_shop) == 0) {
        int rc = report(m, PGW_RECON_DUPLICATE_IN_STATEMENT, &m->s, NULL, STATEMENT, err);
        return rc != PGW_OK ? rc : next_statement(m, err);
    }
    if (!m->l_end && m->have_prev_l && pgw_recon_key_cmp(&m->l, &m->prev_l, by_shop) == 0) {
        /* The same event_id again in the ledger: another shop's event,
         * rows keyed by event_id alone (by_shop tells them apart). No
         * statement row is paired with it: as for the one before it
         * (unpaired, or none of the statement's). */
        int rc = report(m, PGW_RECON_MISSING_IN_STATEMENT, NULL, &m->l, LEDGER, err);
        return rc != PGW_OK ? rc : next_ledger(m, err);
    }
    /* After the ledger's repeats: one of them is no event to take. */
    if (!m->s_end && m->s.malformed && (m->l_end || pgw_recon_key_cmp(&m->s, &m->l, by_shop) <= 0))
        return unreadable(m, err);
    int cmp = m->s_end ? 1 : m->l_end ? -1 : pgw_recon_key_cmp(&m->s, &m->l, by_shop);
    int rc;
    /* An unreadable row is past the ledger's row here: that is missing. */
    PGW_ASSERT(m->s_end || !m->s.malformed || cmp > 0);
    if (cmp < 0) {
        rc = not_in_period(m, err);
    } else if (cmp > 0) {
        rc = report(m, PGW_RECON_MISSING_IN_STATEMENT, NULL, &m->l, LEDGER, err);
        remember(&m->prev_l, &m->have_prev_l, &m->l);
        return rc != PGW_OK ? rc : next_ledger(m, err);
    } else {
        bool shared = false;
        rc = shared_event_id(m, &shared, err);
        if (rc == PGW_OK && shared)
            rc = unpaired(m, err);
        else if (rc == PGW_OK)
            rc = pair(m, err);
    }
    remember(&m->prev_s, &m->have_prev_s, &m->s);
    return rc != PGW_OK ? rc : next_statement(m, err);
}

int64_t pgw_recon_exceptions(const pgw_recon_summary *sum)
{
    int64_t exceptions = 0; /* each count at most the rows read: no overflow */
    for (size_t kind = PGW_RECON_MATCHED + 1; kind < PGW_RECON_KINDS; kind++)
        exceptions += sum->count[kind];
    return exceptions;
}

int pgw_reconcile(const pgw_recon_io *io, pgw_recon_summary *summary, pgw_err *err)
{
    PGW_ASSERT(io->statement && io->ledger && io->emit);
    memset(summary, 0, sizeof(*summary));
    merge m = {.io = io, .sum = summary};
    int rc = next_statement(&m, err);
    if (rc == PGW_OK)
        rc = next_ledger(&m, err);
    while (rc == PGW_OK && !(m.s_end && m.l_end))
        rc = step(&m, err);
    if (rc == PGW_OK) {
        PGW_ASSERT(!m.have_held); /* the ledger's row it waits for keeps the loop going */
        int64_t rows = 0;
        for (size_t k = 0; k < PGW_RECON_KINDS; k++)
            rows += summary->count[k];
        /* Every row of either side landed in exactly one category. */
        PGW_ASSERT(rows ==
                   summary->statement_rows + summary->count[PGW_RECON_MISSING_IN_STATEMENT]);
        /* And every point of either total in one category's sum. The
         * whole fits (it is the total), a running part of it may not: it
         * is added modulo 2^64, where the sum is still exact. */
        uint64_t s = 0, l = 0;
        for (size_t k = 0; k < PGW_RECON_KINDS; k++) {
            s += (uint64_t)summary->statement_points_of[k];
            l += (uint64_t)summary->ledger_points_of[k];
        }
        PGW_ASSERT(s == (uint64_t)summary->statement_points &&
                   l == (uint64_t)summary->ledger_points);
    }
    return rc;
}
