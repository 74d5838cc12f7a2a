/*
 * store.c - see store.h. One store for SQLite and PostgreSQL, through sql.h;
 * what follows on durability is SQLite's (PostgreSQL's COMMIT is durable).
 *
 * Durability: WAL journal with synchronous=FULL. In WAL mode NORMAL only
 * syncs at checkpoints, so a power cut can lose the last commits; FULL
 * fsyncs the WAL at every commit, which is what "an acknowledged transfer
 * survives power loss" needs. Group commit (the writer thread) is what
 * makes that affordable: one fsync per batch, not per transfer.
 *
 * Deferred sync (pgw_store_defer_sync, used by the writer) is the same
 * guarantee with the fsync moved out of COMMIT, so that the next batch can
 * be applied while the disk flushes the last one. COMMIT skips its fsync
 * and we fdatasync the WAL file ourselves, through our own descriptor,
 * before anyone is told of a commit:
 * - COMMIT write()s every frame of the transaction, the commit frame last,
 *   into the WAL and returns; only the fsync is skipped. (The connection
 *   stays synchronous=FULL and the WAL VFS, wal_vfs.h, writes the frames it
 *   gathered at the sync COMMIT asks for and skips the fsync; under
 *   another VFS the connection runs synchronous=NORMAL, which writes them
 *   and asks for no sync.) An fdatasync that starts after COMMIT returned
 *   flushes all of them (and the file size), whichever descriptor it is
 *   called on: that is exactly the sync FULL would have done at the end of
 *   COMMIT.
 * - Recovery replays the WAL up to the last valid commit frame (frames are
 *   chained by checksums and salts), so frames of later, unsynced commits
 *   that reach the disk torn are ignored; they were never acknowledged.
 * - Under NORMAL SQLite still syncs the WAL before a checkpoint copies it
 *   into the database, and the database before the WAL is reused. A commit
 *   checkpointed before our fdatasync is therefore durable in the database
 *   file even if the WAL is rewritten before we sync it.
 * - The WAL is not deleted or replaced while this connection is open (only
 *   the last connection to close removes it), so our descriptor stays on
 *   the live file. Its directory entry is synced once when we open it, as
 *   SQLite does the first time it syncs a new WAL.
 * What changes is visibility, not durability: another connection (the
 * API's reader: balances, reports) can read a commit for the few
 * milliseconds before its sync, and a power cut in that window loses it
 * although it was read. No write is acknowledged, and no answer to it or
 * stream message leaves, before the sync. After a failed sync the writer
 * stops (writer.h); readers go on serving what SQLite holds until restart.
 *
 * Every statement used on a hot path is prepared once at open and reset
 * after use.
 */
#include "store.h"

#include "core/arith.h"
#include "core/assertions.h"
#include "core/civil.h"
#include "core/notice.h"
#include "core/text.h"
#include "util/clock.h"
#include "util/csv.h"
#include "util/path.h"
#include "sql.h"
#include "wal_vfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 5000
/* The columns read into a pgw_lot, in row_to_lot()'s order. */
#define LOT_COLUMNS                                                                                \
    "id, member, points, left_points, held, earned_at, expires_at, source_transfer, expired"
#define VERIFY_PAGE 512
/* A lot's back_at (schema 38) moved to `at` when that is later. */
#define BACK_AT(at) " back_at = CASE WHEN back_at < " at " THEN " at " ELSE back_at END"
#define INSERT_LOT                                                                                 \
    "INSERT INTO lots (member, points, left_points, held, earned_at, expires_at, source_transfer)" \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
/* The columns of an activity_days row in activity_day's order. A
 * member's running totals (schema 19) at a day are those of the member's
 * last day row on or before it (none: 0): the 12 months and the month are
 * differences of two, whatever the number of days the member was active
 * in them. */
#define DAY_COLUMNS "day, purchases, spend_fen, events, run_purchases, run_spend_fen"
/* One arm of ST_ACTIVITY: the member's day row first in `order` among
 * those `where` says, tagged `tag`, in the columns after the member's. */
#define ACTIVITY_DAY(tag, where, order)                                                            \
    " UNION ALL SELECT " tag ", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, d.*,"              \
    " NULL, NULL, NULL, NULL, NULL"                                                                \
    " FROM (SELECT " DAY_COLUMNS " FROM activity_days WHERE member = ?1" where                     \
    " ORDER BY day " order " LIMIT 1) AS d"
/* The columns read into a pgw_transfer, in row_to_transfer()'s order. */
#define TRANSFER_COLUMNS                                                                           \
    "id, kind, idem_key, fingerprint, debit, credit, points, shop_id, channel, occurred_at,"       \
    " recorded_at_us, reference, breakdown, prev_hash, hash"
/* Each member side of a transfer, and the transfer it links (schema 39). */
#define MEMBER_SIDES                                                                               \
    "SELECT id, debit AS account, debit_prev AS prev FROM transfers WHERE debit LIKE 'member:%'"   \
    " UNION ALL SELECT id, credit, credit_prev FROM transfers WHERE credit LIKE 'member:%'"
/* TRANSFER_COLUMNS of transfers `t` (ST_HISTORY's). */
#define HISTORY_COLUMNS                                                                            \
    "t.id, t.kind, t.idem_key, t.fingerprint, t.debit, t.credit, t.points, t.shop_id, t.channel,"  \
    " t.occurred_at, t.recorded_at_us, t.reference, t.breakdown, t.prev_hash, t.hash"
/* The transfer before transfers `t` in the history of account ?1. */
#define CHAIN_NEXT "CASE WHEN t.credit = ?1 THEN t.credit_prev ELSE t.debit_prev END"
/* The columns read into a pgw_hold_record, in row_to_hold()'s order. */
#define HOLD_COLUMNS                                                                               \
    "id, member, shop_id, points, captured, state, deadline, created_at, capture_transfer"
/* 1 for a lot with points left or held, 0 for one spent or expired whole:
 * lots_by_member's second column as schema 22 wrote it out (the
 * migration's text is fixed; this must stay the same expression), which
 * the member's reads name exactly so, to read live lots only. */
/* Schema 33's sums of each member's lots, from the lots (both backends). */
#define LOTS_SUMS_BACKFILL                                                                         \
    "UPDATE members SET lots_left = s.l, lots_held = s.h FROM (SELECT member, SUM(left_points) l," \
    " SUM(held) h FROM lots GROUP BY member) s WHERE s.member = members.id;"
#define LOT_LIVE(prefix) "CASE WHEN " prefix "left_points + " prefix "held > 0 THEN 1 ELSE 0 END"
/* Lots in consumption order (core/ledger.h pgw_lot_order), after a cursor. */
#define LOT_ORDER_AFTER(prefix, a, b, c)                                                           \
    "(" prefix "expires_at, " prefix "earned_at, " prefix "id) > (?" a ", ?" b ", ?" c ")"

/* Every statement, prepared once at open (SQLITE_PREPARE_PERSISTENT). */
enum {
    ST_INSERT_TRANSFER,
    ST_LINK_TRANSFER,
    ST_SELECT_HEAD,
    ST_SELECT_PAGE,
    ST_INSERT_KEY,
    ST_INSERT_RECORD,
    ST_SELECT_KEY,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_SELECT_DEBT,
    ST_PUT_MEMBER,
    ST_INSERT_LOT,
    ST_ADD_LOT_SUMS,
    ST_SELECT_LOT,
    ST_EXPIRE_LOT,
    ST_EARN_EXPIRED,
    ST_EARN_LOT_DUE,
    ST_EARN_LOT,
    ST_DUE_LOTS,
    ST_MEMBER_FIGURES,
    ST_MEMBER_HOLD_FIGURES,
    ST_SPENDABLE_LOTS,
    ST_MOVE_LOT,
    ST_GIVE_BACK_LOT,
    ST_INSERT_EARN,
    ST_SELECT_EARN,
    ST_SELECT_UNEARNED,
    ST_PUT_UNEARNED_REFUND,
    ST_SELECT_REVERSALS,
    ST_UPDATE_EARN,
    ST_PUT_REVERSAL,
    ST_INSERT_HOLD,
    ST_SELECT_HOLD,
    ST_UPDATE_HOLD,
    ST_ADD_PORTION,
    ST_TAKE_PORTION,
    ST_HOLD_PORTIONS,
    ST_RELEASE_LOTS,
    ST_EMPTY_PORTIONS,
    ST_ADD_SPENT,
    ST_TAKE_SPENT,
    ST_SPENT_LOTS,
    ST_SPENT_LEFT,
    ST_DUE_HOLDS,
    ST_MEMBER_DUE_HOLDS,
    ST_ACTIVITY,
    ST_ACTIVITY_TODAY,
    ST_RULE_POINTS,
    ST_ADD_DAY,
    ST_DAY_AT,
    ST_ADD_TO_LATER_DAYS,
    ST_ADD_RULE_DAY,
    ST_TAKE_BACK_RULE_DAY,
    ST_SET_FLAGS,
    ST_ADD_MEMBER,
    ST_SELECT_ANSWER,
    ST_EXPIRING,
    ST_HISTORY,
    ST_FIND_IDENTITY,
    ST_BIND_IDENTITY,
    ST_MEMBER_IDENTITIES,
    ST_SOME_PHONES,
    ST_MEMBER_REACH,
    ST_MEMBER_WECHAT_IDS,
    ST_MERGED_INTO,
    ST_MERGED_MEMBERS,
    ST_MERGE_LOTS,
    ST_MERGE_HOLDS,
    ST_MERGE_EARNS,
    ST_MERGE_IDENTITIES,
    ST_MERGE_DAYS,
    ST_RUN_DAYS,
    ST_MERGE_RULE_DAYS,
    ST_DROP_DAYS,
    ST_DROP_RULE_DAYS,
    ST_CHALLENGE_MONTH,
    ST_ADD_CHALLENGE_DAY,
    ST_TAKE_BACK_CHALLENGE_DAY,
    ST_MERGE_CHALLENGE_DAYS,
    ST_DROP_CHALLENGE_DAYS,
    ST_MERGE_REMINDERS,
    ST_DROP_REMINDERS,
    ST_SET_MERGED,
    ST_MERGE_FLAGS,
    ST_REPOINT_MERGED,
    ST_REFERRED_BY,
    ST_SET_REFERRED_BY,
    ST_CLAIM_RECEIPT,
    ST_RECEIPT_CLAIMANT,
    ST_MEMBER_CREATED,
    ST_ENROLMENTS,
    ST_ADD_ENROLMENT,
    ST_EVENTS,
    ST_EVENT,
    ST_FLOWS,
    ST_EXPIRIES,
    ST_LOT_FUNDERS,
    ST_DAY_FLOWS,
    ST_MEMBER_NET,
    ST_DAY_HOLDINGS,
    ST_MERGE_SUBSCRIPTIONS,
    ST_DROP_SUBSCRIPTIONS,
    ST_INSERT_SESSION,
    ST_SESSION,
    ST_REVOKE_SESSION,
    ST_PRUNE_SESSIONS,
    ST_PRUNE_ENROLMENTS,
    ST_PRUNE_REMINDERS,
    ST_ADD_QUOTA,
    ST_QUOTA,
    ST_MP_TARGET,
    ST_PIN_SUBSCRIPTIONS,
    ST_DROP_UNPINNED,
    ST_SET_FOLLOW,
    ST_NOTE_FOLLOWER,
    ST_FORGET_FOLLOWER,
    ST_MEMBER_FOLLOWS,
    ST_COALESCE_NOTICE,
    ST_HURRY_ARRIVALS,
    ST_INSERT_NOTICE,
    ST_MERGE_NOTICES,
    ST_WAKE_NOTICES,
    ST_WAKE_FOLLOWER,
    ST_COUNT
};

/* An event as reconciliation reads it (event_row). */
#define EVENT_COLUMNS "key, occurred_at, event_type, member, amount_fen, points, written_off"
/* PGW_NOTICE_HELD (core/notice.h) as SQL text, for the statements below. */
#define NOTICE_HELD "16"
PGW_STATIC_ASSERT(PGW_NOTICE_HELD == 16, "NOTICE_HELD names the mark by number");
/* PGW_NOTICE_SMS_MAY_HAVE_GONE. */
#define NOTICE_SMS_GONE "32"
PGW_STATIC_ASSERT(PGW_NOTICE_SMS_MAY_HAVE_GONE == 32, "NOTICE_SMS_GONE names the mark by number");
/* PGW_NOTICE_WX_MAY_HAVE_GONE: bits of the INTEGER column like the others
 * (no migration), apart from the channels and the other marks. */
#define NOTICE_WX_GONE "1536"
PGW_STATIC_ASSERT(PGW_NOTICE_WX_MAY_HAVE_GONE == 1536 &&
                      (PGW_NOTICE_WX_MAY_HAVE_GONE &
                       (PGW_CHANNEL_MP | PGW_CHANNEL_OA | PGW_CHANNEL_SMS | PGW_NOTICE_GAVE_UP |
                        PGW_NOTICE_HELD | PGW_NOTICE_SMS_MAY_HAVE_GONE | PGW_NOTICE_WOKEN |
                        PGW_NOTICE_MAY_HAVE_REACHED)) == 0,
                  "NOTICE_WX_GONE names the marks by number, bits of their own");
/* PGW_NOTICE_MAY_HAVE_REACHED: a bit of the INTEGER column like the others
 * (no migration), apart from the channels and the other marks. */
#define NOTICE_REACHED "256"
PGW_STATIC_ASSERT(PGW_NOTICE_MAY_HAVE_REACHED == 256 &&
                      (PGW_NOTICE_MAY_HAVE_REACHED &
                       (PGW_CHANNEL_MP | PGW_CHANNEL_OA | PGW_CHANNEL_SMS | PGW_NOTICE_GAVE_UP |
                        PGW_NOTICE_HELD | PGW_NOTICE_SMS_MAY_HAVE_GONE | PGW_NOTICE_WOKEN)) == 0,
                  "NOTICE_REACHED names the mark by number, a bit of its own");
/* PGW_NOTICE_WOKEN, and what a channel's bit is multiplied by in it. */
#define NOTICE_WOKEN    "192"
#define NOTICE_WOKEN_BY "64"
PGW_STATIC_ASSERT(PGW_NOTICE_WOKEN == 192 && (1u << PGW_NOTICE_WOKEN_SHIFT) == 64,
                  "NOTICE_WOKEN names the marks by number");
/* Whether an arrival may join a pending notice (ST_COALESCE_NOTICE): no
 * attempt counted (what failed so far refused: nothing of it went), none
 * made before an operator's retry started the count anew
 * (NOTICE_REACHED), and no SMS or WeChat message of it may have gone
 * (NOTICE_WX_GONE comes with an attempt counted; kept here all the same,
 * as the marks are kept everywhere). Its text must not
 * change once it may have been read: a new total would read as new
 * points, and the official account drops a second message with the
 * notice's client_msg_id. */
#define JOINABLE                                                                                   \
    "attempts = 0 AND (excluded & (" NOTICE_SMS_GONE " + " NOTICE_WX_GONE " + " NOTICE_REACHED     \
    ")) = 0"
/* The notices column `hurried` (schema 32): 0, 1 an arrival a later notice
 * hurried (it tells the balance it was queued with), 2 one a merge moved
 * (ST_MERGE_NOTICES) or one still waiting that a notice sent reading its
 * balance read past (unmark_read_past): it tells the balance when sent,
 * hurried or not, sent at once or not. A hurry sets 1 but keeps 2; a
 * notice of the member sent telling another balance while the arrival
 * still waits (held for SMS, a retry; unhurry) or an operator's retry
 * clears 1 (UNHURRIED). */
#define HURRIED   "hurried = CASE WHEN hurried = 2 THEN 2 ELSE 1 END"
#define UNHURRIED "hurried = CASE WHEN hurried = 1 THEN 0 ELSE hurried END"
/* The clear of the marks when a notice of the member is sent (unhurry):
 * notice ?1 told balance ?2, and read it as it was sent when ?3 is 1. The
 * row's member: the courier's may be a survivor it followed a merge to.
 * The marks are found by notices_marked (schema 33), whose condition the
 * statement repeats word for word: SQLite uses a partial index only so. */
#define UNHURRY                                                                                    \
    "UPDATE notices SET hurried = 0 WHERE member = (SELECT member FROM notices WHERE id = ?1)"     \
    " AND hurried = 1 AND (state = 'pending' OR state = 'sending')"                                \
    " AND balance <> ?2 AND (id < ?1 OR ?3 = 1)"
/* How many of a member's newest notices a later notice looks through for
 * arrivals to hurry (ST_HURRY_ARRIVALS). Those still waiting out their
 * window are among the newest: a notice of another kind hurried every
 * arrival before it, and a sale joins the member's newest notice when it
 * is its shop's, so only sales alternating between shops within one
 * window (10 s by default) make more than one; past 32 of those the
 * oldest go after the later notice, as before 077ed62. The bound keeps
 * the statement's cost, in the writer's transaction of every refund and
 * redemption, from growing with the member's history (sent notices are
 * kept notify.keep_days): 20,000 of them cost 3-5 ms on SQLite, 5-8 on
 * PostgreSQL (R2). */
#define HURRY_NEWEST "32"
/*
 * The mark of the notices a read went past (unmark_read_past): notice ?1
 * told balance ?2, read as it was sent, and was recorded at ?3 +
 * PGW_NOTICE_AT_ONCE_S + READ_PAST_SLACK_S. Only a waiting notice that
 * would tell the balance it was queued with needs the mark; the others
 * read theirs when sent. unhurry has just cleared every mark of the
 * member queued with another balance, so that is one a hurry marks later,
 * or one sent at once (notifier.c current_balance):
 * - a hurry marks arrivals among the member's HURRY_NEWEST newest
 *   notices, and later notices only push one further back: the 32 newest
 *   hold every arrival it can ever mark;
 * - one sent at once is sent less than PGW_NOTICE_AT_ONCE_S after it was
 *   queued, and after this record: it was queued after ?3, however many
 *   notices of the member were queued since (a till's backlog of refunds
 *   posted together).
 * So the member's 32 newest notices, and those after them newest first
 * (notices_member) up to the first one queued before ?3, which is left
 * out: notices are in the order they were queued, their created_at in
 * the order of the clocks that queued them. The slack is for those
 * clocks, and two gaps add up in it: R2 is missed only when the
 * recorder's clock is ahead of the one that queued the notice the look
 * back stops at, by a, and R2's writer's ahead of the courier that sends
 * it, by b (R2 stays "at once" b seconds longer), with a + b over the
 * slack. So clocks of writers and couriers within READ_PAST_CLOCKS_S of
 * one another (a, b at most that) leave nothing out (P 31 s ahead of Q,
 * with a slack of 60, did: P queued R2 and recorded the read, Q queued
 * the 33 after R2 and sent it at once); a clock stepped back by more may
 * miss one (its created_at ahead, a courier also sends it "at once" for
 * that long). The rows read are bounded, READ_PAST_CAP past
 * the 32 newest: when none of those was queued before ?3 (a burst of one
 * member's notices within the time), every notice of the member is
 * marked, which is always right (the rule is "every notice still
 * waiting"), at the cost of reading the member's history once. A time
 * bound rather than an index of the waiting notices: every purchase
 * inserts a notice in the writer's transaction, and would write one more
 * B-tree.
 */
#define READ_PAST_CLOCKS_S 60
#define READ_PAST_SLACK_S  (2 * READ_PAST_CLOCKS_S)
#define READ_PAST_CAP      "4096"
#define READ_PAST                                                                                  \
    "UPDATE notices SET hurried = 2 WHERE member = (SELECT member FROM notices WHERE id = ?1)"     \
    " AND id > COALESCE((SELECT id FROM (SELECT id, created_at FROM notices"                       \
    " WHERE member = (SELECT member FROM notices WHERE id = ?1) ORDER BY id DESC"                  \
    " LIMIT " READ_PAST_CAP " OFFSET " HURRY_NEWEST ") AS older"                                   \
    " WHERE created_at < ?3 LIMIT 1), 0)"                                                          \
    " AND (state = 'pending' OR state = 'sending') AND hurried <> 2 AND balance <> ?2"
/* Which of a member's notices a later notice hurries, at time `now`
 * (ST_HURRY_ARRIVALS says why): arrivals still waiting out their window,
 * not held for SMS, not waiting for a retry, none that may have reached
 * the member. */
#define HURRY_TAKES(now)                                                                           \
    "kind = 'points_arrived' AND state = 'pending' AND due_at > " now                              \
    " AND (excluded & " NOTICE_HELD ") = 0 AND " JOINABLE
/* Whether a wake takes a pending notice whose `excluded` is this
 * expression (ST_WAKE_NOTICES says why): held, and no SMS or WeChat
 * message of it may have gone. */
#define WAKE_TAKES(excluded)                                                                       \
    "(" excluded " & " NOTICE_HELD ") <> 0 AND (" excluded " & (" NOTICE_SMS_GONE                  \
    " + " NOTICE_WX_GONE ")) = 0"
/* Makes the held notices of `who` (a condition on member) due at once, the
 * channels bound at parameter `reopened` no longer excluded
 * (ST_WAKE_NOTICES says when and why); marks the claimed ones, for
 * WOKEN_DUE and WOKEN_EXCLUDED when their claim ends. */
#define WAKE_HELD(reopened, who)                                                                   \
    "UPDATE notices SET due_at = CASE WHEN state = 'pending' AND due_at > created_at + 1"          \
    " THEN created_at + 1 ELSE due_at END, excluded = CASE WHEN state = 'pending'"                 \
    " THEN excluded - (excluded & " reopened ") ELSE excluded | (" reopened " * " NOTICE_WOKEN_BY  \
    ") END WHERE " who                                                                             \
    " AND (state = 'sending' OR (state = 'pending' AND " WAKE_TAKES("excluded") "))"
/* A claim ending with the notice pending, its `excluded` then this
 * expression (without marks): when a wake came meanwhile (the
 * row's marks) and takes it now, its due time and exclusions as the wake
 * would have left them, had it come just after. */
#define WOKEN_APPLIES(excluded) "(excluded & " NOTICE_WOKEN ") <> 0 AND " WAKE_TAKES(excluded)
#define WOKEN_DUE(due, excluded)                                                                   \
    "CASE WHEN " WOKEN_APPLIES(excluded) " AND " due " > created_at + 1"                           \
                                         " THEN created_at + 1 ELSE " due " END"
#define WOKEN_EXCLUDED(excluded)                                                                   \
    "CASE WHEN " WOKEN_APPLIES(excluded) " THEN " excluded " - (" excluded                         \
                                         " & ((excluded & " NOTICE_WOKEN ") / " NOTICE_WOKEN_BY    \
                                         ")) ELSE " excluded " END"
/* The row's exclusions without the marks, and its attempts less the one
 * the claim counted: a claim given back untried. A claim taken back (its
 * lease ran out) keeps its attempt. */
#define UNMARKED          "(excluded - (excluded & " NOTICE_WOKEN "))"
#define ATTEMPT_UNCOUNTED "CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
#define TAKEN_BACK                                                                                 \
    "due_at = " WOKEN_DUE("due_at", UNMARKED) ", excluded = " WOKEN_EXCLUDED(UNMARKED)
#define GIVEN_BACK "attempts = " ATTEMPT_UNCOUNTED ", " TAKEN_BACK
/* A courier's record of its attempt: exclusions ?4, due time ?5. The
 * row's NOTICE_REACHED stays whatever the courier's copy says: the store's
 * mark, kept for good. */
#define RECORDED_EXCLUDED "(?4 | (excluded & " NOTICE_REACHED "))"
#define RECORDED                                                                                   \
    "excluded = " WOKEN_EXCLUDED(RECORDED_EXCLUDED) ", due_at = " WOKEN_DUE("?5", RECORDED_EXCLUDED)
#define INSERT_RECORD                                                                              \
    "INSERT INTO key_records (fingerprint, created_at_us, answer) VALUES (?1, ?2, ?3)"
#define INSERT_KEY(record)                                                                         \
    "INSERT INTO idempotency (key, record, first_transfer, transfer_count, event_type, member,"    \
    " occurred_at, amount_fen, points, written_off) VALUES (?1, " record                           \
    ", ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (key) DO NOTHING"
/* PostgreSQL's: the record this session inserted last (insert_record),
 * exact whatever other sessions insert. Prepared on first use: SQLite
 * has no currval. */
static const char INSERT_KEY_AFTER_RECORD[] =
    INSERT_KEY("currval(pg_get_serial_sequence('key_records', 'id'))");

static const char *const STATEMENTS[ST_COUNT] = {
    /* Each member side linked to its member's newest transfer (schema 39:
     * a member's history is a chain; ?16 and ?17 are the debit's and the
     * credit's member ids, NULL for other accounts). */
    [ST_INSERT_TRANSFER] =
        "INSERT INTO transfers (id, kind, idem_key, fingerprint, debit, credit, points, shop_id,"
        " channel, occurred_at, recorded_at_us, reference, breakdown, prev_hash, hash,"
        " debit_prev, credit_prev)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
        " (SELECT last_transfer FROM members WHERE id = ?16),"
        " (SELECT last_transfer FROM members WHERE id = ?17))",
    /* A member first seen in a transfer gets its row here (its other
     * columns then written by ST_ADD_MEMBER or ST_PUT_MEMBER, upserts). */
    [ST_LINK_TRANSFER] = "INSERT INTO members (id, created_at_us, last_transfer)"
                         " VALUES (?1, ?2, ?3) ON CONFLICT (id)"
                         " DO UPDATE SET last_transfer = excluded.last_transfer",
    [ST_SELECT_HEAD] = "SELECT id, hash FROM transfers ORDER BY id DESC LIMIT 1",
    [ST_SELECT_PAGE] =
        "SELECT " TRANSFER_COLUMNS " FROM transfers WHERE id > ?1 ORDER BY id LIMIT ?2",
    [ST_INSERT_KEY] = INSERT_KEY("?2"),
    [ST_INSERT_RECORD] = INSERT_RECORD,
    [ST_SELECT_KEY] = "SELECT r.fingerprint, i.first_transfer, i.transfer_count FROM idempotency i"
                      " JOIN key_records r ON r.id = i.record WHERE i.key = ?1",
    [ST_SAVEPOINT] = "SAVEPOINT pgw_command",
    [ST_RELEASE] = "RELEASE pgw_command",
    [ST_SELECT_DEBT] = "SELECT debt FROM members WHERE id = ?1",
    [ST_PUT_MEMBER] = "INSERT INTO members (id, debt, created_at_us) VALUES (?1, ?2, ?3)"
                      " ON CONFLICT (id) DO UPDATE SET debt = excluded.debt",
    /* Without RETURNING: see pgw_store_insert_lot. */
    [ST_INSERT_LOT] = INSERT_LOT,
    [ST_ADD_LOT_SUMS] = "UPDATE members SET lots_left = lots_left + ?2, lots_held = lots_held + ?3"
                        " WHERE id = ?1",
    [ST_SELECT_LOT] = "SELECT " LOT_COLUMNS ", back_at FROM lots WHERE id = ?1",
    [ST_EXPIRE_LOT] = "UPDATE lots SET left_points = left_points - ?2, expired = expired + ?2"
                      " WHERE id = ?1 AND left_points >= ?2",
    /* The earn whose lot it is counts them too: a refund does not take back
     * what expired (pgw_refund_lapsed). */
    [ST_EARN_EXPIRED] = "UPDATE earns SET expired = expired + ?2"
                        " WHERE first_transfer = (SELECT source_transfer FROM lots WHERE id = ?1)",
    /* By lots_by_member: the member's live lots already due, a few at most
     * (the sweep takes them within sweep_every_s). */
    [ST_EARN_LOT_DUE] = "SELECT COALESCE(SUM(left_points), 0) FROM lots WHERE member = ?1"
                        " AND " LOT_LIVE("") " = 1 AND expires_at <= ?2 AND source_transfer = ?3",
    [ST_EARN_LOT] = "SELECT id, left_points FROM lots WHERE member = ?1 AND " LOT_LIVE(
        "") " = 1"
            " AND left_points > 0 AND expires_at > ?2 AND source_transfer = ?3",
    [ST_DUE_LOTS] = "SELECT " LOT_COLUMNS " FROM lots WHERE expires_at <= ?1 AND left_points > 0"
                    " AND id > ?2 ORDER BY id LIMIT ?3",
    /* A member's figures: its lots' sums from its row (schema 33), less
     * what its live lots past expiry (not yet swept: a few at most) keep,
     * and whether it has a hold not released: most members have none, and
     * the three sums over holds (ST_MEMBER_HOLD_FIGURES) opened ten cursors
     * at every event for them. A join, not a subquery in FROM: SQLite would
     * write that one's row into a temporary B-tree at every call. GROUP BY
     * the key: no row without the member (and no sort, the key being
     * fixed). */
    [ST_MEMBER_FIGURES] =
        "SELECT m.debt, m.lots_left + m.lots_held, m.lots_left - COALESCE(SUM(l.left_points), 0),"
        " COALESCE(SUM(l.left_points + l.held), 0),"
        " CASE WHEN EXISTS (SELECT 1 FROM holds WHERE member = ?1 AND state = 0) THEN 1 ELSE 0 END"
        " FROM members m LEFT JOIN lots l ON l.member = m.id AND " LOT_LIVE(
            "l.") " = 1"
                  " AND l.expires_at <= ?2 WHERE m.id = ?1 GROUP BY m.id",
    /* Its pending holds' points, and what its holds (pending, and past
     * their deadline but not yet released) keep of lots past expiry. */
    [ST_MEMBER_HOLD_FIGURES] =
        "SELECT (SELECT COALESCE(SUM(points), 0) FROM holds"
        "   WHERE member = ?1 AND state = 0 AND deadline > ?2),"
        " (SELECT COALESCE(SUM(p.points), 0) FROM holds h"
        "   JOIN hold_portions p ON p.hold = h.id JOIN lots d ON d.id = p.lot"
        "   WHERE h.member = ?1 AND h.state = 0 AND h.deadline > ?2 AND d.expires_at <= ?2),"
        " (SELECT COALESCE(SUM(p.points), 0) FROM holds h"
        "   JOIN hold_portions p ON p.hold = h.id JOIN lots d ON d.id = p.lot"
        "   WHERE h.member = ?1 AND h.state = 0 AND h.deadline <= ?2 AND d.expires_at <= ?2)",
    /* clang-format off */
    [ST_SPENDABLE_LOTS] =
        "SELECT " LOT_COLUMNS " FROM lots WHERE member = ?1 AND " LOT_LIVE("") " = 1"
        " AND left_points > 0 AND expires_at > ?2 AND " LOT_ORDER_AFTER("", "3", "4", "5")
        " ORDER BY expires_at, earned_at, id LIMIT ?6",
    /* clang-format on */
    [ST_MOVE_LOT] = "UPDATE lots SET left_points = left_points + ?2, held = held + ?3"
                    " WHERE id = ?1 AND left_points + ?2 >= 0 AND held + ?3 >= 0",
    [ST_GIVE_BACK_LOT] =
        "UPDATE lots SET left_points = left_points + ?2," BACK_AT("?3") " WHERE id = ?1",
    [ST_INSERT_EARN] = "INSERT INTO earns (first_transfer, member, amount_fen, points,"
                       " n_funders) VALUES (?1, ?2, ?3, ?4, ?5)",
    /* An earn is found by its purchase's key through the idempotency record. */
    [ST_SELECT_EARN] = "SELECT e.member, e.amount_fen, e.points, e.refunded_fen, e.written_off,"
                       " e.first_transfer, e.n_funders, e.expired,"
                       /* a key of before schema 13 has no time: its transfer's */
                       " COALESCE(NULLIF(i.occurred_at, 0), t.occurred_at) FROM idempotency i"
                       " JOIN earns e ON e.first_transfer = i.first_transfer"
                       " JOIN transfers t ON t.id = e.first_transfer WHERE i.key = ?1",
    /* A purchase that earned nothing has no earn: its key's row and what
     * was refunded of it (pgw_store_get_unearned). */
    [ST_SELECT_UNEARNED] =
        "SELECT i.member, i.amount_fen, COALESCE(u.refunded_fen, 0), i.occurred_at"
        " FROM idempotency i LEFT JOIN unearned_refunds u ON u.purchase = i.key"
        " WHERE i.key = ?1 AND i.event_type = 'purchase'"
        " AND i.transfer_count = 0",
    [ST_PUT_UNEARNED_REFUND] =
        "INSERT INTO unearned_refunds (purchase, refunded_fen) VALUES (?1, ?2)"
        " ON CONFLICT (purchase) DO UPDATE SET refunded_fen = excluded.refunded_fen",
    [ST_SELECT_REVERSALS] = "SELECT line, reversed FROM earn_reversals WHERE earn = ?1",
    [ST_UPDATE_EARN] =
        "UPDATE earns SET refunded_fen = ?2, written_off = ?3 WHERE first_transfer = ?1",
    [ST_PUT_REVERSAL] = "INSERT INTO earn_reversals (earn, line, reversed) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (earn, line) DO UPDATE SET reversed = excluded.reversed",
    [ST_INSERT_HOLD] = "INSERT INTO holds (" HOLD_COLUMNS ")"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_SELECT_HOLD] = "SELECT " HOLD_COLUMNS " FROM holds WHERE id = ?1",
    [ST_UPDATE_HOLD] =
        "UPDATE holds SET state = ?2, captured = ?3, capture_transfer = ?4 WHERE id = ?1",
    [ST_ADD_PORTION] = "INSERT INTO hold_portions (hold, lot, points) VALUES (?1, ?2, ?3)"
                       " ON CONFLICT (hold, lot)"
                       " DO UPDATE SET points = hold_portions.points + excluded.points",
    [ST_TAKE_PORTION] = "UPDATE hold_portions SET points = points - ?3"
                        " WHERE hold = ?1 AND lot = ?2 AND points >= ?3",
    [ST_HOLD_PORTIONS] =
        "SELECT l.id, l.member, l.points, l.left_points, l.held, l.earned_at, l.expires_at,"
        " l.source_transfer, l.expired, p.points FROM hold_portions p JOIN lots l ON l.id = p.lot"
        " WHERE p.hold = ?1 AND p.points > 0 AND " LOT_ORDER_AFTER(
            "l.", "2", "3", "4") " ORDER BY l.expires_at, l.earned_at, l.id LIMIT ?5",
    /* clang-format off */
    [ST_RELEASE_LOTS] =
        "UPDATE lots SET held = held - p.points, left_points = left_points + p.points,"
        BACK_AT("?2")
        " FROM (SELECT lot, points FROM hold_portions WHERE hold = ?1 AND points > 0) AS p"
        " WHERE lots.id = p.lot",
    /* clang-format on */
    [ST_EMPTY_PORTIONS] = "UPDATE hold_portions SET points = 0 WHERE hold = ?1 AND points > 0",
    /* What a spend (a redemption's or a capture's key) took of each lot and
     * has not had back (schema 37); read in reverse consumption order: a
     * return gives back first what the spend took last. */
    [ST_ADD_SPENT] = "INSERT INTO spent_lots (spend, lot, points) VALUES (?1, ?2, ?3)"
                     " ON CONFLICT (spend, lot)"
                     " DO UPDATE SET points = spent_lots.points + excluded.points",
    [ST_TAKE_SPENT] = "UPDATE spent_lots SET points = points - ?3"
                      " WHERE spend = ?1 AND lot = ?2 AND points >= ?3",
    [ST_SPENT_LOTS] =
        "SELECT l.id, l.member, l.points, l.left_points, l.held, l.earned_at, l.expires_at,"
        " l.source_transfer, l.expired, p.points FROM spent_lots p JOIN lots l ON l.id = p.lot"
        " WHERE p.spend = ?1 AND p.points > 0"
        " ORDER BY l.expires_at DESC, l.earned_at DESC, l.id DESC LIMIT ?2",
    [ST_SPENT_LEFT] = "SELECT COALESCE(SUM(points), 0), COUNT(*) FROM spent_lots WHERE spend = ?1",
    [ST_DUE_HOLDS] = "SELECT " HOLD_COLUMNS " FROM holds WHERE state = 0 AND deadline <= ?1"
                     " AND (deadline, id) > (?2, ?3) ORDER BY deadline, id LIMIT ?4",
    /* clang-format off */
    /* The member's row (tag 0: always one, its column 8 -1 when there is
     * no such member), then a row of activity_days per tag: 1 the
     * member's last day (today's or earlier but for a till that sent a
     * later day first), 2 the last up to a year before, 3 the last before
     * the month. One seek each: what the running totals give
     * (pgw_store_member_activity) is their differences. With a scalar
     * subquery per figure it was eight seeks, most of them to the same
     * row, a fifth of a returning member's purchase in the writer. SQLite
     * runs the arms as rows are asked for: a new member's read stops at
     * the first row, before the three seeks. Asked for them (?4, a time;
     * 0: not asked), the member's row and tag 4's (its live lots past
     * expiry at ?4 and whether it has a hold) give its figures at ?4 as
     * ST_MEMBER_FIGURES does, one seek each, in one arm: an event's
     * figures are these and what it wrote, one statement fewer
     * (pgw_member_activity.figures). */
    [ST_ACTIVITY] =
        "SELECT 0, m.purchased, m.registered, m.followed, m.last_sign_in, m.sign_in_streak,"
        " m.birthday, m.debt,"
        " CASE WHEN m.id IS NULL THEN -1 WHEN m.merged_into IS NULL THEN 0 ELSE 1 END,"
        " NULL, NULL, NULL, NULL, NULL, NULL,"
        /* typed: PostgreSQL makes NULL UNION NULL text, which meets tag 4's sums */
        " m.lots_left + m.lots_held, m.lots_left, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),"
        " CAST(NULL AS BIGINT)"
        " FROM (SELECT 1) AS one LEFT JOIN members m ON m.id = ?1"
        ACTIVITY_DAY("1", "", "DESC")
        ACTIVITY_DAY("2", " AND day <= ?2", "DESC")
        ACTIVITY_DAY("3", " AND day < ?3", "DESC")
        " UNION ALL SELECT 4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
        " NULL, NULL, NULL, NULL, NULL, COALESCE(SUM(left_points), 0),"
        " COALESCE(SUM(left_points + held), 0), CASE WHEN ?4 = 0 THEN 0"
        "  WHEN EXISTS (SELECT 1 FROM holds WHERE member = ?1 AND state = 0) THEN 1 ELSE 0 END"
        " FROM lots WHERE member = ?1 AND " LOT_LIVE("") " = 1 AND expires_at <= ?4 AND ?4 <> 0",
    /* clang-format on */
    /* By the primary key (member, day, rule): the month's days, one rule. */
    [ST_RULE_POINTS] = "SELECT COALESCE(SUM(points), 0) FROM member_rule_days"
                       " WHERE member = ?1 AND day >= ?3 AND day <= ?4 AND rule = ?2",
    [ST_ACTIVITY_TODAY] = "SELECT rule, points FROM member_rule_days"
                          " WHERE member = ?1 AND day = ?2 ORDER BY rule LIMIT ?3",
    /* A day's counts, and its running totals: the last earlier day's plus
     * this one's. Later days' totals take the same amounts (an event may
     * arrive after later ones: a till that was offline). */
    /* clang-format off */
    [ST_ADD_DAY] =
        "INSERT INTO activity_days (member, day, purchases, spend_fen, events,"
        " run_purchases, run_spend_fen) VALUES (?1, ?2, ?3, ?4, ?5, ?3 + ?6, ?4 + ?7)"
        " ON CONFLICT (member, day) DO UPDATE SET"
        " purchases = activity_days.purchases + excluded.purchases,"
        " spend_fen = activity_days.spend_fen + excluded.spend_fen,"
        " events = activity_days.events + excluded.events,"
        " run_purchases = activity_days.run_purchases + excluded.purchases,"
        " run_spend_fen = activity_days.run_spend_fen + excluded.spend_fen",
    /* clang-format on */
    [ST_DAY_AT] = "SELECT " DAY_COLUMNS " FROM activity_days"
                  " WHERE member = ?1 AND day <= ?2 ORDER BY day DESC LIMIT 1",
    [ST_ADD_TO_LATER_DAYS] = "UPDATE activity_days SET run_purchases = run_purchases + ?3,"
                             " run_spend_fen = run_spend_fen + ?4 WHERE member = ?1 AND day > ?2",
    [ST_ADD_RULE_DAY] = "INSERT INTO member_rule_days (member, day, rule, points)"
                        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (member, day, rule)"
                        " DO UPDATE SET points = member_rule_days.points + excluded.points",
    [ST_TAKE_BACK_RULE_DAY] = "UPDATE member_rule_days SET points = CASE WHEN points > ?4"
                              " THEN points - ?4 ELSE 0 END"
                              " WHERE member = ?1 AND day = ?2 AND rule = ?3",
    [ST_SET_FLAGS] = "UPDATE members SET purchased = ?2, registered = ?3, followed = ?4,"
                     " last_sign_in = ?5, sign_in_streak = ?6 WHERE id = ?1",
    /* Only after a read in the same transaction found no such member (the
     * write transactions of every instance take the chain lock in turn):
     * the row there is the one its first transfer made since (schema 39,
     * ST_LINK_TRANSFER), which this completes, its lots' sums added. */
    [ST_ADD_MEMBER] = "INSERT INTO members (id, debt, created_at_us, purchased, registered,"
                      " followed, last_sign_in, sign_in_streak, lots_left, lots_held)"
                      " VALUES (?1, 0, ?7, ?2, ?3, ?4, ?5, ?6, ?8, ?9) ON CONFLICT (id)"
                      " DO UPDATE SET created_at_us = excluded.created_at_us,"
                      " purchased = excluded.purchased, registered = excluded.registered,"
                      " followed = excluded.followed, last_sign_in = excluded.last_sign_in,"
                      " sign_in_streak = excluded.sign_in_streak,"
                      " lots_left = members.lots_left + excluded.lots_left,"
                      " lots_held = members.lots_held + excluded.lots_held",
    [ST_SELECT_ANSWER] = "SELECT r.answer FROM idempotency i JOIN key_records r"
                         " ON r.id = i.record WHERE i.key = ?1",
    /* A page of one member's history (?1 its account, ?4 its id), newest
     * first, ids below ?2, ?3 at most: a walk down its chain (schema 39),
     * each step a read by id. It starts after the cursor's transfer when
     * that is on this chain (the page before ended there), else at the
     * member's newest, passing what is not below ?2 (the cursor of a
     * page of a merged member's history, or none). `shown` counts the
     * steps below ?2; the walk ends at ?3 of them. CROSS JOIN keeps
     * SQLite reading the chain first, not the log in id order. */
    [ST_HISTORY] =
        "WITH RECURSIVE chain (id, shown) AS ("
        " SELECT start, CASE WHEN start < ?2 THEN 1 ELSE 0 END FROM ("
        "  SELECT CASE WHEN cur.credit = ?1 THEN cur.credit_prev"
        "  WHEN cur.debit = ?1 THEN cur.debit_prev ELSE m.last_transfer END AS start"
        "  FROM members m LEFT JOIN transfers cur ON cur.id = ?2 WHERE m.id = ?4) AS first"
        " WHERE start IS NOT NULL"
        " UNION ALL SELECT " CHAIN_NEXT ", c.shown + CASE WHEN " CHAIN_NEXT
        " < ?2 THEN 1 ELSE 0 END"
        " FROM chain c CROSS JOIN transfers t WHERE t.id = c.id AND c.shown < ?3"
        " AND " CHAIN_NEXT " IS NOT NULL)"
        " SELECT " HISTORY_COLUMNS " FROM chain c CROSS JOIN transfers t"
        " WHERE t.id = c.id AND c.id < ?2 ORDER BY c.id DESC LIMIT ?3",
    [ST_FIND_IDENTITY] =
        "SELECT member FROM identities WHERE kind = ?1 AND scope = ?2 AND lookup = ?3",
    [ST_BIND_IDENTITY] = "INSERT INTO identities (kind, scope, lookup, member, sealed,"
                         " created_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                         " ON CONFLICT (kind, scope, lookup) DO NOTHING",
    /* kinds 3, 4, 5: mp_openid, oa_openid, unionid (core/identity.h) */
    [ST_MEMBER_WECHAT_IDS] = "SELECT count(*) FROM (SELECT 1 FROM identities"
                             " WHERE member = ?1 AND kind IN (3, 4, 5) LIMIT 1) w",
    /* Cards last: a member may hold any number (merges, imports at many
     * shops), and the member view's first 16 should show the rest. */
    [ST_MEMBER_IDENTITIES] = "SELECT kind, scope, lookup, sealed FROM identities"
                             " WHERE member = ?1 ORDER BY kind = 2, kind, scope, lookup LIMIT ?2",
    /* The start's check of the phone keys: the first and the last phone in
     * the primary key's order, two reads of its index however many. */
    [ST_SOME_PHONES] =
        "SELECT kind, scope, lookup, sealed FROM (SELECT kind, scope, lookup, sealed"
        " FROM identities WHERE kind = ?1 ORDER BY scope, lookup LIMIT 1) AS first_phone"
        " UNION ALL SELECT kind, scope, lookup, sealed FROM (SELECT kind, scope, lookup, sealed"
        " FROM identities WHERE kind = ?1 ORDER BY scope DESC, lookup DESC LIMIT 1) AS last_phone",
    /* The notifier's: the openids of our two apps and the newest phone, one
     * each, however many other identities the member holds. */
    [ST_MEMBER_REACH] =
        "SELECT kind, scope, lookup, sealed FROM (SELECT kind, scope, lookup, sealed"
        " FROM identities WHERE member = ?1 AND kind = 3 AND scope = ?2"
        " ORDER BY created_at_us DESC, lookup LIMIT 1) AS mp"
        " UNION ALL SELECT kind, scope, lookup, sealed FROM (SELECT kind, scope, lookup, sealed"
        " FROM identities WHERE member = ?1 AND kind = 4 AND scope = ?3 LIMIT 1) AS oa"
        " UNION ALL SELECT kind, scope, lookup, sealed FROM (SELECT kind, scope, lookup, sealed"
        " FROM identities WHERE member = ?1 AND kind = 1 ORDER BY created_at_us DESC LIMIT 1) AS "
        "ph",
    [ST_MERGED_INTO] = "SELECT merged_into FROM members WHERE id = ?1",
    /* By members_merged: every merged id points at its survivor (schema 24). */
    [ST_MERGED_MEMBERS] = "SELECT id FROM members WHERE merged_into = ?1 ORDER BY id LIMIT ?2",
    [ST_MERGE_LOTS] = "UPDATE lots SET member = ?2 WHERE member = ?1",
    [ST_MERGE_HOLDS] = "UPDATE holds SET member = ?2 WHERE member = ?1",
    [ST_MERGE_EARNS] = "UPDATE earns SET member = ?2 WHERE member = ?1",
    [ST_MERGE_IDENTITIES] = "UPDATE identities SET member = ?2 WHERE member = ?1",
    /* (the survivor's running totals: ST_RUN_DAYS, after) */
    [ST_MERGE_DAYS] =
        "INSERT INTO activity_days (member, day, purchases, spend_fen, events, run_purchases,"
        " run_spend_fen) SELECT ?2, day, purchases, spend_fen, events, 0, 0 FROM activity_days"
        " WHERE member = ?1"
        " ON CONFLICT (member, day) DO UPDATE SET"
        " purchases = activity_days.purchases + excluded.purchases,"
        " spend_fen = activity_days.spend_fen + excluded.spend_fen,"
        " events = activity_days.events + excluded.events",
    [ST_MERGE_RULE_DAYS] = "INSERT INTO member_rule_days (member, day, rule, points)"
                           " SELECT ?2, day, rule, points FROM member_rule_days WHERE member = ?1"
                           " ON CONFLICT (member, day, rule)"
                           " DO UPDATE SET points = member_rule_days.points + excluded.points",
    [ST_DROP_DAYS] = "DELETE FROM activity_days WHERE member = ?1",
    /* A member's running totals from the day counts (after a merge added
     * another's), as schema 19 first set everyone's. */
    [ST_RUN_DAYS] =
        "UPDATE activity_days SET run_purchases = r.purchases, run_spend_fen = r.spend_fen"
        " FROM (SELECT day, SUM(purchases) OVER (ORDER BY day) AS purchases,"
        "   SUM(spend_fen) OVER (ORDER BY day) AS spend_fen"
        "   FROM activity_days WHERE member = ?1) AS r"
        " WHERE activity_days.member = ?1 AND activity_days.day = r.day",
    [ST_DROP_RULE_DAYS] = "DELETE FROM member_rule_days WHERE member = ?1",
    /* A challenge's own month (schema 27), by the primary key: the
     * member's days of one campaign in [?3, ?4]. */
    [ST_CHALLENGE_MONTH] = "SELECT COALESCE(SUM(purchases), 0), COALESCE(SUM(spend_fen), 0)"
                           " FROM challenge_days WHERE member = ?1 AND campaign = ?2"
                           " AND day >= ?3 AND day <= ?4",
    [ST_ADD_CHALLENGE_DAY] =
        "INSERT INTO challenge_days (member, campaign, day, purchases, spend_fen)"
        " VALUES (?1, ?2, ?3, 1, ?4) ON CONFLICT (member, campaign, day) DO UPDATE SET"
        " purchases = challenge_days.purchases + 1,"
        " spend_fen = challenge_days.spend_fen + excluded.spend_fen",
    /* Never below 0: a purchase from before schema 27 (or before its
     * campaign had filters) was not counted, and its refund takes off at
     * most what the day counts. */
    [ST_TAKE_BACK_CHALLENGE_DAY] = "UPDATE challenge_days SET spend_fen = CASE WHEN spend_fen > ?4"
                                   " THEN spend_fen - ?4 ELSE 0 END"
                                   " WHERE member = ?1 AND campaign = ?2 AND day = ?3",
    [ST_MERGE_CHALLENGE_DAYS] =
        "INSERT INTO challenge_days (member, campaign, day, purchases, spend_fen)"
        " SELECT ?2, campaign, day, purchases, spend_fen FROM challenge_days WHERE member = ?1"
        " ON CONFLICT (member, campaign, day) DO UPDATE SET"
        " purchases = challenge_days.purchases + excluded.purchases,"
        " spend_fen = challenge_days.spend_fen + excluded.spend_fen",
    [ST_DROP_CHALLENGE_DAYS] = "DELETE FROM challenge_days WHERE member = ?1",
    /* The expiry days a merged member was reminded of are the survivor's
     * too (its lots are): reminded once, whichever was. */
    [ST_MERGE_REMINDERS] = "INSERT INTO reminders (member, day)"
                           " SELECT ?2, day FROM reminders WHERE member = ?1"
                           " ON CONFLICT (member, day) DO NOTHING",
    [ST_DROP_REMINDERS] = "DELETE FROM reminders WHERE member = ?1",
    [ST_SET_MERGED] = "UPDATE members SET merged_into = ?2, debt = 0 WHERE id = ?1",
    /* What a member merged in was and said holds for the survivor: a
     * referee stays referred (not paid for again), a "no SMS" stands, a
     * birthday is kept (or a channel, which sets one once, could set a
     * second on the survivor). */
    [ST_MERGE_FLAGS] = "UPDATE members SET referred_by = COALESCE(referred_by,"
                       " (SELECT referred_by FROM members WHERE id = ?1)),"
                       " birthday = CASE WHEN birthday = '' THEN"
                       " (SELECT birthday FROM members WHERE id = ?1) ELSE birthday END,"
                       " sms_opt_out = CASE WHEN (SELECT sms_opt_out FROM members WHERE id = ?1)"
                       " = 1 THEN 1 ELSE sms_opt_out END WHERE id = ?2",
    [ST_REPOINT_MERGED] = "UPDATE members SET merged_into = ?2 WHERE merged_into = ?1",
    /* Rows move with their openids; only openid '' (schema 30: whoever
     * subscribed before openids were kept) can meet one of the survivor's. */
    [ST_MERGE_SUBSCRIPTIONS] =
        "INSERT INTO subscriptions (member, openid, template_id, quota)"
        " SELECT ?2, openid, template_id, quota FROM subscriptions WHERE member = ?1"
        " ON CONFLICT (member, openid, template_id)"
        " DO UPDATE SET quota = CASE WHEN subscriptions.quota + excluded.quota < ?3"
        " THEN subscriptions.quota + excluded.quota ELSE ?3 END",
    [ST_DROP_SUBSCRIPTIONS] = "DELETE FROM subscriptions WHERE member = ?1",
    [ST_INSERT_SESSION] = "INSERT INTO sessions (id, member, appid, created_at, expires_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_SESSION] = "SELECT expires_at, revoked_at, member FROM sessions WHERE id = ?1",
    [ST_REVOKE_SESSION] =
        "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
    /* A subquery's LIMIT: SQLite's DELETE takes none (unless built so). */
    [ST_PRUNE_SESSIONS] = "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions"
                          " WHERE expires_at < ?1 ORDER BY expires_at LIMIT ?2)",
    [ST_PRUNE_ENROLMENTS] = "DELETE FROM enrolments WHERE (address, hour) IN (SELECT address, hour"
                            " FROM enrolments WHERE hour < ?1 LIMIT ?2)",
    [ST_PRUNE_REMINDERS] = "DELETE FROM reminders WHERE (member, day) IN (SELECT member, day"
                           " FROM reminders WHERE day < ?1 ORDER BY day LIMIT ?2)",
    [ST_ADD_QUOTA] =
        "INSERT INTO subscriptions (member, openid, template_id, quota)"
        " VALUES (?1, ?5, ?2, CASE WHEN ?3 < ?4 THEN ?3 ELSE ?4 END)"
        " ON CONFLICT (member, openid, template_id) DO UPDATE SET quota = CASE"
        " WHEN subscriptions.quota + ?3 < ?4 THEN subscriptions.quota + ?3 ELSE ?4 END",
    [ST_QUOTA] = "SELECT COALESCE(SUM(quota), 0) FROM subscriptions"
                 " WHERE member = ?1 AND template_id = ?2",
    /* WeChat keeps quota per openid: the member's openid of mini program
     * ?2 with quota of its own for template ?3, else (quota of openid '',
     * an unknown subscriber) the newest; the row to count it against. */
    [ST_MP_TARGET] = "SELECT i.lookup, s.openid FROM identities i JOIN subscriptions s"
                     " ON s.member = i.member AND s.template_id = ?3 AND s.quota > 0"
                     " AND (s.openid = i.lookup OR s.openid = '')"
                     " WHERE i.member = ?1 AND i.kind = 3 AND i.scope = ?2"
                     " ORDER BY s.openid = '', i.created_at_us DESC, i.lookup LIMIT 1",
    /* A member about to be merged who has one mini-program openid: quota
     * of unknown subscriber '' was that openid's; said so before the
     * survivor, with two openids, could no longer tell. */
    [ST_PIN_SUBSCRIPTIONS] =
        "INSERT INTO subscriptions (member, openid, template_id, quota)"
        " SELECT member, (SELECT lookup FROM identities WHERE member = ?1 AND kind = 3 LIMIT 1),"
        " template_id, quota FROM subscriptions WHERE member = ?1 AND openid = ''"
        " AND (SELECT count(*) FROM identities WHERE member = ?1 AND kind = 3) = 1"
        " ON CONFLICT (member, openid, template_id)"
        " DO UPDATE SET quota = CASE WHEN subscriptions.quota + excluded.quota < ?2"
        " THEN subscriptions.quota + excluded.quota ELSE ?2 END",
    [ST_DROP_UNPINNED] =
        "DELETE FROM subscriptions WHERE member = ?1 AND openid = ''"
        " AND (SELECT count(*) FROM identities WHERE member = ?1 AND kind = 3) = 1",
    /* An older push (WeChat redelivers, in any order) never undoes a newer one. */
    [ST_SET_FOLLOW] = "INSERT INTO oa_followers (appid, openid, following, changed_at)"
                      " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (appid, openid) DO UPDATE SET"
                      " following = excluded.following, changed_at = excluded.changed_at"
                      " WHERE excluded.changed_at >= oa_followers.changed_at",
    [ST_NOTE_FOLLOWER] = "INSERT INTO oa_followers (appid, openid, following, changed_at)"
                         " VALUES (?1, ?2, 1, ?3) ON CONFLICT (appid, openid) DO NOTHING",
    /* Only the note itself: a subscribe or unsubscribe since has its own time. */
    [ST_FORGET_FOLLOWER] = "DELETE FROM oa_followers WHERE appid = ?1 AND openid = ?2"
                           " AND following = 1 AND changed_at = ?3",
    /* An arrival joins a pending notice nothing of which can have reached
     * the member (JOINABLE): one in its window, or one held for SMS
     * (quiet hours, a number's limit), whatever channels refused it
     * before (43101, 43004: refusals, not attempts). A held one
     * is due again when the arrival would have been (?7): the courier
     * chooses anew, and WeChat may reach the member by now; an SMS is
     * held again, not counted as an attempt. Its refusals stay: an
     * arrival is no new way to reach the member. */
    [ST_COALESCE_NOTICE] = "UPDATE notices SET points = points + ?3, balance = ?4,"
                           " updated_at = ?6, due_at = CASE WHEN channel = 'sms' AND due_at > ?7"
                           " THEN ?7 ELSE due_at END"
                           /* Only the member's newest notice (one probe of
                            * notices_member): a member's notices go in id order
                            * (ST_HURRY_ARRIVALS), and one joined behind a later
                            * one would tell a balance counting a sale the later
                            * one, sent after it, does not ("+450, balance 650",
                            * then "+200, balance 600"). */
                           " WHERE id = (SELECT max(id) FROM notices WHERE member = ?1)"
                           " AND kind = ?2 AND due_at > ?6"
                           /* a notice is its shop's (the live stream shows it to that
                            * shop's keys only): another shop's sale never joins it */
                           " AND shop = ?5"
                           /* PostgreSQL checks these again once a courier's claim
                            * of that row (which waited) commits */
                           " AND state = 'pending' AND " JOINABLE,
    /*
     * Before a notice of another kind is queued, the member's arrivals
     * still waiting out their window are due at once (?2, its time), so
     * that it does not go before them: a reversal told before the arrival
     * it reverses, a tier change before the points that made it. The
     * claim takes them first (due time, then id: queued before it). They
     * are marked hurried: the courier tells the balance each was queued
     * with, the one after its own sales, not one the later notice's cause
     * changed (notifier.c current_balance).
     * Hurried, not held behind the arrival: a reversal or a redemption is
     * what a member checks at once (was that spend mine?), and holding it
     * would add the window to every such notice that follows a purchase,
     * to save the few arrivals that a purchase in the same window would
     * have joined. Not one held for SMS (quiet hours, a number's limit:
     * hurried, it would only be held again), one waiting for a retry (its
     * backoff holds), or one that may have reached the member (JOINABLE).
     */
    [ST_HURRY_ARRIVALS] = "UPDATE notices SET due_at = ?2, " HURRIED " WHERE id IN (SELECT id"
                          " FROM notices WHERE member = ?1 ORDER BY id DESC LIMIT " HURRY_NEWEST ")"
                          " AND " HURRY_TAKES("?2"),
    [ST_INSERT_NOTICE] = "INSERT INTO notices (member, kind, points, balance, shop, created_at,"
                         " about_at, due_at, state, channel, excluded, attempts, last_error,"
                         " provider_id, updated_at, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6,"
                         " ?7, 'pending', '', 0, 0, '', '', ?6, ?8)",
    /* Moved to the survivor, a notice is marked moved (hurried = 2, which
     * a later hurry keeps: HURRIED) and made to wait (due after it was
     * made): the notifier then tells the balance as it is when sent, not
     * the merged member's it was queued with (notifier.c current_balance;
     * the move hid the merge from it). A mark, not hurried = 0: the
     * survivor's next refund hurried the moved arrival again, and it told
     * the merged member's balance (R2). */
    [ST_MERGE_NOTICES] = "UPDATE notices SET member = ?2, due_at = CASE WHEN due_at <= created_at"
                         " THEN created_at + 1 ELSE due_at END, hurried = 2 WHERE member = ?1",
    /* A member's notices held for SMS (PGW_NOTICE_HELD, 16) due at once
     * (just after they were made: the notifier then tells the balance as
     * it is when sent), the channel chosen anew: WeChat may reach the
     * member now. The channels ?2 that refused them before (43101, 43004)
     * are no longer excluded: what made them refuse is over. Only held
     * ones (one waiting for a retry is not hurried: its last attempt may
     * have reached the member), and not one whose SMS may have gone
     * (PGW_NOTICE_SMS_MAY_HAVE_GONE: a timed-out SMS, then held for the
     * number's limit): chosen anew at once, WeChat would tell the member
     * twice; nor one a WeChat message of which may have gone
     * (PGW_NOTICE_WX_MAY_HAVE_GONE), which keeps to that channel. One
     * held after other failed attempts is taken (a WeChat timeout, then
     * 43101: WeChat again is what a retry does). One a courier holds
     * (claimed) is marked with the channels ?2 instead (PGW_NOTICE_WOKEN):
     * the courier may be about to hold it, having read the member's
     * channels before this, and the store applies the wake when the claim
     * ends with the notice held (WOKEN_DUE). */
    [ST_WAKE_NOTICES] = WAKE_HELD("?2", "member = ?1"),
    /* The same for the members holding an official-account openid. */
    [ST_WAKE_FOLLOWER] = WAKE_HELD("?4", "member IN (SELECT member FROM identities"
                                         " WHERE kind = ?3 AND scope = ?1 AND lookup = ?2)"),
    [ST_MEMBER_FOLLOWS] = "SELECT count(*) FROM identities i JOIN oa_followers f"
                          " ON f.appid = i.scope AND f.openid = i.lookup"
                          " WHERE i.member = ?1 AND i.kind = ?2 AND f.following = 1",
    [ST_REFERRED_BY] = "SELECT referred_by FROM members WHERE id = ?1",
    [ST_CLAIM_RECEIPT] = "INSERT INTO receipts (shop_id, receipt_no, idem_key) VALUES (?1, ?2, ?3)"
                         " ON CONFLICT (shop_id, receipt_no) DO NOTHING",
    [ST_RECEIPT_CLAIMANT] = "SELECT idem_key FROM receipts WHERE shop_id = ?1 AND receipt_no = ?2",
    [ST_MEMBER_CREATED] = "SELECT created_at_us FROM members WHERE id = ?1",
    [ST_ENROLMENTS] = "SELECT members FROM enrolments WHERE address = ?1 AND hour = ?2",
    [ST_ADD_ENROLMENT] =
        "INSERT INTO enrolments (address, hour, members) VALUES (?1, ?2, 1)"
        " ON CONFLICT (address, hour) DO UPDATE SET members = enrolments.members + 1",
    [ST_SET_REFERRED_BY] = "UPDATE members SET referred_by = ?2 WHERE id = ?1",
    /* Reconciliation's ledger side, a page of keys after a cursor: a shop's
     * in event_id order, a channel's in key order (pgw_store_read_events). */
    [ST_EVENTS] = "SELECT " EVENT_COLUMNS " FROM idempotency WHERE key > ?1 AND key < ?2"
                  " AND event_type <> '' AND occurred_at >= ?3 AND occurred_at < ?4"
                  " ORDER BY key LIMIT ?5",
    /* One event by its key, at any time (pgw_store_read_event). */
    [ST_EVENT] = "SELECT " EVENT_COLUMNS " FROM idempotency WHERE key = ?1 AND event_type <> ''",
    /* Reports. Points by kind and the account on the other side of the
     * member (issuing, redeeming, expiring), within [from, to). MERGE moves
     * points between members and is left out. */
    [ST_FLOWS] = "SELECT kind, CASE WHEN debit LIKE 'member:%' THEN credit ELSE debit END,"
                 " SUM(points), credit LIKE 'member:%' FROM transfers"
                 " WHERE occurred_at >= ?1 AND occurred_at < ?2 AND kind <> 6"
                 " GROUP BY 1, 2, 4 ORDER BY 1, 2, 4 LIMIT ?3",
    [ST_EXPIRIES] =
        "SELECT id, points, reference, idem_key FROM transfers WHERE kind = 4 AND id > ?3"
        " AND occurred_at >= ?1 AND occurred_at < ?2 ORDER BY id LIMIT ?4",
    /* Who funded a lot: the transfers of the command that made it crediting
     * the same member (at most PGW_EARN_FUNDERS_MAX, consecutive). */
    [ST_LOT_FUNDERS] = "SELECT f.debit, f.points FROM lots l JOIN transfers s"
                       " ON s.id = l.source_transfer JOIN transfers f ON f.id BETWEEN s.id"
                       " AND s.id + 7 AND f.idem_key = s.idem_key AND f.credit = s.credit"
                       " AND f.kind = s.kind WHERE l.id = ?1 ORDER BY f.id",
    /* The pool per local day: points to members, back from them, spent, expired. */
    [ST_DAY_FLOWS] = "SELECT (occurred_at + ?3) / 86400,"
                     " SUM(CASE WHEN kind IN (1, 5) OR (kind = 7 AND credit LIKE 'member:%')"
                     " THEN points ELSE 0 END),"
                     " SUM(CASE WHEN kind = 2 OR (kind = 7 AND debit LIKE 'member:%')"
                     " THEN points ELSE 0 END),"
                     " SUM(CASE WHEN kind = 3 AND debit LIKE 'member:%' THEN points"
                     " WHEN kind = 3 THEN -points ELSE 0 END),"
                     " SUM(CASE WHEN kind = 4 THEN points ELSE 0 END)"
                     " FROM transfers WHERE occurred_at >= ?1 AND occurred_at < ?2"
                     " GROUP BY 1 ORDER BY 1 LIMIT ?4",
    [ST_MEMBER_NET] = "SELECT COALESCE(SUM(CASE WHEN credit LIKE 'member:%' THEN points"
                      " ELSE -points END), 0) FROM transfers WHERE occurred_at >= ?1"
                      " AND occurred_at < ?2 AND kind <> 6",
    /* What members hold (positive balances) and owe (negative ones), as each
     * local day changes them; ?5 stands for every day before from (the
     * opening). A member's balance at a day's end is the running sum of the
     * member account's days (merges included: they move the balance); a day
     * changes what is held by max(balance, 0) less max(balance before, 0),
     * and what is owed likewise. One pass over the log before to (no index
     * on occurred_at), the rows bounded by the period's days. */
    [ST_DAY_HOLDINGS] =
        "WITH moves (account, day, delta) AS ("
        " SELECT credit, CASE WHEN occurred_at < ?1 THEN ?5 ELSE (occurred_at + ?3) / 86400 END,"
        " points FROM transfers WHERE credit LIKE 'member:%' AND occurred_at < ?2"
        " UNION ALL SELECT debit,"
        " CASE WHEN occurred_at < ?1 THEN ?5 ELSE (occurred_at + ?3) / 86400 END, -points"
        " FROM transfers WHERE debit LIKE 'member:%' AND occurred_at < ?2),"
        " daily AS (SELECT account, day, SUM(delta) AS delta FROM moves GROUP BY account, day),"
        " running AS (SELECT day, delta, SUM(delta) OVER (PARTITION BY account ORDER BY day"
        " ROWS UNBOUNDED PRECEDING) AS balance FROM daily)"
        " SELECT day,"
        " SUM(CASE WHEN balance > 0 THEN balance ELSE 0 END"
        " - CASE WHEN balance - delta > 0 THEN balance - delta ELSE 0 END),"
        " SUM(CASE WHEN balance < 0 THEN -balance ELSE 0 END"
        " - CASE WHEN balance - delta < 0 THEN delta - balance ELSE 0 END)"
        " FROM running GROUP BY day ORDER BY day LIMIT ?4",
    /* What will expire unless spent: the free points of live lots. Held
     * points do not expire while held (a capture spends them; released,
     * they are free again), as the expiry run and the reminders see it. */
    /* clang-format off */
    [ST_EXPIRING] =
        "SELECT expires_at, SUM(left_points) FROM lots WHERE member = ?1"
        " AND " LOT_LIVE("") " = 1 AND left_points > 0 AND expires_at > ?2 AND expires_at < ?3"
        " GROUP BY expires_at ORDER BY expires_at LIMIT ?4",
    /* clang-format on */
    [ST_MEMBER_DUE_HOLDS] = "SELECT " HOLD_COLUMNS " FROM holds WHERE member = ?1 AND state = 0"
                            " AND deadline <= ?2 ORDER BY deadline, id LIMIT ?3",
};

#define LAZY_STATEMENTS 32 /* statements prepare() keeps, beyond the ST_ ones */

struct pgw_store {
    pgw_sql *db;
    /* Statements of the notifier and codes: prepared on first use and kept
     * (prepare()), found again by their SQL text. */
    pgw_sql_stmt *lazy[LAZY_STATEMENTS];
    size_t n_lazy;
    int64_t busy_since_us; /* when the current wait for a lock began (busy_wait) */
    int64_t busy_limit_ms; /* busy_wait's bound: BUSY_TIMEOUT_MS, less for bounded_begin's */
    char path[PGW_STORE_URL_MAX + 1];
    pgw_sql_stmt *st[ST_COUNT]; /* prepared once at open, see STATEMENTS */
    /* The chain head as of the last append in this transaction, so a batch
     * does not re-read it per transfer. Dropped on any rollback. */
    bool head_cached;
    int64_t head_id;
    uint8_t head_hash[PGW_HASH_LEN];
    bool deferred;   /* pgw_store_defer_sync was called */
    int wal_fd;      /* SQLite: our descriptor on the WAL once sync is deferred; -1 before */
    int db_fd;       /* SQLite: ours on the database file, from a checkpoint's first flush */
    bool fail_syncs; /* test hook */
    /* pgw_store_checkpoint_backstop: the WAL's pages after the last commit,
     * and past how many this connection checkpoints itself. */
    int64_t wal_pages;
    int backstop_pages;
    int64_t wal_backfilled; /* pgw_store_checkpoint: the WAL's frames in the database after it */
    /* The period close in force (pgw_store_closed_before): read by every
     * write transaction's begin under its lock, with the schema version;
     * 0 when none, or outside a write transaction. */
    int64_t closed_before;
};

/* The transfers table as schema 1 made it and schema 12 rebuilt it
 * (without the UNIQUE index on the hash): the same text but for that. */
#define CREATE_TRANSFERS(name, hash_unique)                                                        \
    "CREATE TABLE " name " ("                                                                      \
    "  id INTEGER PRIMARY KEY,"                                                                    \
    "  kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 7),"                                        \
    "  idem_key TEXT NOT NULL,"                                                                    \
    "  fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 32),"                                \
    "  debit TEXT NOT NULL,"                                                                       \
    "  credit TEXT NOT NULL CHECK (credit <> debit),"                                              \
    "  points INTEGER NOT NULL CHECK (points > 0),"                                                \
    "  shop_id TEXT NOT NULL,"                                                                     \
    "  channel TEXT NOT NULL,"                                                                     \
    "  occurred_at INTEGER NOT NULL,"                                                              \
    "  recorded_at_us INTEGER NOT NULL,"                                                           \
    "  reference TEXT NOT NULL,"                                                                   \
    "  breakdown TEXT NOT NULL,"                                                                   \
    "  prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),"                                    \
    "  hash BLOB NOT NULL " hash_unique "CHECK (length(hash) = 32)"                                \
    ") STRICT;"

/* The notices table as schema 15 made it and schema 20 rebuilt it (with
 * another text for the same check on its state), and its indexes. */
#define CREATE_NOTICES(name, state_check)                                                          \
    "CREATE TABLE " name " ("                                                                      \
    "  id INTEGER PRIMARY KEY,"                                                                    \
    "  member TEXT NOT NULL,"                                                                      \
    "  kind TEXT NOT NULL,"                                                                        \
    "  points INTEGER NOT NULL,"                                                                   \
    "  balance INTEGER NOT NULL,"                                                                  \
    "  shop TEXT NOT NULL,"                                                                        \
    "  detail TEXT NOT NULL DEFAULT '',"                                                           \
    "  created_at INTEGER NOT NULL,"                                                               \
    "  about_at INTEGER NOT NULL,"                                                                 \
    "  due_at INTEGER NOT NULL,"                                                                   \
    "  state TEXT NOT NULL CHECK (" state_check "),"                                               \
    "  channel TEXT NOT NULL,"                                                                     \
    "  excluded INTEGER NOT NULL,"                                                                 \
    "  attempts INTEGER NOT NULL,"                                                                 \
    "  last_error TEXT NOT NULL,"                                                                  \
    "  provider_id TEXT NOT NULL,"                                                                 \
    "  updated_at INTEGER NOT NULL,"                                                               \
    "  claimed_by TEXT NOT NULL DEFAULT '',"                                                       \
    "  lease_until INTEGER NOT NULL DEFAULT 0"                                                     \
    ") STRICT;"
/* Partial indexes on what is still to deliver: they stay small however
 * many notices were sent (and SQLite uses a partial index only for the
 * very condition it was built with). */
#define NOTICES_INDEXES                                                                            \
    "CREATE INDEX notices_due ON notices (due_at) WHERE state = 'pending';"                        \
    "CREATE INDEX notices_sending ON notices (lease_until) WHERE state = 'sending';"               \
    "CREATE INDEX notices_member ON notices (member, id);"
/* A notice's states, checked as comparisons: SQLite checks an IN list of
 * more than two values against a temporary B-tree it builds for every row
 * written (4 us a notice, at its insert and at each change of state). */
#define NOTICE_STATES                                                                              \
    "state = 'pending' OR state = 'sending' OR state = 'sent' OR state = 'dead'"                   \
    " OR state = 'skipped'"

/*
 * Forward-only migrations: entry i takes the schema from version i to i+1.
 * Never edit one that has shipped; add the next. PRAGMA user_version holds
 * the version, changed in the same transaction as the DDL.
 */
static const char *const MIGRATIONS[PGW_STORE_SCHEMA_VERSION] = {
    /* 0 -> 1: the transfer log. */
    /* clang-format off */
    CREATE_TRANSFERS("transfers", "UNIQUE ")
    "CREATE INDEX transfers_by_debit ON transfers (debit);"
    "CREATE INDEX transfers_by_credit ON transfers (credit);",
    /* clang-format on */
    /* 1 -> 2: idempotency records; the primary key is the guarantee. */
    "CREATE TABLE idempotency ("
    "  key TEXT PRIMARY KEY,"
    "  fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 32),"
    "  first_transfer INTEGER NOT NULL DEFAULT 0,"
    "  transfer_count INTEGER NOT NULL DEFAULT 0 CHECK (transfer_count >= 0),"
    "  created_at_us INTEGER NOT NULL"
    ") STRICT;",
    /* 2 -> 3: members and their lots. */
    "CREATE TABLE members ("
    "  id TEXT PRIMARY KEY,"
    "  debt INTEGER NOT NULL DEFAULT 0 CHECK (debt >= 0),"
    "  created_at_us INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE lots ("
    "  id INTEGER PRIMARY KEY,"
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  points INTEGER NOT NULL CHECK (points > 0),"
    "  left_points INTEGER NOT NULL CHECK (left_points >= 0),"
    "  held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),"
    "  expired INTEGER NOT NULL DEFAULT 0 CHECK (expired >= 0),"
    "  earned_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  source_transfer INTEGER NOT NULL REFERENCES transfers (id),"
    "  CHECK (left_points + held <= points)"
    ") STRICT;"
    "CREATE INDEX lots_by_member ON lots (member, expires_at);"
    "CREATE INDEX lots_due ON lots (expires_at) WHERE left_points > 0;",
    /* 3 -> 4: earns (for refunds), their reversals, holds and their portions. */
    "CREATE TABLE earns ("
    "  first_transfer INTEGER PRIMARY KEY REFERENCES transfers (id),"
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),"
    "  points INTEGER NOT NULL CHECK (points > 0),"
    "  refunded_fen INTEGER NOT NULL DEFAULT 0"
    "    CHECK (refunded_fen >= 0 AND refunded_fen <= amount_fen),"
    "  written_off INTEGER NOT NULL DEFAULT 0 CHECK (written_off >= 0),"
    "  n_funders INTEGER NOT NULL CHECK (n_funders BETWEEN 1 AND 8)"
    ") STRICT;"
    "CREATE TABLE earn_reversals ("
    "  earn INTEGER NOT NULL REFERENCES earns (first_transfer),"
    "  line INTEGER NOT NULL CHECK (line >= 0),"
    "  reversed INTEGER NOT NULL CHECK (reversed >= 0),"
    "  PRIMARY KEY (earn, line)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE holds ("
    "  id TEXT PRIMARY KEY,"
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  shop_id TEXT NOT NULL,"
    "  points INTEGER NOT NULL CHECK (points > 0),"
    "  captured INTEGER NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= points),"
    "  state INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),"
    "  deadline INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  capture_transfer INTEGER NOT NULL DEFAULT 0"
    ") STRICT, WITHOUT ROWID;"
    "CREATE INDEX holds_pending ON holds (member, deadline) WHERE state = 0;"
    "CREATE INDEX holds_due ON holds (deadline) WHERE state = 0;"
    "CREATE TABLE hold_portions ("
    "  hold TEXT NOT NULL REFERENCES holds (id),"
    "  lot INTEGER NOT NULL REFERENCES lots (id),"
    "  points INTEGER NOT NULL CHECK (points >= 0),"
    "  PRIMARY KEY (hold, lot)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE INDEX portions_by_lot ON hold_portions (lot) WHERE points > 0;"
    /* Indexing every transfer by account put two random-order B-tree
     * inserts on every purchase; with WAL each dirties a page per commit.
     * verify groups the log in one pass instead. */
    "DROP INDEX transfers_by_debit;"
    "DROP INDEX transfers_by_credit;",
    /* 4 -> 5: what the earning rules need to know of a member (tiers,
     * challenges, first purchase, once-only bonuses, sign-in streaks, daily
     * caps), and the answer a replay repeats. Days are local day numbers
     * (civil.h pgw_days_from_date). */
    "ALTER TABLE members ADD COLUMN purchased INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE members ADD COLUMN registered INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE members ADD COLUMN followed INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE members ADD COLUMN last_sign_in INTEGER;"
    "ALTER TABLE members ADD COLUMN sign_in_streak INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE members ADD COLUMN birthday TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE member_days ("
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  day INTEGER NOT NULL,"
    "  purchases INTEGER NOT NULL DEFAULT 0,"
    "  spend_fen INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (member, day)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE member_rule_days ("
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  day INTEGER NOT NULL,"
    "  rule TEXT NOT NULL,"
    "  points INTEGER NOT NULL CHECK (points >= 0),"
    "  PRIMARY KEY (member, day, rule)"
    ") STRICT, WITHOUT ROWID;"
    "ALTER TABLE idempotency ADD COLUMN answer TEXT NOT NULL DEFAULT '';",
    /* 5 -> 6: a member's history, newest first. Only member-side entries
     * are indexed (a shop's or the mall's accounts would make every
     * purchase insert twice into a hot index). */
    "CREATE INDEX transfers_member_credit ON transfers (credit, id) WHERE credit LIKE 'member:%';"
    "CREATE INDEX transfers_member_debit ON transfers (debit, id) WHERE debit LIKE 'member:%';",
    /* 6 -> 7: identities. A phone's lookup is its blind index and its value
     * is sealed (util/vault.h); the primary key makes an identity one
     * member's only. */
    "CREATE TABLE identities ("
    "  kind INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 6),"
    "  scope TEXT NOT NULL,"
    "  lookup TEXT NOT NULL,"
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  sealed BLOB,"
    "  created_at_us INTEGER NOT NULL,"
    "  PRIMARY KEY (kind, scope, lookup)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE INDEX identities_by_member ON identities (member);",
    /* 7 -> 8: merged members keep answering, pointing at their survivor. */
    "ALTER TABLE members ADD COLUMN merged_into TEXT REFERENCES members (id);",
    /* 8 -> 9: who referred a member (a referral pays once per referee). */
    "ALTER TABLE members ADD COLUMN referred_by TEXT REFERENCES members (id);",
    /* 9 -> 10: risk rules: events per member per day, receipts once per shop. */
    "ALTER TABLE member_days ADD COLUMN events INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE receipts ("
    "  shop_id TEXT NOT NULL,"
    "  receipt_no TEXT NOT NULL,"
    "  idem_key TEXT NOT NULL,"
    "  PRIMARY KEY (shop_id, receipt_no)"
    ") STRICT, WITHOUT ROWID;",
    /* 10 -> 11: members enrolled per client address and hour (mini program). */
    "CREATE TABLE enrolments ("
    "  address TEXT NOT NULL,"
    "  hour INTEGER NOT NULL,"
    "  members INTEGER NOT NULL,"
    "  PRIMARY KEY (address, hour)"
    ") STRICT, WITHOUT ROWID;",
    /* 11 -> 12: the hash loses its UNIQUE index. Hashes are random, so each
     * append dirtied a random page of that index: at 1,000 transfers per
     * commit nearly every leaf was rewritten into the WAL, most of a batch's
     * I/O (without it a batch of log appends commits 2.5x faster). The chain
     * makes hashes distinct anyway (each covers its id), and verify checks
     * every link. SQLite cannot drop a column constraint, hence the rebuild
     * (migrate() turns foreign keys off around it, as SQLite's ALTER TABLE
     * procedure prescribes, and checks them before committing). */
    /* clang-format off */
    CREATE_TRANSFERS("transfers_v12", "")
    "INSERT INTO transfers_v12 SELECT " TRANSFER_COLUMNS " FROM transfers ORDER BY id;"
    "DROP TABLE transfers;"
    "ALTER TABLE transfers_v12 RENAME TO transfers;"
    "CREATE INDEX transfers_member_credit ON transfers (credit, id) WHERE credit LIKE 'member:%';"
    "CREATE INDEX transfers_member_debit ON transfers (debit, id) WHERE debit LIKE 'member:%';",
    /* clang-format on */
    /* 12 -> 13: one row per event as its channel knows it, for finance's
     * reconciliation: the statement's columns, keyed like the event's
     * idempotency key (source: the shop, "-" when none). */
    "CREATE TABLE events ("
    "  channel TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  event_id TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  member TEXT NOT NULL,"
    "  occurred_at INTEGER NOT NULL,"
    "  amount_fen INTEGER NOT NULL CHECK (amount_fen >= 0),"
    "  points INTEGER NOT NULL,"
    "  first_transfer INTEGER NOT NULL,"
    "  PRIMARY KEY (channel, source, event_id)"
    ") STRICT, WITHOUT ROWID;",
    /* 14: WeChat. Mini-program sessions (the token is signed; this row is
     * what makes it revocable), one-time subscribe-message quota per member
     * and template, who follows the official account (by openid: an
     * unsubscribe may come for someone who never became a member), and the
     * access tokens shared by every instance on this database. */
    "CREATE TABLE sessions ("
    "  id TEXT PRIMARY KEY,"
    "  member TEXT NOT NULL,"
    "  appid TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  revoked_at INTEGER"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE subscriptions ("
    "  member TEXT NOT NULL,"
    "  template_id TEXT NOT NULL,"
    "  quota INTEGER NOT NULL CHECK (quota >= 0),"
    "  PRIMARY KEY (member, template_id)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE oa_followers ("
    "  appid TEXT NOT NULL,"
    "  openid TEXT NOT NULL,"
    "  following INTEGER NOT NULL CHECK (following IN (0, 1)),"
    "  changed_at INTEGER NOT NULL,"
    "  PRIMARY KEY (appid, openid)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE wechat_tokens ("
    "  appid TEXT PRIMARY KEY,"
    "  token TEXT NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  lease_until INTEGER NOT NULL"
    ") STRICT;",
    /* 15: the notification outbox, written in the transaction of the
     * command that causes a notice. due_at is when it may go (a
     * coalescing window, quiet hours, a retry's backoff); `excluded` the
     * channels that refused it (core/notice.h). The partial index holds
     * only what is still to deliver, so it stays small. */
    /* clang-format off */
    CREATE_NOTICES("notices", "state IN ('pending', 'sending', 'sent', 'dead', 'skipped')")
    NOTICES_INDEXES
    "ALTER TABLE members ADD COLUMN sms_opt_out INTEGER NOT NULL DEFAULT 0;"
    /* Expiry reminders sent: once per member and local expiry day. */
    "CREATE TABLE reminders ("
    "  member TEXT NOT NULL,"
    "  day INTEGER NOT NULL,"
    "  PRIMARY KEY (member, day)"
    ") STRICT, WITHOUT ROWID;",
    /* clang-format on */
    /* 16: SMS verification codes (core/otp.h): the phone by its lookup,
     * the code by its keyed hash, who asked for it; the client address
     * (its bucket) for its own limit. Rows older than a day count for
     * nothing and are deleted. */
    "CREATE TABLE otps ("
    "  id INTEGER PRIMARY KEY,"
    "  phone TEXT NOT NULL,"
    "  hash BLOB NOT NULL CHECK (length(hash) = 32),"
    "  requester TEXT NOT NULL,"
    "  ip TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  used INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1))"
    ") STRICT;"
    "CREATE INDEX otps_phone ON otps (phone, id);"
    "CREATE INDEX otps_ip ON otps (ip, created_at);"
    "CREATE INDEX otps_created ON otps (created_at);",
    /* 17: a member's figures (balance, available) sum the member's lots at
     * every event; with what they sum in the index, that is a walk along
     * one index range instead of a table lookup per lot. */
    "DROP INDEX lots_by_member;"
    "CREATE INDEX lots_by_member ON lots (member, expires_at, left_points, held);",
    /* 18: and a member's spendable lots come in consumption order from that
     * index (expires_at, earned_at, id) without a sort, which in SQLite is
     * a temporary B-tree per read: every redemption, hold and refund reads
     * them. The id is the rowid, which every index ends with, but after
     * left_points and held; named here, it orders the ties. */
    "DROP INDEX lots_by_member;"
    "CREATE INDEX lots_by_member ON lots (member, expires_at, earned_at, id, left_points, held);",
    /* 19: a member's days as activity_days, each carrying the member's
     * running totals through it, so that a member's 12 months of activity,
     * read at every event, are two rows, not one per day active: 365 of
     * them took 100 us. A new table, not new columns: a pointsgw from
     * before, still running on the database after an upgrade, would write
     * days without their totals and leave every later total wrong; its
     * statements now fail on the missing member_days instead. */
    "CREATE TABLE activity_days ("
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  day INTEGER NOT NULL,"
    "  purchases INTEGER NOT NULL DEFAULT 0,"
    "  spend_fen INTEGER NOT NULL DEFAULT 0,"
    "  events INTEGER NOT NULL DEFAULT 0,"
    "  run_purchases INTEGER NOT NULL,"
    "  run_spend_fen INTEGER NOT NULL,"
    "  PRIMARY KEY (member, day)"
    ") STRICT, WITHOUT ROWID;"
    "INSERT INTO activity_days SELECT member, day, purchases, spend_fen, events,"
    " SUM(purchases) OVER running, SUM(spend_fen) OVER running FROM member_days"
    " WINDOW running AS (PARTITION BY member ORDER BY day);"
    "DROP TABLE member_days;",
    /* 20: the notices' state checked without an IN list (NOTICE_STATES).
     * SQLite cannot change a check in place: the table is rebuilt, as
     * schema 12 rebuilt transfers; PostgreSQL swaps the check (see
     * pg_migration). */
    /* clang-format off */
    CREATE_NOTICES("notices_v20", NOTICE_STATES)
    "INSERT INTO notices_v20 SELECT * FROM notices;"
    "DROP TABLE notices;"
    "ALTER TABLE notices_v20 RENAME TO notices;"
    NOTICES_INDEXES,
    /* clang-format on */
    /* 21: an event's reconciliation columns in its key's row, the rest of
     * the key's record apart. An event wrote two rows under random keys,
     * its idempotency key and its events row (the same channel, shop and
     * event_id): two B-tree leaves per event in every commit and every
     * checkpoint, the largest part of the WAL at 128 connections (bench/
     * RESULTS.md). Now one: idempotency WITHOUT ROWID, its rows in key
     * order, which reconciliation reads as it read events. What only a
     * replay reads, the fingerprint, the time and the answer (32, 8 and
     * 300 bytes), is appended to key_records: in the keyed rows it made
     * every leaf split sooner. migrate_events_first refuses an events row
     * without its key, which the UPDATE would leave behind. */
    "CREATE TABLE key_records ("
    "  id INTEGER PRIMARY KEY,"
    "  fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 32),"
    "  created_at_us INTEGER NOT NULL,"
    "  answer TEXT NOT NULL DEFAULT ''"
    ") STRICT;"
    "CREATE TABLE idempotency_v21 ("
    "  key TEXT PRIMARY KEY,"
    "  record INTEGER NOT NULL REFERENCES key_records (id),"
    "  first_transfer INTEGER NOT NULL DEFAULT 0,"
    "  transfer_count INTEGER NOT NULL DEFAULT 0 CHECK (transfer_count >= 0),"
    "  event_type TEXT NOT NULL DEFAULT ''," /* '': the key of another command */
    "  member TEXT NOT NULL DEFAULT '',"
    "  occurred_at INTEGER NOT NULL DEFAULT 0,"
    "  amount_fen INTEGER NOT NULL DEFAULT 0,"
    "  points INTEGER NOT NULL DEFAULT 0"
    ") STRICT, WITHOUT ROWID;"
    "INSERT INTO key_records (id, fingerprint, created_at_us, answer)"
    " SELECT row_number() OVER (ORDER BY key), fingerprint, created_at_us, answer"
    " FROM idempotency ORDER BY key;"
    "INSERT INTO idempotency_v21 (key, record, first_transfer, transfer_count)"
    " SELECT key, row_number() OVER (ORDER BY key), first_transfer, transfer_count"
    " FROM idempotency ORDER BY key;"
    "UPDATE idempotency_v21 SET event_type = e.type, member = e.member,"
    " occurred_at = e.occurred_at, amount_fen = e.amount_fen, points = e.points FROM events e"
    " WHERE idempotency_v21.key = e.channel || ':' || e.source || ':' || e.event_id;"
    "DROP TABLE events;"
    "DROP TABLE idempotency;"
    "ALTER TABLE idempotency_v21 RENAME TO idempotency;",
    /* 22: a member's live lots first in lots_by_member. A member's figures
     * summed every lot the member ever earned, spent and expired ones too:
     * every event of a member with 2,000 lots (years of weekly shopping)
     * read 2,000 index entries, 617 us instead of 18. Live lots now come
     * first, by LOT_LIVE, and the member's reads take only them; a merge
     * still moves them all by the member alone. */
    "DROP INDEX lots_by_member;"
    "CREATE INDEX lots_by_member ON lots (member,"
    " (CASE WHEN left_points + held > 0 THEN 1 ELSE 0 END), expires_at, earned_at, id,"
    " left_points, held);",
    /* 23: no table changes. A mini program's or official account's event
     * without a shop is keyed by its appid, where it had "-"
     * (event_command.c), and a newer pointsgw finds an older key, but an
     * older one looks for "-" only: beside a newer instance it would
     * credit a retried event a second time. The version keeps an older
     * pointsgw from writing (check_schema_unchanged) and from opening. */
    "SELECT 1;",
    /* 24: a merged member points at its survivor, never at another merged
     * member. Each merge pointed the merged id at its survivor alone, so
     * when that survivor was merged in turn the chain grew: a card bound
     * to member after member (a household's shared card) left the first
     * id 16 hops from its survivor, past PGW_MERGE_HOPS_MAX, and every
     * use of that id failed (503). A merge now also points the members
     * merged into `from` at `into` (ST_REPOINT_MERGED, by this index); the
     * chains already made are cut to one hop here. */
    "CREATE INDEX members_merged ON members (merged_into) WHERE merged_into IS NOT NULL;"
    /* Down from each survivor by the index, one row per merged member: a
     * member in a cycle (a bug) has no survivor and stays as it was. */
    "WITH RECURSIVE down (id, survivor, hops) AS ("
    " SELECT m.id, m.merged_into, 1 FROM members m JOIN members t ON t.id = m.merged_into"
    " WHERE t.merged_into IS NULL"
    " UNION ALL"
    " SELECT m.id, down.survivor, down.hops + 1 FROM members m JOIN down"
    " ON m.merged_into = down.id WHERE down.hops < 1000)"
    " UPDATE members SET merged_into = down.survivor FROM down"
    " WHERE members.id = down.id AND down.hops > 1;",
    /* 25: an earn counts what its lot lost to expiry, so that a refund
     * after it does not take those points back (pgw_refund_lapsed): it
     * reversed them again, leaving the member owing points already gone
     * to system:expired and giving the funders back points whose cost had
     * ended with their expiry. Filled from the lots, one pass. */
    "ALTER TABLE earns ADD COLUMN expired INTEGER NOT NULL DEFAULT 0 CHECK (expired >= 0);"
    "UPDATE earns SET expired = x.p FROM (SELECT source_transfer s, SUM(expired) p FROM lots"
    " WHERE expired > 0 GROUP BY source_transfer) AS x WHERE earns.first_transfer = x.s;",
    /* 26: what was refunded of a purchase that earned nothing (under the
     * earning threshold, or capped to 0). It has no earn (an earn is keyed
     * by its first transfer), so its refund was original_not_found: the
     * till's real refund went unrecorded and reconciliation showed it
     * missing. Its refunds reverse nothing but are summed here, so that
     * they never take more than its amount off the member's spend. A row
     * only for such a purchase once refunded: nothing on a purchase's path,
     * and nothing to fill (every such refund was refused until now). */
    "CREATE TABLE unearned_refunds ("
    "  purchase TEXT PRIMARY KEY REFERENCES idempotency (key),"
    "  refunded_fen INTEGER NOT NULL CHECK (refunded_fen > 0)"
    ") STRICT, WITHOUT ROWID;",
    /* 27: a challenge with shops or formats counts only the purchases at
     * the shops it covers: per member, campaign and day, the purchases a
     * filtered challenge covered and their spend less refunds, written only
     * for such purchases (most have none). It starts empty: the log keeps
     * no record of which campaign covered a purchase under the
     * configuration of its day, so such a challenge counts from the
     * upgrade on (README). */
    "CREATE TABLE challenge_days ("
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  campaign TEXT NOT NULL,"
    "  day INTEGER NOT NULL,"
    "  purchases INTEGER NOT NULL CHECK (purchases >= 0),"
    "  spend_fen INTEGER NOT NULL CHECK (spend_fen >= 0),"
    "  PRIMARY KEY (member, campaign, day)"
    ") STRICT, WITHOUT ROWID;",
    /* 28: sessions are deleted once expired (pgw_store_prune_sessions), a
     * pass at a time in expiry order: without an index each pass read the
     * whole table (a week of logins) inside the writer's transaction. */
    "CREATE INDEX sessions_by_expiry ON sessions (expires_at);",
    /* 29: reminders of days past are deleted (pgw_store_prune_reminders),
     * the earliest first: a row per member and expiry day only grew. */
    "CREATE INDEX reminders_by_day ON reminders (day);",
    /* 30: subscribe-message quota per openid, as WeChat keeps it: a member
     * merged from two holds two mini-program openids, and each accept is
     * a send to the openid that made it. Quota from before has openid ''
     * (not known; the member's newest openid is sent to). PostgreSQL
     * changes the key in place (pg_migration). */
    "CREATE TABLE subscriptions_v30 ("
    "  member TEXT NOT NULL,"
    "  openid TEXT NOT NULL,"
    "  template_id TEXT NOT NULL,"
    "  quota INTEGER NOT NULL CHECK (quota >= 0),"
    "  PRIMARY KEY (member, openid, template_id)"
    ") STRICT, WITHOUT ROWID;"
    "INSERT INTO subscriptions_v30 SELECT member, '', template_id, quota FROM subscriptions;"
    "DROP TABLE subscriptions;"
    "ALTER TABLE subscriptions_v30 RENAME TO subscriptions;",
    /* 31: what a refund wrote off instead of reversing (expired, or not
     * covered under clamp), with its key, for reconciliation to show: a
     * refund that reversed 60 and wrote off 40 looked like one that
     * reversed 60 of 60. NULL for every other event and key. A refund
     * recorded before has it in its stored answer ("written_off", which
     * every refund's answer has carried, and every event row has had an
     * answer kept beside it): copied from there, exact, one pass over the
     * keys; a refund whose answer does not say it stays NULL, shown as
     * unknown. PostgreSQL reads the answer its own way (pg_migration). */
    "ALTER TABLE idempotency ADD COLUMN written_off INTEGER CHECK (written_off >= 0);"
    "UPDATE idempotency SET written_off = (SELECT CASE WHEN json_valid(r.answer) THEN CASE WHEN"
    " json_type(r.answer, '$.written_off') = 'integer' THEN json_extract(r.answer,"
    " '$.written_off') END END FROM key_records r WHERE r.id = idempotency.record)"
    " WHERE event_type = 'refund';",
    /* 32: a member's notices go in the order they were queued: an arrival
     * a later notice made due at once is marked (hurried = 1: it tells the
     * balance it was queued with; a due time before it was made, as 9b3cf56
     * marked it, reads wrongly across instances with skewed clocks), a
     * notice a merge moved too (2: it tells the balance when sent, hurried
     * or not; HURRIED), and the courier's claim reads pending notices by
     * due time, then id, from an index in that order: on PostgreSQL,
     * sorting the notices due at the same second cost each claim 35 ms at
     * 100,000 (the end of quiet hours). On SQLite notices_due gave that
     * order already (its entries end with the rowid, which id is); the new
     * index replaces it on both, serving every query that one did. A
     * range, not an IN list: SQLite checks one against a temporary B-tree
     * built for every row written (NOTICE_STATES; R5: it doubled the cost
     * of queueing a notice). */
    "ALTER TABLE notices ADD COLUMN hurried INTEGER NOT NULL DEFAULT 0"
    " CHECK (hurried BETWEEN 0 AND 2);"
    "CREATE INDEX notices_due_id ON notices (due_at, id) WHERE state = 'pending';"
    "DROP INDEX notices_due;",
    /* 33: a member's row carries the sums of its lots' left and held
     * points, kept by triggers on lots whatever writes them (an event, a
     * hold, the sweep, a merge, an import), so that a member's figures,
     * read at every event, no longer add up every live lot: a member with
     * 65 live lots (a year of weekly shopping) paid 77,000 instructions for
     * that read, a third of its purchase, against 13,000 now. Only its lots
     * past expiry not yet swept are read, a few at most. pointsgw verify
     * checks the sums against the lots. PostgreSQL has one trigger
     * function instead (pg_migration). */
    "ALTER TABLE members ADD COLUMN lots_left INTEGER NOT NULL DEFAULT 0 CHECK (lots_left >= 0);"
    "ALTER TABLE members ADD COLUMN lots_held INTEGER NOT NULL DEFAULT 0 CHECK (lots_held >= "
    "0);" LOTS_SUMS_BACKFILL "CREATE TRIGGER lots_sums_insert AFTER INSERT ON lots BEGIN"
    " UPDATE members SET lots_left = lots_left + NEW.left_points,"
    " lots_held = lots_held + NEW.held WHERE id = NEW.member; END;"
    "CREATE TRIGGER lots_sums_update AFTER UPDATE OF left_points, held ON lots"
    " WHEN OLD.member = NEW.member BEGIN"
    " UPDATE members SET lots_left = lots_left + NEW.left_points - OLD.left_points,"
    " lots_held = lots_held + NEW.held - OLD.held WHERE id = NEW.member; END;"
    "CREATE TRIGGER lots_sums_move AFTER UPDATE OF member ON lots"
    " WHEN OLD.member <> NEW.member BEGIN"
    " UPDATE members SET lots_left = lots_left - OLD.left_points,"
    " lots_held = lots_held - OLD.held WHERE id = OLD.member;"
    " UPDATE members SET lots_left = lots_left + NEW.left_points,"
    " lots_held = lots_held + NEW.held WHERE id = NEW.member; END;"
    "CREATE TRIGGER lots_sums_delete AFTER DELETE ON lots BEGIN"
    " UPDATE members SET lots_left = lots_left - OLD.left_points,"
    " lots_held = lots_held - OLD.held WHERE id = OLD.member; END;"
    /* And the hurried marks still waiting, by member, for the clear when
     * a notice of the member is sent (UNHURRY), which finds each of them
     * wherever it is in the member's history; a sent or dead one leaves
     * the index. */
    "CREATE INDEX notices_marked ON notices (member, id)"
    " WHERE hurried = 1 AND (state = 'pending' OR state = 'sending');",
    /* 34: finance's closes of periods (pgw_store_close_period), one row
     * each, kept: what is dated before `before_at` is final. Every write
     * transaction reads the newest (its primary key's last entry) under
     * its lock; `last_transfer`, the chain head when it was closed, is
     * what verify holds the log to: no transfer after it is dated before
     * the close. */
    "CREATE TABLE period_closes ("
    "  before_at INTEGER NOT NULL CHECK (before_at > 0),"
    "  closed_at_us INTEGER NOT NULL,"
    "  last_transfer INTEGER NOT NULL CHECK (last_transfer >= 0),"
    "  PRIMARY KEY (before_at)"
    ") STRICT;",
    /* 35: a new lot is added to its member's sums by pgw_store_insert_lot,
     * no longer by a trigger: the trigger made every purchase's insert of
     * its lot a multi-row write with foreign keys, run in a statement
     * journal, 3,200 instructions of the writer's ~189,000 a purchase
     * (bench/RESULTS.md). The other three triggers stay: their writes
     * (spends, holds, the sweep, merges) are many and rarer. PostgreSQL's
     * one trigger no longer fires on INSERT (pg_migration). */
    "DROP TRIGGER lots_sums_insert;",
    /* 36: the dead notices, by id, for GET /v1/notifications?state=dead
     * (pgw_store_dead_notices): a page read the outbox back by its
     * primary key until it had found them, every notice kept
     * (notify.keep_days) when few are dead. A notice enters the index as
     * it dies and leaves as a retry or the prune takes it. */
    "CREATE INDEX notices_dead ON notices (id) WHERE state = 'dead';",
    /* 37: what each redemption and capture took of each lot and has not
     * had back, keyed by the spend's key (redeem:<id>, capture:<id>), so
     * that a return gives the points back to the lots they came from,
     * with their expiry (command.c apply_return). Spends made before have
     * no rows: nothing of them can be returned. */
    "CREATE TABLE spent_lots ("
    "  spend TEXT NOT NULL,"
    "  lot INTEGER NOT NULL REFERENCES lots (id),"
    "  points INTEGER NOT NULL CHECK (points >= 0),"
    "  PRIMARY KEY (spend, lot)"
    ") STRICT, WITHOUT ROWID;",
    /* 38: when points last came back to a lot's free part (a return, a
     * hold's release: pgw_store_give_back_lot_points, pgw_store_release_hold),
     * so that an expiry run as of a moment before that is dated then
     * (command.c date_expiry), not before the points were back: a
     * return's 30 points given back on 10 March to a lot due on 1 March and
     * expired by a run as of 5 March left the member's balance by date at
     * -30 from 5 to 10 March. 0: none came back since the upgrade. */
    "ALTER TABLE lots ADD COLUMN back_at INTEGER NOT NULL DEFAULT 0;",
    /* 39: a member's history is a chain through the log, no longer two
     * indexes keyed by member (transfers_member_credit, _debit). Every
     * purchase added an entry at its member's place in the first: once
     * the index had grown, a leaf of its own rewritten into the WAL per
     * purchase (bench/RESULTS.md, 2026-12-04: 9.8% more purchases a
     * second without it). Now each member side of a transfer names the
     * member's transfer before it (debit_prev, credit_prev: NULL for
     * the first, and for an account that is no member's) and the
     * member's row its newest (last_transfer), a row a purchase rewrites
     * anyway. The heads are read through the old indexes before they go;
     * the links by one pass over the log. Merges (rare) keep an index
     * each way of their own, for the lookups of kind 6 (MERGE_OF). The
     * same rows (a merge is between members), but each condition names
     * its side, so that PostgreSQL does not read one index for the other
     * side's question. */
    "ALTER TABLE transfers ADD COLUMN debit_prev INTEGER;"
    "ALTER TABLE transfers ADD COLUMN credit_prev INTEGER;"
    "ALTER TABLE members ADD COLUMN last_transfer INTEGER;"
    "UPDATE members SET last_transfer = (SELECT MAX(newest) FROM ("
    " SELECT MAX(id) AS newest FROM transfers WHERE credit = 'member:' || members.id"
    " AND credit LIKE 'member:%'"
    " UNION ALL SELECT MAX(id) FROM transfers WHERE debit = 'member:' || members.id"
    " AND debit LIKE 'member:%') AS sides);"
    "UPDATE transfers SET debit_prev = l.debit_prev, credit_prev = l.credit_prev FROM ("
    " SELECT id, MAX(CASE WHEN side = 0 THEN prev END) AS debit_prev,"
    " MAX(CASE WHEN side = 1 THEN prev END) AS credit_prev FROM ("
    " SELECT id, side, LAG(id) OVER (PARTITION BY account ORDER BY id) AS prev FROM ("
    " SELECT id, 0 AS side, debit AS account FROM transfers WHERE debit LIKE 'member:%'"
    " UNION ALL SELECT id, 1, credit FROM transfers WHERE credit LIKE 'member:%') AS sides"
    " ) AS linked GROUP BY id) AS l"
    " WHERE l.id = transfers.id AND (l.debit_prev IS NOT NULL OR l.credit_prev IS NOT NULL);"
    "DROP INDEX transfers_member_credit;"
    "DROP INDEX transfers_member_debit;"
    "CREATE INDEX transfers_merges_in ON transfers (credit)"
    " WHERE kind = 6 AND credit LIKE 'member:%';"
    "CREATE INDEX transfers_merges_out ON transfers (debit)"
    " WHERE kind = 6 AND debit LIKE 'member:%';",
};

/* A store call failed `what`ing: PGW_EIO, or PGW_EUNAVAILABLE (worth a
 * retry) when the statement failed so (pgw_sql_errcode): a lock timeout
 * on PostgreSQL is not the gateway's fault. (Over HTTP both answer 503;
 * the commands' exit codes tell them apart.) Never PGW_ECONFLICT, which
 * a statement's step gives for a duplicate key (sql.h): the store finds
 * a request's conflicts by its own reads (the rows a write changed), so
 * a statement the database refused is a storage failure, not an
 * idempotency key used twice (409 over HTTP), as PostgreSQL's sent
 * statements already say (sql.c sent_failure). */
static int db_error(pgw_store *s, int code, const char *what, pgw_err *err)
{
    int last = pgw_sql_errcode(s->db);
    if (code == PGW_ECONFLICT)
        code = PGW_EIO;
    if (code == PGW_EIO && last == PGW_EUNAVAILABLE)
        code = PGW_EUNAVAILABLE;
    return pgw_err_set_database(err, code, "%s: %s: %s", s->path, what,
                                last != PGW_OK ? pgw_sql_errmsg(s->db) : "an unexpected result");
}

/* SQL the store runs as it is (a migration, BEGIN, a PRAGMA): refused for
 * a duplicate key, a storage failure as db_error's are, not PGW_ECONFLICT
 * (a migration's made commands exit 2, "what it was given"). */
static int exec(pgw_store *s, const char *sql, const char *what, pgw_err *err)
{
    int rc = pgw_sql_exec(s->db, sql, what, err);
    return rc == PGW_ECONFLICT ? pgw_err_recode(err, PGW_EIO) : rc;
}

static bool is_postgres(const pgw_store *s)
{
    return pgw_sql_kind_of(s->db) == PGW_SQL_POSTGRES;
}

/*
 * PostgreSQL advisory lock keys (any two fixed int64s). MIGRATE is held by
 * the instance migrating the schema, so instances started together do not
 * both apply a migration. CHAIN is taken by every write transaction that
 * may append to the log, and held to its end: it serialises the chain head
 * (and so the ledger's read-then-write rules) across instances, for one
 * batch at a time, as SQLite's single write lock does.
 */
#define PG_LOCK_MIGRATE "7064670001"
#define PG_LOCK_CHAIN   "7064670002"
/* How long a write waits for the chain lock (or a row lock) before its
 * batch fails with 503: an instance holding it that long is stuck. The
 * statements run READ COMMITTED whatever the server's default, so each
 * sees what the batch before it committed, once the lock is ours. */
#define PG_SECONDS_(x) #x "s"
#define PG_SECONDS(x)  PG_SECONDS_(x)
#define PG_LOCK_WAIT   PG_SECONDS(PGW_STORE_LOCK_WAIT_S)

static int prepare(pgw_store *s, const char *sql, pgw_sql_stmt **st, pgw_err *err);
static void release(pgw_store *s, pgw_sql_stmt *st);

/* The schema version: SQLite's user_version, PostgreSQL's pgw_schema row.
 * Kept prepared: every write transaction reads it (pgw_store_begin). */
static int read_user_version(pgw_store *s, int64_t *out, pgw_err *err)
{
    const char *sql = is_postgres(s) ? "SELECT version FROM pgw_schema" : "PRAGMA user_version";
    pgw_sql_stmt *st = NULL;
    if (prepare(s, sql, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "reading the schema version", err);
    int rc = pgw_sql_step(st) == PGW_SQL_ROW ? PGW_OK : PGW_EIO;
    if (rc == PGW_OK)
        *out = pgw_sql_column_int64(st, 0);
    release(s, st);
    return rc == PGW_OK ? PGW_OK : db_error(s, PGW_EIO, "reading the schema version", err);
}

/* Appends a SQL identifier to `out`, quoted as SQLite reads it. */
static void quote_identifier(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    out[n++] = '"';
    for (; *name != '\0' && n + 3 < cap; name++) {
        if (*name == '"')
            out[n++] = '"';
        out[n++] = *name;
    }
    out[n++] = '"';
    out[n] = '\0';
}

/*
 * Which row a dangling reference names, said into missing[0..cap) as
 * " (transfers.id = 300, deleted?)", or "" when it cannot be read: a
 * transfer deleted from the end of the log breaks no link of the chain,
 * and "table lots row 300 refers to a missing row of transfers" alone did
 * not say which transfer went. The reference's first column only (every
 * foreign key of the schema is of one column).
 */
static void missing_parent(pgw_store *s, const char *table, int64_t row, int64_t fk, char *missing,
                           size_t cap)
{
    missing[0] = '\0';
    pgw_sql_stmt *st = NULL;
    char from[96] = "", to[96] = "", parent[96] = "";
    if (pgw_sql_prepare(s->db,
                        "SELECT \"from\", coalesce(\"to\", 'rowid'), \"table\""
                        " FROM pragma_foreign_key_list(?) WHERE id = ? ORDER BY seq LIMIT 1",
                        false, &st, NULL) != PGW_OK)
        return;
    pgw_sql_bind_text(st, 1, table);
    pgw_sql_bind_int64(st, 2, fk);
    if (pgw_sql_step(st) == PGW_SQL_ROW) {
        quote_identifier(pgw_sql_column_text(st, 0), from, sizeof(from));
        snprintf(to, sizeof(to), "%s", pgw_sql_column_text(st, 1));
        snprintf(parent, sizeof(parent), "%s", pgw_sql_column_text(st, 2));
    }
    pgw_sql_finalize(st);
    char quoted[96], sql[256];
    quote_identifier(table, quoted, sizeof(quoted));
    snprintf(sql, sizeof(sql), "SELECT %s FROM %s WHERE rowid = ?", from, quoted);
    if (from[0] == '\0' || pgw_sql_prepare(s->db, sql, false, &st, NULL) != PGW_OK)
        return;
    pgw_sql_bind_int64(st, 1, row);
    if (pgw_sql_step(st) == PGW_SQL_ROW && !pgw_sql_column_null(st, 0))
        snprintf(missing, cap, " (%s.%s = %s, deleted?)", parent, to, pgw_sql_column_text(st, 0));
    pgw_sql_finalize(st);
}

/* SQLite's first row whose reference leads nowhere, said into said[0..cap)
 * ("" for none). PostgreSQL checks foreign keys as it goes; SQLite's
 * writers do not (configure), so verify asks here, and each migration
 * counts them (count_dangling). */
static int dangling_reference(pgw_store *s, char *said, size_t cap, pgw_err *err)
{
    said[0] = '\0';
    if (is_postgres(s))
        return PGW_OK;
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db, "PRAGMA foreign_key_check", false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "checking foreign keys", err);
    int step = pgw_sql_step(st);
    const char *table = step == PGW_SQL_ROW ? pgw_sql_column_text(st, 0) : NULL;
    const char *parent = step == PGW_SQL_ROW ? pgw_sql_column_text(st, 2) : NULL;
    if (step == PGW_SQL_ROW && pgw_sql_column_null(st, 1)) { /* WITHOUT ROWID */
        snprintf(said, cap, "table %s: a row refers to a missing row of %s", table, parent);
    } else if (step == PGW_SQL_ROW) {
        int64_t row = pgw_sql_column_int64(st, 1);
        char missing[160];
        missing_parent(s, table, row, pgw_sql_column_int64(st, 3), missing, sizeof(missing));
        snprintf(said, cap, "table %s row %lld refers to a missing row of %s%s", table,
                 (long long)row, parent, missing);
    }
    pgw_sql_finalize(st);
    return step == PGW_SQL_ROW || step == PGW_SQL_DONE
               ? PGW_OK
               : db_error(s, PGW_EIO, "checking foreign keys", err);
}

/*
 * SQLite: a migration is refused for the references leading nowhere that
 * it made, not for those it found. One from before (an older bug, a hand
 * edit) refused every migration, so the database could never be upgraded;
 * verify names it. The rows are counted per table and the table they
 * refer to, in a temporary table of a row per such pair (at most one per
 * foreign key), before the first migration and after each: a migration
 * may rebuild a table (12, 20, 30), giving its rows new rowids, so the
 * rows themselves cannot be compared. A migration is refused where the
 * rows referring to missing rows of a table grew in number, summed over
 * the tables holding them: schema 19 moves member_days' rows, those of a
 * missing member too, into activity_days (the price: a migration dropping
 * such a row could hide a new one of the same missing table behind it).
 * Each count after a migration is the next one's before: one scan of the
 * references per migration, as before, and one before the first. The
 * temporary tables change in the migration's transaction, and are put
 * back with it when it is rolled back.
 */
#define DANGLING_BEFORE "temp.pgw_dangling_before"
#define DANGLING_AFTER  "temp.pgw_dangling_after"
#define COUNT_DANGLING(table)                                                                      \
    "CREATE TABLE " table " AS SELECT \"table\" AS child, parent, count(*) AS n"                   \
    " FROM pragma_foreign_key_check GROUP BY child, parent"

/* The first table with more rows referring to missing rows of a table
 * than before the migration, if the rows referring to missing rows of
 * that table, summed over every table holding them, grew too. */
#define DANGLING_GREW                                                                              \
    "SELECT a.child, a.parent, a.n, coalesce(b.n, 0) FROM " DANGLING_AFTER " a"                    \
    " LEFT JOIN " DANGLING_BEFORE " b ON b.child = a.child AND b.parent = a.parent"                \
    " WHERE a.n > coalesce(b.n, 0)"                                                                \
    " AND (SELECT sum(n) FROM " DANGLING_AFTER " WHERE parent = a.parent)"                         \
    " > (SELECT coalesce(sum(n), 0) FROM " DANGLING_BEFORE " WHERE parent = a.parent)"             \
    " ORDER BY a.child, a.parent LIMIT 1"

/* In the first migration's transaction, before its SQL: the count
 * check_foreign_keys holds it to. */
static int count_dangling(pgw_store *s, pgw_err *err)
{
    return is_postgres(s) ? PGW_OK
                          : exec(s, COUNT_DANGLING(DANGLING_BEFORE),
                                 "counting references to missing rows", err);
}

/* PGW_ESTATE naming the table that migration v -> v + 1 left with more
 * references to missing rows than it found (count_dangling); then the
 * count after it is the next migration's before. */
static int check_foreign_keys(pgw_store *s, int64_t v, pgw_err *err)
{
    if (is_postgres(s))
        return PGW_OK;
    pgw_sql_stmt *st = NULL;
    int rc = exec(s, COUNT_DANGLING(DANGLING_AFTER), "counting references to missing rows", err);
    if (rc == PGW_OK && pgw_sql_prepare(s->db, DANGLING_GREW, false, &st, NULL) != PGW_OK)
        rc = db_error(s, PGW_EIO, "comparing references to missing rows", err);
    int step = rc == PGW_OK ? pgw_sql_step(st) : PGW_SQL_DONE;
    if (step == PGW_SQL_ROW)
        rc = pgw_err_set_database(
            err, PGW_ESTATE,
            "%s: the migration to schema %lld left rows of table %.64s referring "
            "to missing rows of %.64s: %lld, against %lld before it; the migration "
            "was not applied",
            s->path, (long long)v + 1, pgw_sql_column_text(st, 0), pgw_sql_column_text(st, 1),
            (long long)pgw_sql_column_int64(st, 2), (long long)pgw_sql_column_int64(st, 3));
    else if (rc == PGW_OK && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "comparing references to missing rows", err);
    pgw_sql_finalize(st);
    if (rc == PGW_OK)
        rc = exec(s,
                  "DELETE FROM " DANGLING_BEFORE ";"
                  "INSERT INTO " DANGLING_BEFORE " SELECT * FROM " DANGLING_AFTER ";"
                  "DROP TABLE " DANGLING_AFTER,
                  "counting references to missing rows", err);
    return rc;
}

/*
 * The PostgreSQL text of migration `v`: the SQLite text with its types
 * and table options translated, so both databases get the same schema
 * from one source; text compares in byte order (COLLATE "C"), as SQLite's
 * does. Migrations 11 -> 12, 19 -> 20 and 29 -> 30 rebuilt the transfers,
 * notices and subscriptions tables, which SQLite needs to drop or change a
 * constraint; PostgreSQL changes it directly. 30 -> 31 reads JSON, which
 * the two spell differently.
 * Returns a malloc'd string (the caller frees it) or NULL.
 */
static char *pg_migration(int64_t v)
{
    static const char *const words[][2] = {
        {"INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"},
        {"INTEGER", "BIGINT"},
        {"BLOB", "BYTEA"},
        /* Byte order, whatever the database's collation: cursors and the
         * reconciliation matcher compare ids as C does (strcmp). */
        {"TEXT", "TEXT COLLATE \"C\""},
        {") STRICT, WITHOUT ROWID;", ");"},
        {") STRICT;", ");"},
        {"length(", "octet_length("},
    };
    const char *in =
        v == 11   ? "ALTER TABLE transfers DROP CONSTRAINT transfers_hash_key;"
        : v == 19 ? "ALTER TABLE notices DROP CONSTRAINT notices_state_check;"
                    "ALTER TABLE notices ADD CONSTRAINT notices_state_check"
                    " CHECK (" NOTICE_STATES ");"
        : v == 29 ? "ALTER TABLE subscriptions ADD COLUMN openid TEXT NOT NULL DEFAULT '';"
                    "ALTER TABLE subscriptions ALTER COLUMN openid DROP DEFAULT;"
                    "ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_pkey;"
                    "ALTER TABLE subscriptions ADD PRIMARY KEY"
                    " (member, openid, template_id);"
        /* The answers are the gateway's JSON (or ''): jsonb reads them,
         * nested CASEs, as PostgreSQL orders nothing else. */
        /* One trigger function for every change of a lot, resolving
         * `members` as the migration did whatever the session changing a
         * lot has for search_path (a DBA's psql, say: R1). */
        : v == 32 ? "ALTER TABLE members ADD COLUMN lots_left INTEGER NOT NULL DEFAULT 0"
                    " CHECK (lots_left >= 0);"
                    "ALTER TABLE members ADD COLUMN lots_held INTEGER NOT NULL DEFAULT 0"
                    " CHECK (lots_held >= 0);" LOTS_SUMS_BACKFILL
                    "CREATE FUNCTION pgw_lots_sums() RETURNS trigger LANGUAGE plpgsql"
                    " SET search_path FROM CURRENT AS $$"
                    " BEGIN IF TG_OP = 'UPDATE' AND OLD.member = NEW.member THEN"
                    " UPDATE members SET lots_left = lots_left + NEW.left_points - OLD.left_points,"
                    " lots_held = lots_held + NEW.held - OLD.held WHERE id = NEW.member;"
                    " RETURN NULL; END IF;"
                    " IF TG_OP <> 'INSERT' THEN UPDATE members SET lots_left = lots_left"
                    " - OLD.left_points, lots_held = lots_held - OLD.held WHERE id = OLD.member;"
                    " END IF;"
                    " IF TG_OP <> 'DELETE' THEN UPDATE members SET lots_left = lots_left"
                    " + NEW.left_points, lots_held = lots_held + NEW.held WHERE id = NEW.member;"
                    " END IF; RETURN NULL; END $$;"
                    "CREATE TRIGGER lots_sums AFTER INSERT OR DELETE OR UPDATE OF member,"
                    " left_points, held ON lots FOR EACH ROW EXECUTE FUNCTION pgw_lots_sums();"
                    "CREATE INDEX notices_marked ON notices (member, id)"
                    " WHERE hurried = 1 AND (state = 'pending' OR state = 'sending');"
        : v == 34 ? "DROP TRIGGER lots_sums ON lots;"
                    "CREATE TRIGGER lots_sums AFTER DELETE OR UPDATE OF member, left_points, held"
                    " ON lots FOR EACH ROW EXECUTE FUNCTION pgw_lots_sums();"
        : v == 30 ? "ALTER TABLE idempotency ADD COLUMN written_off INTEGER"
                    " CHECK (written_off >= 0);"
                    "UPDATE idempotency i SET written_off = CASE WHEN r.answer LIKE '{%'"
                    " THEN CASE WHEN jsonb_typeof(r.answer::jsonb -> 'written_off')"
                    " = 'number' THEN (r.answer::jsonb ->> 'written_off')::bigint END END"
                    " FROM key_records r WHERE r.id = i.record AND i.event_type = 'refund';"
                  : MIGRATIONS[v];
    /* 18 -> 19 copies member_days and drops it, 20 -> 21 idempotency and
     * events. An older instance still running could commit rows between
     * the copy and the drop, and lose them: the tables are locked first,
     * so that they wait and then fail. (SQLite's BEGIN IMMEDIATE already
     * keeps every other writer out.) In the order an older instance takes
     * them: an event reads its key, then writes its events row; locking
     * events first deadlocked with it. */
    const char *first = v == 18   ? "LOCK TABLE member_days IN ACCESS EXCLUSIVE MODE;"
                        : v == 20 ? "LOCK TABLE idempotency, events IN ACCESS EXCLUSIVE MODE;"
                        : v == 32 ? "LOCK TABLE members, lots IN ACCESS EXCLUSIVE MODE;"
                                  : "";
    /* The records' ids were given by the copy: their sequence goes on after
     * them. The copy's constraints take the names a table created as
     * idempotency would have, for a later migration to find. */
    const char *last = v == 20
                           ? "SELECT setval(pg_get_serial_sequence('key_records', 'id'),"
                             " (SELECT COALESCE(max(id), 0) + 1 FROM key_records), false);"
                             "ALTER TABLE idempotency RENAME CONSTRAINT idempotency_v21_pkey"
                             " TO idempotency_pkey;"
                             "ALTER TABLE idempotency RENAME CONSTRAINT idempotency_v21_record_fkey"
                             " TO idempotency_record_fkey;"
                             "ALTER TABLE idempotency RENAME CONSTRAINT"
                             " idempotency_v21_transfer_count_check"
                             " TO idempotency_transfer_count_check;"
                           : "";
    size_t cap = strlen(first) + strlen(in) * 4 + strlen(last) + 1; /* no word grows over 4x */
    char *out = malloc(cap), *o = out;
    if (out == NULL)
        return NULL;
    memcpy(o, first, strlen(first));
    o += strlen(first);
    while (*in != '\0') {
        size_t w = 0;
        while (w < sizeof(words) / sizeof(words[0]) &&
               strncmp(in, words[w][0], strlen(words[w][0])) != 0)
            w++;
        if (w == sizeof(words) / sizeof(words[0])) {
            *o++ = *in++;
            continue;
        }
        size_t n = strlen(words[w][1]);
        PGW_ASSERT((size_t)(o - out) + n < cap);
        memcpy(o, words[w][1], n);
        o += n;
        in += strlen(words[w][0]);
    }
    memcpy(o, last, strlen(last) + 1);
    return out;
}

/* Before 20 -> 21: PGW_ESTATE naming an events row without its key, which
 * the migration would drop with its table. pointsgw writes both in one
 * command; only a hand-edited database lacks one. */
static int migrate_events_first(pgw_store *s, pgw_err *err)
{
    pgw_sql_stmt *st = NULL; /* not kept: its table is about to go */
    int rc = pgw_sql_prepare(s->db,
                             "SELECT channel, source, event_id FROM events e WHERE NOT EXISTS"
                             " (SELECT 1 FROM idempotency i WHERE i.key = e.channel || ':'"
                             " || e.source || ':' || e.event_id) LIMIT 1",
                             false, &st, err);
    if (rc != PGW_OK)
        return rc;
    int step = pgw_sql_step(st);
    if (step == PGW_SQL_ROW)
        rc = pgw_err_set_database(
            err, PGW_ESTATE,
            "%s: event %.32s:%.32s:%.128s has no idempotency record; schema 21 keeps "
            "events with their keys; the migration was not applied",
            s->path, pgw_sql_column_text(st, 0), pgw_sql_column_text(st, 1),
            pgw_sql_column_text(st, 2));
    else if (step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "looking for events without keys", err);
    pgw_sql_finalize(st);
    return rc;
}

/* Applies migration v -> v + 1 in the open transaction, the first of
 * this open's migrations when `first`. */
static int apply_migration(pgw_store *s, int64_t v, bool first, pgw_err *err)
{
    char bump[96];
    snprintf(bump, sizeof(bump),
             is_postgres(s) ? "UPDATE pgw_schema SET version = %lld" : "PRAGMA user_version = %lld",
             (long long)v + 1);
    int rc = first ? count_dangling(s, err) : PGW_OK;
    if (rc == PGW_OK && v == 20)
        rc = migrate_events_first(s, err);
    if (rc == PGW_OK && is_postgres(s)) {
        char *sql = pg_migration(v);
        rc = sql ? exec(s, sql, "migrating the schema", err)
                 : pgw_err_set(err, PGW_ENOMEM, "out of memory migrating %s", s->path);
        free(sql);
    } else if (rc == PGW_OK) {
        rc = exec(s, MIGRATIONS[v], "migrating the schema", err);
    }
    if (rc == PGW_OK)
        rc = check_foreign_keys(s, v, err);
    if (rc == PGW_OK)
        rc = exec(s, bump, "recording the schema version", err);
    return rc;
}

/*
 * PostgreSQL: how long a migration waits for a table another session holds,
 * and how often it tries. Its request for an exclusive lock queues every
 * later use of that table behind it, the instances still serving included,
 * so it must not wait long: a busy moment passes between tries, a long
 * transaction (a report, a forgotten psql session) is the operator's to
 * end. SQLite waits BUSY_TIMEOUT_MS once; its waiting holds up nobody.
 */
#define PG_MIGRATE_LOCK_WAIT "3s"
#define PG_MIGRATE_TRIES     3
#define PG_MIGRATE_PAUSE_MS  1000

/* Migration v -> v + 1 in a transaction of its own, tried again on
 * PostgreSQL while a lock it needs was not free. Only then: after a lost
 * connection the session's advisory lock (migrate) is gone, and another
 * instance may be migrating. */
static int migrate_step(pgw_store *s, int64_t v, bool first, pgw_err *err)
{
    int tries = is_postgres(s) ? PG_MIGRATE_TRIES : 1, rc = PGW_OK;
    bool on_lock = false;
    for (int i = 0; i < tries && (i == 0 || on_lock); i++) {
        if (i > 0)
            nanosleep(&(struct timespec){PG_MIGRATE_PAUSE_MS / 1000,
                                         (PG_MIGRATE_PAUSE_MS % 1000) * 1000000L},
                      NULL);
        /* The chain lock, as every write holds it: an older instance's
         * write past its schema check commits before the migration reads
         * what it wrote (schema 25 read the lots under one, and lost its
         * expiry), and the next one finds the new version and refuses. */
        rc = exec(s,
                  is_postgres(s) ? "BEGIN; SET LOCAL lock_timeout = '" PG_MIGRATE_LOCK_WAIT "';"
                                   " SELECT pg_advisory_xact_lock(" PG_LOCK_CHAIN ")"
                                 : "BEGIN IMMEDIATE",
                  "starting a migration", err);
        if (rc == PGW_OK)
            rc = apply_migration(s, v, first, err);
        if (rc == PGW_OK)
            rc = exec(s, "COMMIT", "committing a migration", err);
        on_lock = rc != PGW_OK && pgw_sql_failed_on_lock(s->db);
        /* On PostgreSQL a ROLLBACK that fails lost the session, and its
         * advisory lock with it: the next BEGIN would reconnect without a
         * word. (SQLite's fails when BEGIN IMMEDIATE found the lock taken:
         * no transaction was open.) */
        if (rc != PGW_OK && exec(s, "ROLLBACK", "rolling back a migration", NULL) != PGW_OK &&
            is_postgres(s))
            on_lock = false;
    }
    if (!on_lock || err == NULL)
        return rc;
    char last[sizeof(err->msg)];
    snprintf(last, sizeof(last), "%s", err->msg);
    return pgw_err_set(err, rc,
                       "migrating to schema %lld gave up after %d tr%s (%s): another session "
                       "holds a table it changes, or a write that does not end; end that "
                       "session's transaction (PostgreSQL lists them in pg_stat_activity) and "
                       "start pointsgw again",
                       (long long)v + 1, tries, tries > 1 ? "ies" : "y", last);
}

static int migrate_steps(pgw_store *s, pgw_err *err)
{
    int64_t version = 0;
    int rc = read_user_version(s, &version, err);
    if (rc != PGW_OK)
        return rc;
    if (version > PGW_STORE_SCHEMA_VERSION)
        return pgw_err_set_database(err, PGW_ESTATE,
                                    "%s: the database is at schema version %lld, newer than this "
                                    "pointsgw (%d); run the newer pointsgw that wrote it",
                                    s->path, (long long)version, PGW_STORE_SCHEMA_VERSION);
    for (int64_t v = version; rc == PGW_OK && v < PGW_STORE_SCHEMA_VERSION; v++)
        rc = migrate_step(s, v, v == version, err);
    /* The counts of references to missing rows (check_foreign_keys) are
     * of no use once the migrations end, applied or not. */
    int dropped = PGW_OK;
    if (!is_postgres(s) && version < PGW_STORE_SCHEMA_VERSION)
        dropped = exec(s, "DROP TABLE IF EXISTS " DANGLING_BEFORE,
                       "forgetting references to missing rows", rc == PGW_OK ? err : NULL);
    return rc != PGW_OK ? rc : dropped;
}

/* PostgreSQL: whether the database has our schema table. */
static int pg_has_schema(pgw_store *s, bool *has, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc =
        pgw_sql_prepare(s->db, "SELECT to_regclass('pgw_schema') IS NOT NULL", false, &st, err);
    if (rc == PGW_OK && pgw_sql_step(st) != PGW_SQL_ROW)
        rc = db_error(s, PGW_EIO, "looking for the schema", err);
    if (rc == PGW_OK)
        *has = pgw_sql_column_int64(st, 0) != 0;
    pgw_sql_finalize(st);
    return rc;
}

/*
 * Whether the database is one of ours, asked before anything is set (page
 * size and WAL mode write to the file). Without `create`: PGW_ENOTFOUND
 * unless it is, as for a missing SQLite file (`pointsgw verify` on a wrong
 * name must not call it a valid, empty log); an empty PostgreSQL database,
 * an empty file or another program's has no schema version. With it, an
 * empty one becomes ours, but a SQLite file holding another program's
 * tables is refused: migrating it left our tables in their database.
 * A file with our tables but no version (restored from sqlite3's .dump,
 * which drops the header's user_version) is refused either way, saying so.
 */
static int check_ours(pgw_store *s, bool create, pgw_err *err)
{
    bool ours = false;
    int64_t version = 0, tables = 0, log = 0;
    int rc = is_postgres(s) ? pg_has_schema(s, &ours, err) : read_user_version(s, &version, err);
    if (rc != PGW_OK || ours || version != 0 || (is_postgres(s) && create))
        return rc;
    pgw_sql_stmt *st = NULL;
    if (!is_postgres(s))
        rc = prepare(
            s, "SELECT count(*), count(*) FILTER (WHERE name = 'transfers') FROM sqlite_master",
            &st, err);
    if (st != NULL && pgw_sql_step(st) == PGW_SQL_ROW) {
        tables = pgw_sql_column_int64(st, 0);
        log = pgw_sql_column_int64(st, 1);
    } else if (st != NULL) {
        rc = db_error(s, PGW_EIO, "looking at the file", err);
    }
    if (st != NULL)
        release(s, st);
    if (rc == PGW_OK && log > 0) /* sqlite3's .dump writes no user_version */
        return pgw_err_set_database(
            err, PGW_EINVAL,
            "%s holds a transfers table but no schema version: a copy restored "
            "from sqlite3's .dump loses it; restore one `pointsgw backup` made",
            s->path);
    if (rc == PGW_OK && !create)
        return pgw_err_set_database(err, PGW_ENOTFOUND, "%s: no pointsgw database there", s->path);
    if (rc == PGW_OK && tables > 0)
        rc = pgw_err_set_database(
            err, PGW_EINVAL,
            "%s holds another program's tables and no pointsgw schema: not ours "
            "to change",
            s->path);
    return rc;
}

static int migrate(pgw_store *s, pgw_err *err)
{
    if (is_postgres(s)) {
        /* The version row, then the migrations under a session lock. */
        int rc = exec(s,
                      "SELECT pg_advisory_lock(" PG_LOCK_MIGRATE ");"
                      "CREATE TABLE IF NOT EXISTS pgw_schema (version BIGINT NOT NULL);"
                      "INSERT INTO pgw_schema SELECT 0 WHERE NOT EXISTS"
                      " (SELECT 1 FROM pgw_schema)",
                      "preparing the schema", err);
        if (rc == PGW_OK)
            rc = migrate_steps(s, err);
        int unlock = exec(s, "SELECT pg_advisory_unlock(" PG_LOCK_MIGRATE ")",
                          "ending the migration", rc == PGW_OK ? err : NULL);
        return rc != PGW_OK ? rc : unlock;
    }
    /* Foreign keys are off (configure): a table rebuilt is dropped without
     * cascading into the rows referring to it; before each migration
     * commits, it is checked to have left no reference leading nowhere
     * that it did not find (check_foreign_keys). */
    return migrate_steps(s, err);
}

static int prepare_statements(pgw_store *s, pgw_err *err)
{
    for (size_t i = 0; i < ST_COUNT; i++) {
        PGW_ASSERT(STATEMENTS[i] != NULL);
        int rc = pgw_sql_prepare(s->db, STATEMENTS[i], true, &s->st[i], err);
        if (rc != PGW_OK)
            return rc;
    }
    return PGW_OK;
}

/*
 * Waiting for another connection's lock, up to s->busy_limit_ms. SQLite's
 * own handler sleeps 1, 2, 5, 10 ... 100 ms between tries: a courier
 * waiting for the lock behind the writer, whose transactions follow each
 * other within a millisecond, slept through dozens of them and starved
 * (notices fell behind at 1,000 purchases/s). Sleeps of 50 us growing to
 * 2 ms take the lock between two of the writer's transactions.
 */
static int busy_wait(void *arg, int count)
{
    pgw_store *s = arg;
    int64_t now = pgw_monotonic_us();
    if (count == 0)
        s->busy_since_us = now;
    if (now - s->busy_since_us >= s->busy_limit_ms * 1000)
        return 0; /* SQLITE_BUSY to the caller */
    long us = 50L << (count < 6 ? count : 6);
    struct timespec pause = {0, (us < 2000 ? us : 2000) * 1000};
    nanosleep(&pause, NULL);
    return 1;
}

/* Connection settings; see the top of this file for why synchronous=FULL.
 * PostgreSQL's defaults (synchronous_commit = on) are what we need. */
static int configure(pgw_store *s, pgw_err *err)
{
    if (is_postgres(s))
        return PGW_OK;
    /* 2 KiB pages for a new database (an existing one keeps its own). Most
     * of a purchase's writes are single-row inserts at random places of an
     * index (a member's lots, history, activity); each rewrites one whole
     * page into the WAL at commit, so smaller pages write less. Measured at
     * batch 1024 (bench/RESULTS.md): purchases 12k/s with 4 KiB pages, 21k/s
     * with 2 KiB, 18k/s with 1 KiB (deeper trees). Settable only before WAL
     * mode is on. */
    int rc = exec(s, "PRAGMA page_size = 2048", "setting the page size", err);
    if (rc == PGW_OK)
        rc = exec(s, "PRAGMA journal_mode = WAL", "enabling WAL", err);
    if (rc == PGW_OK)
        rc = exec(s, "PRAGMA synchronous = FULL", "setting synchronous", err);
    /*
     * Foreign keys unchecked as rows are written: every reference a writer
     * inserts names a row the same transaction read or wrote (a purchase's
     * lot, earn and days name the member it read or enrolled and the
     * transfers it appended; a key its record, inserted just before), and
     * none of the referenced tables loses a row. The checks were one more
     * B-tree seek per reference, ~7% of the writer's instructions per
     * purchase (bench/RESULTS.md). verify checks them all
     * (dangling_reference), and every migration that it made none
     * (check_foreign_keys); PostgreSQL still checks them as it goes, so
     * a command that wrote a dangling reference fails in its tests there.
     */
    if (rc == PGW_OK)
        rc = exec(s, "PRAGMA foreign_keys = OFF", "setting foreign keys", err);
    /* A 64 MiB page cache keeps the indexes' hot pages in memory. */
    return rc == PGW_OK ? pgw_store_set_cache_kib(s, PGW_STORE_CACHE_KIB, err) : rc;
}

int pgw_store_set_cache_kib(pgw_store *s, int64_t kib, pgw_err *err)
{
    PGW_ASSERT(kib >= PGW_STORE_CACHE_KIB_MIN && kib <= PGW_STORE_CACHE_KIB);
    if (is_postgres(s))
        return PGW_OK;
    char sql[48];
    snprintf(sql, sizeof(sql), "PRAGMA cache_size = -%lld", (long long)kib);
    return exec(s, sql, "sizing the page cache", err);
}

/* The connection alone: nothing checked, set, migrated or prepared yet.
 * *out is the caller's to close (pgw_store_close), also on failure. */
static int connect_store(const char *url, bool create, pgw_store **out, pgw_err *err)
{
    pgw_store *s = *out = calloc(1, sizeof(*s));
    if (s == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory opening a database");
    s->wal_fd = -1;
    s->db_fd = -1;
    s->busy_limit_ms = BUSY_TIMEOUT_MS;
    PGW_STATIC_ASSERT(PGW_STORE_URL_MAX == PGW_SQL_URL_MAX, "one bound on a URL");
    int rc = pgw_sql_open(url, create, &s->db, err);
    if (rc == PGW_OK)
        snprintf(s->path, sizeof(s->path), "%s", pgw_sql_name(s->db));
    /* Before the first read: another process's last connection closing
     * holds the file a moment (a checkpoint, the WAL deleted), and the
     * schema version read then failed at once, "database is locked". */
    if (rc == PGW_OK && !is_postgres(s))
        sqlite3_busy_handler(pgw_sql_sqlite_handle(s->db), busy_wait, s);
    return rc;
}

/*
 * A writer's SQLite file must be writable: opened read-only (its mode, the
 * user running the gateway), serve started, said healthy, and answered
 * every write 503 (the operator review). Refused at the start instead.
 */
static int check_writable(pgw_store *s, pgw_err *err)
{
    if (is_postgres(s) || sqlite3_db_readonly(pgw_sql_sqlite_handle(s->db), "main") != 1)
        return PGW_OK;
    return pgw_err_set_database(
        err, PGW_ESTATE,
        "%s: the database file is read-only for this user: nothing could be "
        "written (check its owner and mode)",
        s->path);
}

/*
 * SQLite makes the -wal and -shm files beside the database, so its folder
 * must be writable too: a folder that was not failed as "reading the
 * schema version: attempt to write a readonly database", which names
 * neither the folder nor the cause (the operations review).
 */
static int check_folder_writable(pgw_store *s, pgw_err *err)
{
    if (is_postgres(s))
        return PGW_OK;
    char dir[sizeof(s->path)];
    bool fits = pgw_path_folder(s->path, dir, sizeof(dir));
    PGW_ASSERT(fits); /* a folder is no longer than its path, "." than a name */
    if (access(dir, W_OK | X_OK) == 0)
        return PGW_OK;
    return pgw_err_set_database(
        err, PGW_ESTATE,
        "%s: its folder %s is not writable for this user (%s): SQLite keeps the "
        "-wal and -shm files beside the database",
        s->path, dir, strerror(errno));
}

/*
 * An open that failed on a damaged file says so, and what to do: SQLite's
 * words alone ("reading the schema version: database disk image is
 * malformed") did not say that the file is what is wrong, nor that a
 * backup is the way back. Whatever the command, nothing was written.
 */
static int said_damaged(pgw_store *s, int rc, pgw_err *err)
{
    if (rc == PGW_OK || s == NULL || s->db == NULL || !pgw_sql_failed_on_damage(s->db) ||
        err == NULL)
        return rc;
    char why[PGW_ERR_MSG_MAX];
    size_t n = strlen(s->path);
    const char *said = err->msg; /* "PATH: what: SQLite's words": the path is said first */
    if (strncmp(said, s->path, n) == 0 && strncmp(said + n, ": ", 2) == 0)
        said += n + 2;
    snprintf(why, sizeof(why), "%s", said);
    return pgw_err_set_database(err, PGW_EIO,
                                "%s is damaged or not a SQLite database (%s); nothing was changed: "
                                "restore the last good backup (README: Restore)",
                                s->path, why);
}

/* An open's end: its statements prepared and *out set, or s closed. */
static int finish_open(pgw_store *s, int rc, pgw_store **out, pgw_err *err)
{
    if (rc == PGW_OK)
        rc = prepare_statements(s, err);
    rc = said_damaged(s, rc, err);
    if (rc != PGW_OK) {
        pgw_store_close(s);
        return rc;
    }
    *out = s;
    return PGW_OK;
}

int pgw_store_open(const char *url, bool create, pgw_store **out, pgw_err *err)
{
    *out = NULL;
    pgw_store *s = NULL;
    int rc = connect_store(url, create, &s, err);
    if (rc == PGW_OK && create)
        rc = check_writable(s, err);
    if (rc == PGW_OK)
        rc = check_folder_writable(s, err);
    if (rc == PGW_OK)
        rc = check_ours(s, create, err);
    if (rc == PGW_OK)
        rc = configure(s, err);
    if (rc == PGW_OK)
        rc = migrate(s, err);
    return finish_open(s, rc, out, err);
}

/* A read-only connection to the SQLite file of `url`, as connect_store's. */
static int connect_read_only(const char *url, bool immutable, pgw_store **out, pgw_err *err)
{
    pgw_store *s = *out = calloc(1, sizeof(*s));
    if (s == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory opening a database");
    s->wal_fd = -1;
    s->db_fd = -1;
    s->busy_limit_ms = BUSY_TIMEOUT_MS;
    int rc = pgw_sql_open_read_only(url, immutable, &s->db, err);
    if (rc == PGW_OK) {
        snprintf(s->path, sizeof(s->path), "%s", pgw_sql_name(s->db));
        sqlite3_busy_handler(pgw_sql_sqlite_handle(s->db), busy_wait, s);
    }
    return rc;
}

/* Whether `path` + `suffix` exists (or cannot be told not to). */
static bool beside_exists(const char *path, const char *suffix)
{
    char name[PATH_MAX];
    struct stat st;
    if (snprintf(name, sizeof(name), "%s%s", path, suffix) >= (int)sizeof(name))
        return true;
    return stat(name, &st) == 0 || errno != ENOENT;
}

/* Whether the header of the file at `path` says WAL (bytes 18 and 19 are 2). */
static bool header_says_wal(const char *path)
{
    uint8_t header[20];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool wal = pread(fd, header, sizeof(header), 0) == (ssize_t)sizeof(header) && header[18] == 2 &&
               header[19] == 2;
    close(fd);
    return wal;
}

/*
 * Whether the read-only open of s failed only because the WAL's index (the
 * -shm) cannot be made here (read-only media, a folder not ours), and the
 * file may be read as immutable instead: a WAL database with neither a -wal
 * (a connection open on it anywhere keeps one, so none is writing it) nor a
 * -journal (an interrupted write in rollback mode, which immutable would
 * read as committed) beside it.
 */
static bool only_the_index_failed(pgw_store *s)
{
    if (s == NULL || s->db == NULL)
        return false;
    int code = sqlite3_extended_errcode(pgw_sql_sqlite_handle(s->db));
    if (code != SQLITE_READONLY_DIRECTORY && code != SQLITE_READONLY_CANTINIT &&
        (code & 0xff) != SQLITE_CANTOPEN)
        return false;
    return header_says_wal(s->path) && !beside_exists(s->path, "-wal") &&
           !beside_exists(s->path, "-journal");
}

/* The read-only connection, its schema version read (only_the_index_failed
 * says when it is opened as immutable). */
static int open_read_only(const char *url, int64_t *version, pgw_store **out, pgw_err *err)
{
    int rc = connect_read_only(url, false, out, err);
    if (rc == PGW_OK)
        rc = check_ours(*out, false, err);
    if (rc == PGW_OK)
        return read_user_version(*out, version, err);
    if (rc == PGW_ENOTFOUND || rc == PGW_EINVAL || !only_the_index_failed(*out))
        return rc;
    pgw_store_close(*out);
    rc = connect_read_only(url, true, out, err);
    if (rc == PGW_OK)
        rc = check_ours(*out, false, err);
    return rc == PGW_OK ? read_user_version(*out, version, err) : rc;
}

int pgw_store_open_read_only(const char *url, int64_t *version, pgw_store **out, pgw_err *err)
{
    *out = NULL;
    *version = 0;
    pgw_store *s = NULL;
    int rc = open_read_only(url, version, &s, err);
    if (rc == PGW_OK && *version > PGW_STORE_SCHEMA_VERSION)
        rc = pgw_err_set_database(err, PGW_ESTATE,
                                  "%s: the database is at schema version %lld, newer than this "
                                  "pointsgw (%d); run the newer pointsgw that wrote it",
                                  s->path, (long long)*version, PGW_STORE_SCHEMA_VERSION);
    else if (rc == PGW_OK && *version < PGW_STORE_SCHEMA_VERSION)
        rc = pgw_err_set_database(err, PGW_ESTATE,
                                  "%s: the database is at schema version %lld, older than this "
                                  "pointsgw (%d): opened read-only, it is not migrated",
                                  s->path, (long long)*version, PGW_STORE_SCHEMA_VERSION);
    return finish_open(s, rc, out, err);
}

const char *pgw_store_name(const pgw_store *s)
{
    return s->path;
}

void pgw_store_close(pgw_store *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < ST_COUNT; i++)
        pgw_sql_finalize(s->st[i]);
    for (size_t i = 0; i < s->n_lazy; i++)
        pgw_sql_finalize(s->lazy[i]);
    pgw_sql_close(s->db);
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    if (s->db_fd >= 0)
        close(s->db_fd);
    free(s);
}

/* fsyncs what `path` names, opened with `flags` (O_DIRECTORY for a folder);
 * `named` is how a failure names it. */
static int sync_path(const char *path, int flags, const char *named, pgw_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return pgw_err_set(err, PGW_EIO, "syncing %s: %s", named, strerror(e));
    }
    close(fd);
    return PGW_OK;
}

/* fsyncs the directory holding `path`, so a newly created file in it stays. */
static int sync_directory_of(const char *path, pgw_err *err)
{
    char dir[PGW_STORE_URL_MAX + 8], named[PGW_STORE_URL_MAX + 32];
    if (!pgw_path_folder(path, dir, sizeof(dir)))
        return pgw_err_set(err, PGW_ETOOLARGE, "%.64s...: the path is too long", path);
    snprintf(named, sizeof(named), "the directory of %s", path);
    return sync_path(dir, O_DIRECTORY, named, err);
}

/* fsyncs the file at `path` (written by another connection's writes). */
static int sync_file(const char *path, pgw_err *err)
{
    return sync_path(path, 0, path, err);
}

/*
 * SQLite's own check of a connection's pages (PRAGMA quick_check(1)):
 * SQLITE_ROW with the first line of its first finding in `said` ("ok"
 * when none), or, for a file too damaged to say or a failure (busy, I/O),
 * SQLite's error code with its message in `said`. verify and backup both
 * ask it.
 */
static int quick_check(sqlite3 *lite, char *said, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(lite, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    const char *text = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    text = text != NULL ? text : sqlite3_errmsg(lite);
    static const char prefix[] = "*** in database main ***\n"; /* before each finding */
    if (strncmp(text, prefix, sizeof(prefix) - 1) == 0)
        text += sizeof(prefix) - 1;
    snprintf(said, cap, "%.*s", (int)strcspn(text, "\n"), text);
    sqlite3_finalize(st);
    return rc;
}

/* Whether quick_check finds the pages damaged or not a database at all,
 * what it found in `why`. Anything else it meets (busy, I/O, memory) is no
 * finding. */
static bool pages_damaged(sqlite3 *lite, char *why, size_t cap)
{
    int rc = quick_check(lite, why, cap);
    return rc == SQLITE_ROW ? strcmp(why, "ok") != 0
                            : (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

/* The copy VACUUM INTO made, checked before it replaces the last one:
 * VACUUM copies a table's rows as they are, so a damaged one (rowids out of
 * order) arrives damaged, and `verify` reads only the ledger's tables. The
 * check must finish and say "ok": one cut short (an I/O error, memory) is
 * no check, and this is the copy's only one. */
static int check_copy(const char *path, pgw_err *err)
{
    sqlite3 *lite = NULL;
    char why[256] = "";
    int rc = sqlite3_open_v2(path, &lite, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK)
        snprintf(why, sizeof(why), "%s", lite ? sqlite3_errmsg(lite) : "out of memory");
    else
        rc = quick_check(lite, why, sizeof(why));
    sqlite3_close(lite);
    return rc != SQLITE_ROW || strcmp(why, "ok") != 0
               ? pgw_err_set(err, PGW_EIO, "checking the copy %s: %s", path, why)
               : PGW_OK;
}

/* VACUUM INTO `path`: one read transaction (a snapshot; the writer goes
 * on), the header's user_version kept, which `.dump` drops. */
static int copy_into(pgw_store *s, const char *path, int64_t *version, pgw_err *err)
{
    int rc = check_ours(s, false, err);
    if (rc == PGW_OK)
        rc = read_user_version(s, version, err);
    pgw_sql_stmt *st = NULL;
    if (rc == PGW_OK)
        rc = prepare(s, "VACUUM INTO ?", &st, err);
    if (rc == PGW_OK) {
        pgw_sql_bind_text(st, 1, path);
        if (pgw_sql_step(st) != PGW_SQL_DONE)
            rc = db_error(s, PGW_EIO, "copying the database", err);
        release(s, st);
    }
    return rc == PGW_OK ? check_copy(path, err) : rc;
}

/* Where the copy is made: beside the file it replaces, named so. */
#define PARTIAL_SUFFIX ".partial-XXXXXX"
/* The longest file a copy replaces: the copy's longest name,
 * FILE.partial-XXXXXX-journal (VACUUM INTO's), within SQLite's limit on a
 * path (unix: 512, PGW_STORE_URL_MAX too), so the copy never fails as
 * "unable to open"; the URL its verify opens (sqlite:FILE.partial-XXXXXX)
 * is shorter. */
#define BACKUP_PATH_MAX (PGW_STORE_URL_MAX - (sizeof(PARTIAL_SUFFIX "-journal") - 1))

static int verify_ledger(pgw_store *s, pgw_verify_report *r, pgw_err *err);

/*
 * The copy's ledger, verified before it replaces the last one: renamed
 * first, a copy of a tampered or broken log took the last good copy's
 * place and was found out only after. A copy of an older schema is not
 * verified here (opening it would migrate it): the pointsgw that wrote it
 * does that. Its pages are not checked again: check_copy did, before it
 * was opened, and quick_check reads every page (it ran twice, the second
 * time pgw_store_verify's own).
 */
static int verify_copy(const char *path, const char *out, int64_t version,
                       pgw_verify_report *report, pgw_err *err)
{
    if (version != PGW_STORE_SCHEMA_VERSION)
        return PGW_OK;
    /* Sized for any path; backup_target keeps it within PGW_STORE_URL_MAX. */
    char url[sizeof("sqlite:") + PGW_STORE_URL_MAX + sizeof(PARTIAL_SUFFIX)];
    pgw_store *copy = NULL;
    pgw_err why;
    pgw_err_clear(&why);
    snprintf(url, sizeof(url), "sqlite:%s", path);
    int rc = pgw_store_open(url, false, &copy, &why);
    if (rc == PGW_OK)
        rc = verify_ledger(copy, report, &why);
    pgw_store_close(copy);
    if (rc != PGW_OK)
        return pgw_err_set(err, PGW_EIO, "verifying the copy: %s; %s was left as it was", why.msg,
                           out);
    if (!report->ok)
        return pgw_err_set(err, PGW_EIO,
                           "the copy does not verify (%s): the database's log is broken; %s "
                           "was left as it was",
                           report->problem, out);
    return PGW_OK;
}

/*
 * When the copy failed because the source is damaged, says so: SQLite
 * reports a damaged page as whatever reading it ran into ("database or
 * disk is full", "unable to open database: <the copy>"), which sends an
 * operator to the disk or the copy's folder.
 */
static int blame_damage(pgw_store *s, const char *out, int rc, pgw_err *err)
{
    char why[256];
    if (rc != PGW_EIO || !pages_damaged(pgw_sql_sqlite_handle(s->db), why, sizeof(why)))
        return rc;
    return pgw_err_set_database(
        err, PGW_EIO,
        "%s is damaged or not a SQLite database (SQLite's check: %s); nothing "
        "was written to %s",
        s->path, why, out);
}

/* Whether `path` would land on the database `db` or one of its companion
 * files: renamed over them, the copy met the old WAL, and the log was lost.
 * By name (a companion may not exist yet) and by inode (a hard link), the
 * name made whole as serve's lock makes it (util/path.h pgw_path_whole). */
static bool names_the_database(const char *path, const char *db)
{
    char real_db[PATH_MAX], out[PATH_MAX];
    struct stat a, b;
    if (stat(path, &a) == 0 && stat(db, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return true;
    if (realpath(db, real_db) == NULL || !pgw_path_whole(path, out))
        return false; /* no database there: pgw_sql_open says so */
    static const char *const companions[] = {"",
                                             "-wal",
                                             "-shm",
                                             "-journal",
                                             PGW_STORE_SERVE_LOCK_SUFFIX,
                                             PGW_STORE_NONCES_SUFFIX,
                                             PGW_STORE_NONCES_NEW_SUFFIX};
    size_t n = strlen(real_db);
    for (size_t i = 0; i < sizeof(companions) / sizeof(companions[0]); i++) {
        if (strncmp(out, real_db, n) == 0 && strcmp(out + n, companions[i]) == 0)
            return true;
    }
    return false;
}

/*
 * The file the copy replaces: `path`, or the file a link there names (or
 * would, not made yet), link after link. A link to a backup volume is how
 * operators point a nightly job at it: renamed over, the link became a
 * local file and the volume kept the old copy. Made beside the file it
 * names, the copy is renamed within that folder, as atomic as without.
 */
static int backup_target(const char *path, char target[PGW_STORE_URL_MAX + 1], pgw_err *err)
{
    char next[2 * PGW_STORE_URL_MAX + 2];
    snprintf(next, sizeof(next), "%s", path);
    for (int hops = 0; hops <= 40; hops++) { /* 40: as the kernel's ELOOP */
        size_t len = strlen(next);
        if (len > BACKUP_PATH_MAX)
            return pgw_err_set(err, PGW_EINVAL, "%.64s...: the path is too long", next);
        memcpy(target, next, len + 1);
        bool was_link; /* not one, or nothing there: the target */
        if (!pgw_path_link_step(target, next, sizeof(next), &was_link))
            return pgw_err_set(err, PGW_EINVAL, "%.64s...: the path is too long", next);
        if (!was_link)
            return PGW_OK;
    }
    return pgw_err_set(err, PGW_EINVAL, "%s: too many levels of links", path);
}

/* Opened as it is, not through pgw_store_open: that would migrate it
 * first, and a copy taken before an upgrade must be of what was there. */
int pgw_store_backup(const char *url, const char *path, int64_t *version, pgw_verify_report *report,
                     pgw_store_backup_guard *guard, pgw_err *err)
{
    if (strncmp(url, "sqlite:", 7) != 0)
        return pgw_err_set(err, PGW_EINVAL,
                           "backup copies a SQLite database; back PostgreSQL up with its own "
                           "tools (pg_dump)");
    char out[PGW_STORE_URL_MAX + 1];
    int rc = backup_target(path, out, err);
    if (rc != PGW_OK)
        return rc;
    struct stat st; /* refused before the copy, not at its rename */
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
        return pgw_err_set(err, PGW_EINVAL, "%s is a folder: --out names the copy's file", out);
    if (names_the_database(out, url + 7))
        return pgw_err_set(err, PGW_EINVAL,
                           "%s is the database itself or one of its files: the copy goes "
                           "elsewhere",
                           out);
    char partial[PGW_STORE_URL_MAX + sizeof(PARTIAL_SUFFIX)];
    snprintf(partial, sizeof(partial), "%s" PARTIAL_SUFFIX, out);
    int fd = mkstemp(partial); /* 0600: members' data */
    if (fd < 0)
        return pgw_err_set(err, PGW_EIO, "creating %s: %s", partial, strerror(errno));
    close(fd);
    if (guard != NULL)
        guard(partial);
    pgw_store *s = NULL;
    rc = connect_store(url, false, &s, err);
    if (rc == PGW_OK)
        rc = copy_into(s, partial, version, err);
    if (rc != PGW_OK && s != NULL && s->db != NULL)
        rc = blame_damage(s, out, rc, err);
    pgw_store_close(s);
    if (rc == PGW_OK)
        rc = verify_copy(partial, out, *version, report, err);
    if (rc == PGW_OK)
        rc = sync_file(partial, err); /* after verify: opening it may write its header */
    if (rc == PGW_OK && rename(partial, out) != 0)
        rc = pgw_err_set(err, PGW_EIO, "renaming %s to %s: %s", partial, out, strerror(errno));
    if (rc != PGW_OK)
        unlink(partial);
    if (guard != NULL)
        guard(NULL);
    return rc == PGW_OK ? sync_directory_of(out, err) : rc;
}

/*
 * Leaves COMMIT's sync of the WAL to pgw_store_sync. Through wal_vfs.h: the
 * connection stays synchronous=FULL, so that COMMIT still asks for its
 * sync, which is where the VFS writes the commit's gathered frames (one
 * write, not two per page), and skips only the fsync. Its checkpoints'
 * syncs, asked with SQLITE_SYNC_FULL once checkpoint_fullfsync is on, it
 * does. Set first: a WAL gathering before that would skip them too. When
 * the WAL is not the VFS's (a test's VFS over it), synchronous=NORMAL
 * writes each frame and skips the sync, as before the VFS.
 */
static int skip_commit_syncs(pgw_store *s, sqlite3 *lite, pgw_err *err)
{
    int rc = exec(s, "PRAGMA checkpoint_fullfsync = ON", "deferring sync", err);
    if (rc != PGW_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    int level = -1; /* FULL (2), set at open: what makes COMMIT ask for its sync */
    if (sqlite3_prepare_v2(lite, "PRAGMA synchronous", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        level = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    PGW_ASSERT(level == 2);
    pgw_err why;
    rc = pgw_wal_vfs_gather(lite, &why);
    if (rc == PGW_ESTATE)
        return exec(s, "PRAGMA synchronous = NORMAL", "deferring sync", err);
    return rc == PGW_OK ? PGW_OK : pgw_err_set_database(err, rc, "%s: %s", s->path, why.msg);
}

int pgw_store_defer_sync(pgw_store *s, pgw_err *err)
{
    PGW_ASSERT(s->wal_fd < 0 && !s->deferred);
    PGW_ASSERT(!pgw_sql_in_transaction(s->db));
    s->deferred = true;
    if (is_postgres(s))
        return PGW_OK; /* COMMIT returns once the server flushed its WAL */
    /* The WAL exists by now: opening the database read its schema version,
     * which opens (and creates) the WAL in WAL mode. */
    sqlite3 *lite = pgw_sql_sqlite_handle(s->db);
    const char *wal = sqlite3_filename_wal(sqlite3_db_filename(lite, "main"));
    int rc = PGW_OK;
    if (wal == NULL || wal[0] == '\0')
        rc = pgw_err_set_database(err, PGW_EIO, "%s: the database has no WAL file", s->path);
    else if ((s->wal_fd = open(wal, O_RDONLY | O_CLOEXEC)) < 0)
        rc = pgw_err_set_database(err, PGW_EIO, "%s: %s", wal, strerror(errno));
    if (rc == PGW_OK)
        rc = sync_directory_of(wal, err);
    if (rc == PGW_OK)
        rc = pgw_store_sync(s, err);
    if (rc == PGW_OK)
        rc = skip_commit_syncs(s, lite, err);
    if (rc != PGW_OK) {
        if (s->wal_fd >= 0)
            close(s->wal_fd);
        s->wal_fd = -1;
        s->deferred = false;
    }
    return rc;
}

int pgw_store_sync(pgw_store *s, pgw_err *err)
{
    PGW_ASSERT(s->deferred);
    if (s->fail_syncs)
        return pgw_err_set_database(
            err, PGW_EIO, "%s: syncing the WAL failed: Input/output error (test)", s->path);
    if (s->wal_fd >= 0 && fdatasync(s->wal_fd) != 0)
        return pgw_err_set_database(err, PGW_EIO, "%s: syncing the WAL failed: %s", s->path,
                                    strerror(errno));
    return PGW_OK;
}

int pgw_store_schema_version(pgw_store *s, int64_t *out, pgw_err *err)
{
    return read_user_version(s, out, err);
}

static int begin(pgw_store *s, const char *sql, const char *what, pgw_err *err)
{
    s->head_cached = false; /* another connection may have appended since */
    int rc = exec(s, sql, what, err);
    if (rc == PGW_OK)
        pgw_sql_mark_transaction(s->db, true);
    return rc;
}

/* One row of one kept statement's int64 columns 0..n-1 into out. */
static int read_int64_row(pgw_store *s, const char *sql, int64_t *out, int n, const char *what,
                          pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    if (prepare(s, sql, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, what, err);
    int rc = pgw_sql_step(st) == PGW_SQL_ROW ? PGW_OK : PGW_EIO;
    for (int i = 0; rc == PGW_OK && i < n; i++)
        out[i] = pgw_sql_column_int64(st, i);
    release(s, st);
    return rc == PGW_OK ? PGW_OK : db_error(s, PGW_EIO, what, err);
}

/*
 * The schema version and the newest period close (0: none): every write
 * transaction reads both under its lock, so a close committed before it
 * is seen by it, one committed after waited for it. One round trip on
 * PostgreSQL; on SQLite a header field and the last entry of
 * period_closes' primary key, two kept statements: the pragma as a table
 * (pragma_user_version) prepares its PRAGMA again at every step, which
 * made this read cost ten times the version's alone.
 */
static int read_version_and_close(pgw_store *s, int64_t *version, int64_t *closed, pgw_err *err)
{
    int64_t row[2] = {0, 0};
    int rc = is_postgres(s) ? read_int64_row(s,
                                             "SELECT version, (SELECT COALESCE(MAX(before_at), 0)"
                                             " FROM period_closes) FROM pgw_schema",
                                             row, 2, "reading the schema version", err)
                            : read_int64_row(s, "PRAGMA user_version", row, 1,
                                             "reading the schema version", err);
    if (rc == PGW_OK && !is_postgres(s))
        rc = read_int64_row(s, "SELECT COALESCE(MAX(before_at), 0) FROM period_closes", &row[1], 1,
                            "reading the period's close", err);
    *version = row[0];
    *closed = row[1];
    return rc;
}

/*
 * Once a write transaction holds the lock: the schema must still be this
 * pointsgw's. A newer pointsgw migrates the database when it opens it (an
 * upgrade, one instance at a time, or a newer binary's command beside an
 * older `serve`), and this one's statements would then write rows without
 * what the newer schema keeps with them (schema 19's running totals were
 * the first such case). So every write transaction refuses, loudly, until
 * this instance is replaced. One step of a prepared statement: a header
 * field on SQLite, one query on PostgreSQL.
 */
static int check_schema_unchanged(pgw_store *s, pgw_err *err)
{
    int64_t version = 0;
    int rc = read_version_and_close(s, &version, &s->closed_before, err);
    if (rc == PGW_OK && version != PGW_STORE_SCHEMA_VERSION)
        rc = pgw_err_set_database(
            err, PGW_ESTATE,
            "%s: the database is now at schema version %lld and this pointsgw "
            "writes version %d: a newer pointsgw migrated it; stop this one and "
            "run the newer",
            s->path, (long long)version, PGW_STORE_SCHEMA_VERSION);
    return rc;
}

/*
 * SQLite: PGW_EUNAVAILABLE when the file was deleted or replaced under us.
 * Writes went on into the unlinked file, answered 201, and were gone at
 * the next start, which made a new empty log: one stat() a transaction.
 */
static int check_file_in_place(pgw_store *s, pgw_err *err)
{
    int moved = 0;
    if (is_postgres(s) || sqlite3_file_control(pgw_sql_sqlite_handle(s->db), "main",
                                               SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK)
        return PGW_OK; /* not known: as before */
    return moved ? pgw_err_set_database(
                       err, PGW_EUNAVAILABLE,
                       "%s was deleted or replaced under the gateway: nothing is written; "
                       "put it back, or restart on the right file",
                       s->path)
                 : PGW_OK;
}

int pgw_store_begin(pgw_store *s, pgw_err *err)
{
    int moved = check_file_in_place(s, err);
    if (moved != PGW_OK)
        return moved;
    /* SQLite: IMMEDIATE takes the write lock now, so the chain head read
     * inside the transaction cannot change under us. PostgreSQL: the
     * chain lock does the same across instances (PG_LOCK_CHAIN). */
    int rc = begin(s,
                   is_postgres(s) ? "BEGIN ISOLATION LEVEL READ COMMITTED;"
                                    " SET LOCAL lock_timeout = '" PG_LOCK_WAIT "';"
                                    " SELECT pg_advisory_xact_lock(" PG_LOCK_CHAIN ")"
                                  : "BEGIN IMMEDIATE",
                   "beginning a transaction", err);
    if (rc == PGW_OK && (rc = check_schema_unchanged(s, err)) != PGW_OK)
        pgw_store_rollback(s, NULL);
    return rc;
}

int64_t pgw_store_closed_before(const pgw_store *s)
{
    return s->closed_before;
}

int pgw_store_begin_read(pgw_store *s, pgw_err *err)
{
    return begin(s, is_postgres(s) ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN",
                 "beginning a read", err);
}

bool pgw_store_is_remote(const pgw_store *s)
{
    return is_postgres(s);
}

bool pgw_store_failed_on_space(const pgw_store *s)
{
    return pgw_sql_failed_on_space(s->db);
}

int pgw_store_ping(pgw_store *s, pgw_err *err)
{
    PGW_ASSERT(!pgw_sql_in_transaction(s->db));
    int moved = check_file_in_place(s, err);
    return moved != PGW_OK ? moved : exec(s, "SELECT 1", "checking the database", err);
}

bool pgw_store_in_transaction(pgw_store *s)
{
    return pgw_sql_in_transaction(s->db);
}

int pgw_store_commit(pgw_store *s, pgw_err *err)
{
    s->closed_before = 0; /* the next transaction reads it again */
    pgw_sql_mark_transaction(s->db, false);
    int rc = pgw_sql_commit(s->db, err); /* a deferred key's failure: as exec's */
    return rc == PGW_ECONFLICT ? pgw_err_recode(err, PGW_EIO) : rc;
}

int pgw_store_rollback(pgw_store *s, pgw_err *err)
{
    s->head_cached = false;
    s->closed_before = 0;
    pgw_sql_mark_transaction(s->db, false);
    if (!pgw_sql_in_transaction(s->db))
        return PGW_OK; /* nothing open: the database already rolled back */
    return exec(s, "ROLLBACK", "rolling back", err);
}

/* Runs a prepared statement that returns no rows (one per command: no re-parsing). */
static int step_done(pgw_store *s, pgw_sql_stmt *st, const char *what, pgw_err *err)
{
    int step = pgw_sql_step(st);
    pgw_sql_reset(st);
    return step == PGW_SQL_DONE ? PGW_OK : db_error(s, step < 0 ? step : PGW_EIO, what, err);
}

/*
 * Runs a prepared statement whose result no caller reads: on PostgreSQL
 * only sent, its round trip shared with the next statement that waits,
 * which reports its failure (pgw_sql_send). A command's statements are
 * all waited for by its RELEASE at the latest (pgw_store_release), so a
 * failure stays the failure of the command that caused it.
 */
static int send_done(pgw_store *s, pgw_sql_stmt *st, const char *what, pgw_err *err)
{
    int step = pgw_sql_send(st);
    pgw_sql_reset(st);
    return step == PGW_SQL_DONE ? PGW_OK : db_error(s, step < 0 ? step : PGW_EIO, what, err);
}

int pgw_store_savepoint(pgw_store *s, pgw_err *err)
{
    return send_done(s, s->st[ST_SAVEPOINT], "starting a command", err);
}

int pgw_store_release(pgw_store *s, pgw_err *err)
{
    return step_done(s, s->st[ST_RELEASE], "finishing a command", err);
}

int pgw_store_rollback_to(pgw_store *s, pgw_err *err)
{
    s->head_cached = false;
    int rc = exec(s, "ROLLBACK TO pgw_command", "undoing a command", err);
    if (rc == PGW_OK)
        rc = exec(s, "RELEASE pgw_command", "undoing a command", err);
    return rc;
}

/* Copies a text column into a fixed array; false when it does not fit. */
static bool column_text(pgw_sql_stmt *st, int col, char *out, size_t cap)
{
    const char *text = pgw_sql_column_text(st, col);
    size_t len = pgw_sql_column_bytes(st, col);
    if (text == NULL || len >= cap)
        return false;
    memcpy(out, text, len + 1);
    return true;
}

/*
 * Steps a statement whose answer is one integer in its first column, and
 * resets it. No row is 0 where `none_ok` (a count of nothing), else a
 * fault (an aggregate always has its row).
 */
static int one_int64(pgw_store *s, pgw_sql_stmt *st, bool none_ok, int64_t *out, const char *what,
                     pgw_err *err)
{
    int step = pgw_sql_step(st);
    *out = step == PGW_SQL_ROW ? pgw_sql_column_int64(st, 0) : 0;
    pgw_sql_reset(st);
    return step == PGW_SQL_ROW || (none_ok && step == PGW_SQL_DONE)
               ? PGW_OK
               : db_error(s, PGW_EIO, what, err);
}

/* Steps a statement whose answer is a member's id column, perhaps NULL
 * (out ""), about `member`, and resets it. */
static int one_member_id(pgw_store *s, pgw_sql_stmt *st, const char *member, const char *column,
                         char out[PGW_ID_MAX + 1], const char *what, pgw_err *err)
{
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    out[0] = '\0';
    if (step == PGW_SQL_ROW && !pgw_sql_column_null(st, 0) &&
        !column_text(st, 0, out, PGW_ID_MAX + 1))
        rc = pgw_err_set_database(err, PGW_EIO, "%s: member %s has a malformed %s", s->path, member,
                                  column);
    else if (step != PGW_SQL_ROW && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, what, err);
    pgw_sql_reset(st);
    return rc;
}

static bool column_hash(pgw_sql_stmt *st, int col, uint8_t out[PGW_HASH_LEN])
{
    if (pgw_sql_column_bytes(st, col) != PGW_HASH_LEN)
        return false;
    memcpy(out, pgw_sql_column_blob(st, col), PGW_HASH_LEN);
    return true;
}

/* Reads a key's record; *found false when there is none. */
static int read_key(pgw_store *s, const char *key, bool *found, pgw_idem_record *out, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_KEY];
    pgw_sql_bind_text(st, 1, key);
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    *found = step == PGW_SQL_ROW;
    if (*found && column_hash(st, 0, out->fingerprint)) {
        out->first_transfer = pgw_sql_column_int64(st, 1);
        out->transfer_count = pgw_sql_column_int64(st, 2);
    } else if (*found) {
        rc = pgw_err_set_database(err, PGW_EIO, "%s: key %.128s has a malformed fingerprint",
                                  s->path, key);
    } else if (step != PGW_SQL_DONE) {
        rc = db_error(s, PGW_EIO, "reading an idempotency key", err);
    }
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_find_key(pgw_store *s, const char *key, bool *found, pgw_idem_record *out,
                       pgw_err *err)
{
    return read_key(s, key, found, out, err);
}

/*
 * Runs a bound INSERT (SQLite) of a row whose id the database gives; *id
 * is that id, the connection's last rowid. Not RETURNING id: SQLite keeps
 * those rows in a temporary B-tree opened and closed per execution (a
 * tenth of the writer's time per purchase, when the lot's insert had it).
 */
static int insert_with_id(pgw_store *s, pgw_sql_stmt *st, const char *what, int64_t *id,
                          pgw_err *err)
{
    PGW_ASSERT(!is_postgres(s));
    int step = pgw_sql_step(st);
    bool written = step == PGW_SQL_DONE;
    if (written)
        *id = pgw_sql_last_insert_id(s->db);
    pgw_sql_reset(st);
    PGW_ASSERT(!written || *id > 0);
    return written ? PGW_OK : db_error(s, step < 0 ? step : PGW_EIO, what, err);
}

/*
 * Appends what a key's first use recorded, for the key's row to point at.
 * SQLite: *id is its rowid. PostgreSQL: it is only sent (send_done) and
 * the key's row takes its id from the sequence (INSERT_KEY_AFTER_RECORD),
 * one round trip less per keyed command than reading it back; *id is 0.
 */
static int insert_record(pgw_store *s, const uint8_t fingerprint[PGW_HASH_LEN], int64_t now_us,
                         const char *answer, int64_t *id, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_INSERT_RECORD];
    pgw_sql_bind_blob(st, 1, fingerprint, PGW_HASH_LEN);
    pgw_sql_bind_int64(st, 2, now_us);
    pgw_sql_bind_text(st, 3, answer != NULL ? answer : ""); /* the column's default */
    *id = 0;
    if (is_postgres(s))
        return send_done(s, st, "recording an idempotency key", err);
    return insert_with_id(s, st, "recording an idempotency key", id, err);
}

int pgw_store_record_key(pgw_store *s, const char *key, const uint8_t fingerprint[PGW_HASH_LEN],
                         int64_t first_transfer, int64_t transfer_count, int64_t now_us,
                         const char *answer, const pgw_event_record *event, bool *replayed,
                         pgw_idem_record *existing, pgw_err *err)
{
    PGW_ASSERT(pgw_sql_in_transaction(s->db));
    PGW_ASSERT(transfer_count >= 0);
    PGW_ASSERT(event == NULL || event->type[0] != '\0');
    /* First, for its id. A replay leaves it behind, but the caller then
     * undoes everything the command wrote (pgw_store_rollback_to). */
    int64_t record = 0;
    pgw_sql_stmt *st = s->st[ST_INSERT_KEY];
    int rc = insert_record(s, fingerprint, now_us, answer, &record, err);
    if (rc == PGW_OK && is_postgres(s))
        rc = prepare(s, INSERT_KEY_AFTER_RECORD, &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, key);
    if (!is_postgres(s))
        pgw_sql_bind_int64(st, 2, record);
    pgw_sql_bind_int64(st, 3, first_transfer);
    pgw_sql_bind_int64(st, 4, transfer_count);
    pgw_sql_bind_text(st, 5, event != NULL ? event->type : ""); /* the columns' defaults */
    pgw_sql_bind_text(st, 6, event != NULL ? event->member : "");
    pgw_sql_bind_int64(st, 7, event != NULL ? event->occurred_at : 0);
    pgw_sql_bind_int64(st, 8, event != NULL ? event->amount_fen : 0);
    pgw_sql_bind_int64(st, 9, event != NULL ? event->points : 0);
    if (event != NULL && strcmp(event->type, "refund") == 0) {
        PGW_ASSERT(event->written_off >= 0);
        pgw_sql_bind_int64(st, 10, event->written_off);
    } else {
        pgw_sql_bind_null(st, 10); /* no refund: nothing written off, nor to say */
    }
    int step = pgw_sql_step(st);
    if (is_postgres(s))
        release(s, st);
    else
        pgw_sql_reset(st);
    if (step != PGW_SQL_DONE)
        return db_error(s, PGW_EIO, "recording an idempotency key", err);
    *replayed = pgw_sql_changes(s->db) == 0; /* the primary key said: already there */
    if (!*replayed)
        return PGW_OK;
    bool found = false;
    rc = read_key(s, key, &found, existing, err);
    PGW_ASSERT(rc != PGW_OK || found); /* the insert just met it, in this transaction */
    if (rc == PGW_OK && memcmp(existing->fingerprint, fingerprint, PGW_HASH_LEN) != 0)
        rc = pgw_err_set(err, PGW_ECONFLICT, PGW_STORE_KEY_CONFLICT, PGW_IDEM_KEY_MAX, key);
    return rc;
}

int pgw_store_chain_head(pgw_store *s, int64_t *id, uint8_t hash[PGW_HASH_LEN], pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_HEAD];
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    *id = 0;
    memcpy(hash, PGW_GENESIS_HASH, PGW_HASH_LEN);
    if (step == PGW_SQL_ROW && pgw_sql_column_bytes(st, 1) == PGW_HASH_LEN) {
        *id = pgw_sql_column_int64(st, 0);
        memcpy(hash, pgw_sql_column_blob(st, 1), PGW_HASH_LEN);
    } else if (step != PGW_SQL_DONE) {
        rc = db_error(s, PGW_EIO, "reading the chain head", err);
    }
    pgw_sql_reset(st);
    return rc;
}

static void bind_transfer(pgw_sql_stmt *st, const pgw_transfer *t)
{
    pgw_sql_bind_int64(st, 1, t->id);
    pgw_sql_bind_int64(st, 2, (int)t->kind);
    pgw_sql_bind_text(st, 3, t->idem_key);
    pgw_sql_bind_blob(st, 4, t->fingerprint, PGW_HASH_LEN);
    pgw_sql_bind_text(st, 5, t->debit);
    pgw_sql_bind_text(st, 6, t->credit);
    pgw_sql_bind_int64(st, 7, t->points);
    pgw_sql_bind_text(st, 8, t->shop_id);
    pgw_sql_bind_text(st, 9, t->channel);
    pgw_sql_bind_int64(st, 10, t->occurred_at);
    pgw_sql_bind_int64(st, 11, t->recorded_at_us);
    pgw_sql_bind_text(st, 12, t->reference);
    pgw_sql_bind_text(st, 13, t->breakdown);
    pgw_sql_bind_blob(st, 14, t->prev_hash, PGW_HASH_LEN);
    pgw_sql_bind_blob(st, 15, t->hash, PGW_HASH_LEN);
}

/* The member an account is (member:<id>), or NULL for any other account. */
static const char *account_member(const char *account)
{
    return strncmp(account, "member:", 7) == 0 ? account + 7 : NULL;
}

static void bind_member_or_null(pgw_sql_stmt *st, int i, const char *member)
{
    if (member != NULL)
        pgw_sql_bind_text(st, i, member);
    else
        pgw_sql_bind_null(st, i);
}

/* Transfer `id` the newest of `member`'s history, the member's row made
 * if this is its first (ST_LINK_TRANSFER). */
static int link_member(pgw_store *s, const char *member, const pgw_transfer *t, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_LINK_TRANSFER];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, t->recorded_at_us);
    pgw_sql_bind_int64(st, 3, t->id);
    return send_done(s, st, "linking a transfer to its member's history", err);
}

/*
 * Appends a transfer to its members' histories as it goes into the log:
 * each member side links the member's newest transfer before it, and the
 * member's row (which a purchase rewrites anyway, its lots' sums) points
 * at the new one. A member's history is read by walking that chain
 * (ST_HISTORY), not from an index keyed by member, whose entry every
 * purchase added at a random place, a page of the WAL each (schema 39).
 */
static int insert_linked(pgw_store *s, const pgw_transfer *t, pgw_err *err)
{
    const char *debit = account_member(t->debit), *credit = account_member(t->credit);
    pgw_sql_stmt *st = s->st[ST_INSERT_TRANSFER];
    bind_transfer(st, t);
    bind_member_or_null(st, 16, debit);
    bind_member_or_null(st, 17, credit);
    int rc = send_done(s, st, "appending a transfer", err);
    if (rc == PGW_OK && debit != NULL)
        rc = link_member(s, debit, t, err);
    if (rc == PGW_OK && credit != NULL)
        rc = link_member(s, credit, t, err);
    return rc;
}

int pgw_store_append_transfer(pgw_store *s, pgw_transfer *t, pgw_err *err)
{
    PGW_ASSERT(pgw_sql_in_transaction(s->db)); /* only inside a transaction */
    /* The last guard of a closed period, whatever wrote the transfer
     * (the commands refuse first, saying more: command.c). 0 is no close,
     * not one at 1970: a date before it is no closed period's. */
    if (s->closed_before > 0 && t->occurred_at < s->closed_before)
        return pgw_err_set(err, PGW_ECLOSED,
                           "a transfer dated %lld is in the period closed before %lld: date it "
                           "in the open period",
                           (long long)t->occurred_at, (long long)s->closed_before);
    int rc = PGW_OK;
    if (!s->head_cached)
        rc = pgw_store_chain_head(s, &s->head_id, s->head_hash, err);
    if (rc != PGW_OK)
        return rc;
    t->id = s->head_id + 1;
    rc = pgw_transfer_link(t, s->head_hash, err);
    if (rc != PGW_OK)
        return rc;
    /* Sent: should it fail, the command fails and its undoing forgets the
     * cached head (pgw_store_rollback_to). */
    rc = insert_linked(s, t, err);
    if (rc != PGW_OK) {
        s->head_cached = false;
        return rc;
    }
    s->head_cached = true;
    s->head_id = t->id;
    memcpy(s->head_hash, t->hash, PGW_HASH_LEN);
    return PGW_OK;
}

/* One row into a transfer; false when a stored value does not fit its field. */
static bool row_to_transfer(pgw_sql_stmt *st, pgw_transfer *t)
{
    memset(t, 0, sizeof(*t));
    t->id = pgw_sql_column_int64(st, 0);
    t->kind = (pgw_transfer_kind)pgw_sql_column_int64(st, 1);
    t->points = pgw_sql_column_int64(st, 6);
    t->occurred_at = pgw_sql_column_int64(st, 9);
    t->recorded_at_us = pgw_sql_column_int64(st, 10);
    return column_text(st, 2, t->idem_key, sizeof(t->idem_key)) &&
           column_hash(st, 3, t->fingerprint) && column_text(st, 4, t->debit, sizeof(t->debit)) &&
           column_text(st, 5, t->credit, sizeof(t->credit)) &&
           column_text(st, 7, t->shop_id, sizeof(t->shop_id)) &&
           column_text(st, 8, t->channel, sizeof(t->channel)) &&
           column_text(st, 11, t->reference, sizeof(t->reference)) &&
           column_text(st, 12, t->breakdown, sizeof(t->breakdown)) &&
           column_hash(st, 13, t->prev_hash) && column_hash(st, 14, t->hash);
}

static bool transfer_row(pgw_sql_stmt *st, void *item)
{
    return row_to_transfer(st, item);
}

/*
 * Reads every row of a bound statement into out[0..cap) (items of `size`
 * bytes) with `row`, which says false when a value does not fit its field;
 * then resets the statement. Every paged read of the store goes through it.
 */
typedef bool (*row_reader)(pgw_sql_stmt *st, void *item);

static int read_rows(pgw_store *s, pgw_sql_stmt *st, row_reader row, void *out, size_t size,
                     size_t cap, size_t *n, const char *what, pgw_err *err)
{
    int rc = PGW_OK, step;
    *n = 0;
    while (rc == PGW_OK && (step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        PGW_ASSERT(*n < cap);
        if (!row(st, (char *)out + (*n)++ * size))
            rc = pgw_err_set_database(err, PGW_EIO, "%s: %s: a stored value does not fit its field",
                                      s->path, what);
    }
    if (rc == PGW_OK && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, what, err);
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_read_transfers(pgw_store *s, int64_t after_id, pgw_transfer *out, size_t cap,
                             size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_PAGE];
    pgw_sql_bind_int64(st, 1, after_id);
    pgw_sql_bind_int64(st, 2, (int64_t)cap);
    return read_rows(s, st, transfer_row, out, sizeof(*out), cap, n, "reading transfers", err);
}

/* Account count and points moved, in SQL. (A sum-to-zero check belongs
 * with cached balances: over the log itself every row adds +p and -p.) */
static const char VERIFY_SUMS[] =
    "SELECT (SELECT COUNT(*) FROM (SELECT debit FROM transfers UNION SELECT credit FROM "
    "transfers) AS a), (SELECT COALESCE(SUM(points), 0) FROM transfers)";

static int verify_sums(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db, VERIFY_SUMS, false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "summing balances", err);
    int rc = PGW_OK;
    if (pgw_sql_step(st) == PGW_SQL_ROW) {
        r->accounts = pgw_sql_column_int64(st, 0);
        r->points_moved = pgw_sql_column_int64(st, 1);
    } else {
        rc = db_error(s, PGW_EIO, "summing balances", err);
    }
    pgw_sql_finalize(st);
    return rc;
}

/* Every close of a period, in the order they were made (by the chain
 * head they saw, then by their moment: both only move later), into a
 * malloc'd *out the caller frees. */
static int read_closes(pgw_store *s, pgw_period_close **out, size_t *n, pgw_err *err)
{
    *out = calloc(PGW_PERIOD_CLOSES_MAX, sizeof(**out));
    if (*out == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory verifying %s", s->path);
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db,
                        "SELECT before_at, closed_at_us, last_transfer FROM period_closes"
                        " ORDER BY last_transfer, before_at",
                        false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "reading the closes of periods", err);
    int step, rc = PGW_OK;
    *n = 0;
    while (rc == PGW_OK && (step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        if (*n == PGW_PERIOD_CLOSES_MAX)
            rc = pgw_err_set_database(err, PGW_EIO, "%s: more than %d closes of periods", s->path,
                                      PGW_PERIOD_CLOSES_MAX);
        else
            (*out)[(*n)++] =
                (pgw_period_close){pgw_sql_column_int64(st, 0), pgw_sql_column_int64(st, 1),
                                   pgw_sql_column_int64(st, 2)};
    }
    if (rc == PGW_OK && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading the closes of periods", err);
    pgw_sql_finalize(st);
    return rc;
}

/* The closes as a walk in id order meets them: the one in force for the
 * transfers after `next`'s last_transfer. */
typedef struct close_walk {
    const pgw_period_close *v;
    size_t n, next;
    int64_t before;             /* in force: the latest moment closed before */
    const pgw_period_close *at; /* the close that set it */
} close_walk;

/* Whether transfer t was written after a close of the period it is dated
 * in: the proof the period stayed closed (pgw_store_close_period), which
 * the chain protects (its ids and dates are hashed). Ids, not clocks:
 * instances' clocks may be apart, the chain's order is one. */
static bool written_into_closed(close_walk *w, const pgw_transfer *t, char *problem, size_t cap)
{
    while (w->next < w->n && w->v[w->next].last_transfer < t->id) {
        if (w->v[w->next].before > w->before) {
            w->before = w->v[w->next].before;
            w->at = &w->v[w->next];
        }
        w->next++;
    }
    if (w->at == NULL || t->occurred_at >= w->before)
        return false; /* no close in force (a date before 1970 is not in one) */
    snprintf(problem, cap,
             "transfer %lld is dated %lld, in the period closed before %lld, but was written "
             "after that close (recorded at %lld us; the close at %lld us, after transfer %lld)",
             (long long)t->id, (long long)t->occurred_at, (long long)w->before,
             (long long)t->recorded_at_us, (long long)w->at->closed_at_us,
             (long long)w->at->last_transfer);
    return true;
}

/* Walks the chain page by page; stops at the first broken entry. Holds
 * every transfer to the closes of periods on the way (written_into_closed). */
static int verify_chain(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    close_walk walk = {0};
    pgw_period_close *closes = NULL;
    int rc = read_closes(s, &closes, &walk.n, err);
    walk.v = closes;
    pgw_transfer *page = rc == PGW_OK ? calloc(VERIFY_PAGE, sizeof(*page)) : NULL;
    if (page == NULL) {
        free(closes);
        return rc != PGW_OK ? rc
                            : pgw_err_set(err, PGW_ENOMEM, "out of memory verifying %s", s->path);
    }
    uint8_t running[PGW_HASH_LEN];
    memcpy(running, PGW_GENESIS_HASH, PGW_HASH_LEN);
    int64_t last_id = 0;
    size_t n = 0;
    while ((rc = pgw_store_read_transfers(s, last_id, page, VERIFY_PAGE, &n, err)) == PGW_OK &&
           n > 0) {
        size_t bad = 0;
        pgw_err broken;
        if (pgw_chain_verify(page, n, running, last_id, running, &bad, &broken) != PGW_OK) {
            r->ok = false;
            r->bad_id = page[bad].id;
            r->transfers += (int64_t)bad; /* those before it in the page held */
            snprintf(r->problem, sizeof(r->problem), "%s", broken.msg);
            break;
        }
        for (size_t i = 0; i < n; i++)
            if (written_into_closed(&walk, &page[i], r->ok ? r->problem : NULL,
                                    r->ok ? sizeof(r->problem) : 0))
                r->ok = false; /* the first such transfer told; the chain walked on */
        r->transfers += (int64_t)n;
        last_id = page[n - 1].id;
    }
    memcpy(r->head, running, PGW_HASH_LEN);
    free(page);
    free(closes);
    return rc;
}

/*
 * Every member's balance equals their lots' left + held minus their debt.
 * One pass over the log (transfers are not indexed by account), then each
 * member looks its balance up. The CAST gives balances.id members.id's
 * TEXT affinity (the same value): SQLite indexes the balances for the
 * join only then; with an untyped substr() it scanned all of them for
 * every member, quadratic (35 s at 20,000 imported members, 148 at 40,000).
 */
static const char VERIFY_MEMBERS[] =
    "WITH moves (account, delta) AS ("
    "  SELECT credit, points FROM transfers WHERE credit LIKE 'member:%'"
    "  UNION ALL SELECT debit, -points FROM transfers WHERE debit LIKE 'member:%'),"
    " balances AS (SELECT CAST(substr(account, 8) AS TEXT) id, SUM(delta) balance FROM moves"
    "  GROUP BY account)"
    " SELECT m.id, m.debt,"
    " (SELECT COALESCE(SUM(left_points + held), 0) FROM lots WHERE member = m.id),"
    " COALESCE(b.balance, 0) FROM members m LEFT JOIN balances b ON b.id = m.id"
    " ORDER BY m.id";

static int verify_members(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db, VERIFY_MEMBERS, false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "checking members", err);
    int step;
    while ((step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        int64_t debt = pgw_sql_column_int64(st, 1), lots = pgw_sql_column_int64(st, 2);
        int64_t balance = pgw_sql_column_int64(st, 3);
        r->members++;
        if (r->ok && balance != lots - debt) {
            r->ok = false;
            snprintf(r->problem, sizeof(r->problem),
                     "member %.32s: balance %lld but lots hold %lld and debt is %lld",
                     pgw_sql_column_text(st, 0), (long long)balance, (long long)lots,
                     (long long)debt);
        }
    }
    pgw_sql_finalize(st);
    return step == PGW_SQL_DONE ? PGW_OK : db_error(s, PGW_EIO, "checking members", err);
}

/*
 * Invariants over lots (and members' sums of them), holds, earns and
 * members' days, one query each. A query returns the first violation as a
 * message (so the report names the broken row), or no row. Refund
 * arithmetic is checked in C (verify_refunds): P*R overflows SQLite's
 * integers into floating point.
 */
static const char *const INVARIANTS[] = {
    /* Members' histories (schema 39): each member side of a transfer
     * links the member's transfer before it, and no other side links
     * anything; each member's row names its newest, which is its own.
     * (An account member:<id> without a member's row has no chain to
     * check: the gateway makes the row with the member's first transfer,
     * so only a log written by other means has one.) */
    "WITH linked AS (SELECT id, account, prev, LAG(id) OVER (PARTITION BY account ORDER BY id)"
    "  AS want FROM (" MEMBER_SIDES ") AS sides)"
    " SELECT format('transfer %s: links %s''s history to transfer %s, not %s', id, account,"
    "  COALESCE(CAST(prev AS TEXT), 'none'), COALESCE(CAST(want AS TEXT), 'none'))"
    " FROM linked WHERE prev IS DISTINCT FROM want"
    " AND EXISTS (SELECT 1 FROM members WHERE id = substr(account, 8)) ORDER BY id LIMIT 1",
    "SELECT CASE WHEN debit_prev IS NOT NULL AND debit NOT LIKE 'member:%'"
    "  THEN format('transfer %s: links %s''s history to transfer %s, but it is no member',"
    "  id, debit, debit_prev)"
    "  ELSE format('transfer %s: links %s''s history to transfer %s, but it is no member',"
    "  id, credit, credit_prev) END"
    " FROM transfers WHERE (debit_prev IS NOT NULL AND debit NOT LIKE 'member:%')"
    " OR (credit_prev IS NOT NULL AND credit NOT LIKE 'member:%') ORDER BY id LIMIT 1",
    "SELECT format('member %s: its newest transfer is %s, but its row names %s', m.id,"
    "  h.newest, COALESCE(CAST(m.last_transfer AS TEXT), 'none'))"
    " FROM (SELECT account, MAX(id) AS newest FROM (" MEMBER_SIDES ") AS sides GROUP BY account) h"
    " JOIN members m ON m.id = substr(h.account, 8)"
    " WHERE m.last_transfer IS DISTINCT FROM h.newest LIMIT 1",
    "SELECT format('member %s: its row names transfer %s as its newest, which is not its own',"
    "  m.id, m.last_transfer) FROM members m WHERE m.last_transfer IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM transfers t WHERE t.id = m.last_transfer"
    "  AND (t.debit = 'member:' || m.id OR t.credit = 'member:' || m.id)) LIMIT 1",
    "SELECT format('member %s: its lots keep %s points and hold %s, but its row counts %s and %s',"
    "  m.id, COALESCE(s.l, 0), COALESCE(s.h, 0), m.lots_left, m.lots_held)"
    " FROM members m LEFT JOIN (SELECT member, SUM(left_points) l, SUM(held) h FROM lots"
    "  GROUP BY member) s ON s.member = m.id"
    " WHERE m.lots_left <> COALESCE(s.l, 0) OR m.lots_held <> COALESCE(s.h, 0) LIMIT 1",
    "WITH x AS (SELECT reference r, SUM(points) p FROM transfers WHERE kind = 4"
    "  GROUP BY reference)"
    " SELECT format('lot %s: %s points expired but its EXPIRE transfers carry %s',"
    "  l.id, l.expired, COALESCE(x.p, 0))"
    " FROM lots l LEFT JOIN x ON x.r = 'lot:' || l.id WHERE l.expired <> COALESCE(x.p, 0)"
    " LIMIT 1",
    "SELECT format('hold %s (state %s): reserves %s, expected %s', h.id, h.state,"
    "  COALESCE(SUM(p.points), 0), CASE WHEN h.state = 0 THEN h.points ELSE 0 END)"
    " FROM holds h LEFT JOIN hold_portions p ON p.hold = h.id GROUP BY h.id"
    " HAVING COALESCE(SUM(p.points), 0) <> CASE WHEN h.state = 0 THEN h.points ELSE 0 END"
    " LIMIT 1",
    "SELECT format('lot %s: held %s but holds reserve %s', l.id, l.held, r.p) FROM ("
    "  SELECT lots.id, COALESCE((SELECT SUM(points) FROM hold_portions"
    "   WHERE lot = lots.id AND points > 0), 0) p FROM lots) r JOIN lots l ON l.id = r.id"
    " WHERE l.held <> r.p LIMIT 1",
    "SELECT format('hold %s: captured %s but its REDEEM transfer %s carries %s', h.id,"
    "  h.captured, h.capture_transfer, COALESCE(t.points, 0))"
    " FROM holds h LEFT JOIN transfers t ON t.id = h.capture_transfer AND t.kind = 3"
    " WHERE h.state = 1 AND (t.points IS NULL OR t.points <> h.captured) LIMIT 1",
    "SELECT format('earn %s: funder %s reversed %s of the %s it funded', e.first_transfer,"
    "  r.line, r.reversed, COALESCE(t.points, 0))"
    " FROM earn_reversals r JOIN earns e ON e.first_transfer = r.earn"
    " LEFT JOIN transfers t ON t.id = e.first_transfer + r.line AND t.kind = 1"
    " WHERE r.line >= e.n_funders OR t.points IS NULL OR r.reversed > t.points LIMIT 1",
    "WITH x AS (SELECT reference r, SUM(points) p FROM transfers WHERE kind = 2"
    "  GROUP BY reference),"
    " y AS (SELECT earn, SUM(reversed) s FROM earn_reversals GROUP BY earn)"
    " SELECT format('earn %s: reversed %s but its REVERSAL transfers carry %s',"
    "  e.first_transfer, COALESCE(y.s, 0), COALESCE(x.p, 0))"
    " FROM earns e LEFT JOIN x ON x.r = 'earn:' || e.first_transfer"
    " LEFT JOIN y ON y.earn = e.first_transfer WHERE COALESCE(y.s, 0) <> COALESCE(x.p, 0) LIMIT 1",
    "SELECT format('member %s, day %s: running totals of %s purchases and %s fen, but its days"
    " sum to %s and %s', member, day, run_purchases, run_spend_fen, p, f)"
    " FROM (SELECT member, day, run_purchases, run_spend_fen, SUM(purchases) OVER running AS p,"
    "  SUM(spend_fen) OVER running AS f FROM activity_days"
    "  WINDOW running AS (PARTITION BY member ORDER BY day)) AS d"
    " WHERE run_purchases <> p OR run_spend_fen <> f LIMIT 1",
    "SELECT format('purchase %s: refunds of %s fen recorded on a %s fen %s of %s transfers',"
    "  u.purchase, u.refunded_fen, i.amount_fen, i.event_type, i.transfer_count)"
    " FROM unearned_refunds u JOIN idempotency i ON i.key = u.purchase"
    " WHERE u.refunded_fen > i.amount_fen OR i.event_type <> 'purchase' OR i.transfer_count <> 0"
    " LIMIT 1",
    "WITH x AS (SELECT source_transfer s, SUM(expired) p FROM lots WHERE expired > 0"
    "  GROUP BY source_transfer)"
    " SELECT format('earn %s: counts %s points of its lot expired, its lot %s',"
    "  e.first_transfer, e.expired, COALESCE(x.p, 0))"
    " FROM earns e LEFT JOIN x ON x.s = e.first_transfer WHERE e.expired <> COALESCE(x.p, 0)"
    " LIMIT 1",
    /* What each refund wrote off (its key's written_off, schema 31) is
     * part of its earn's: the refund event keys that reversed its points
     * (their first transfer is a REVERSAL naming it, as refunds_original
     * in command.c reads it; one pass over the keys, each transfer by its
     * id) write off no more than the earn, refund no more, and when they
     * are all of its refunds (their fen are its refunded_fen) and all say
     * it, exactly its written_off. A refund that reversed nothing (all
     * lapsed, or none covered) has no transfer to find its earn by:
     * VERIFY_WRITTEN_OFF sums it with the rest. */
    "WITH s AS (SELECT t.reference r, SUM(i.amount_fen) f, COALESCE(SUM(i.written_off), 0) w,"
    "  COUNT(*) - COUNT(i.written_off) unknown FROM idempotency i"
    "  JOIN transfers t ON t.id = i.first_transfer AND t.kind = 2"
    "  WHERE i.event_type = 'refund' AND i.transfer_count > 0 GROUP BY t.reference)"
    " SELECT format('earn %s: %s points written off for %s fen refunded, but the refunds that"
    " reversed its points say %s written off for %s fen', e.first_transfer, e.written_off,"
    "  e.refunded_fen, s.w, s.f)"
    " FROM earns e JOIN s ON s.r = 'earn:' || e.first_transfer"
    " WHERE s.f > e.refunded_fen OR s.w > e.written_off"
    "  OR (s.f = e.refunded_fen AND s.unknown = 0 AND s.w <> e.written_off) LIMIT 1",
    /* What each spend took of its lots and has not had back (schema 37,
     * spent_lots): its REDEEM transfer's points less what its returns
     * gave back, no lot below 0, each lot its member's or, moved by a
     * merge, its survivor's (members.merged_into names the last one). A
     * return's key is return:<spend>/<id>, the id without '/' (command.c
     * check): rtrim keeps the key up to its last '/', and drops that (not
     * substr's length, which PostgreSQL refuses below 0: a key without
     * '/' would stop verify instead of being named). Such a key, or one
     * naming no spend ("return:/2"), leaves spend '', which no spend is:
     * the key is named as it is. A spend made before schema 37 has no
     * rows, nor a return (refused: nothing recorded to give back): a
     * spend with returns and no row lost its rows. */
    "WITH x AS (SELECT s.spend, s.points kept, 0 back, t.points spent, m.id member,"
    "  CASE WHEN l.member = m.id OR l.member = m.merged_into THEN NULL ELSE s.lot END stray,"
    "  NULL return_key"
    "  FROM spent_lots s LEFT JOIN idempotency i ON i.key = s.spend"
    "  LEFT JOIN transfers t ON t.id = i.first_transfer AND t.kind = 3"
    "  LEFT JOIN members m ON m.id = substr(t.debit, 8) LEFT JOIN lots l ON l.id = s.lot"
    "  UNION ALL SELECT substr(i.k, 8), NULL, t.points, NULL, NULL, NULL, i.key"
    "  FROM (SELECT rtrim(rtrim(key, replace(key, '/', '')), '/') k, key, first_transfer"
    "   FROM idempotency"
    "   WHERE substr(key, 1, 7) = 'return:') i"
    "  JOIN transfers t ON t.id = i.first_transfer AND t.kind = 3),"
    " g AS (SELECT spend, COUNT(kept) n, COALESCE(SUM(kept), 0) kept, MIN(kept) low,"
    "  SUM(back) back, COALESCE(MAX(spent), 0) spent, MAX(member) member, MIN(stray) stray,"
    "  MIN(return_key) return_key FROM x GROUP BY spend)"
    " SELECT CASE WHEN g.spend = '' THEN format('return %s: its key is not"
    " return:<spend>/<id> (it gave back %s points)', g.return_key, g.back)"
    "  WHEN g.n = 0 THEN format('spend %s: its returns gave back %s points,"
    " but it records no lot it took', g.spend, g.back)"
    "  WHEN g.low < 0 THEN format('spend %s: keeps %s points of a lot, below 0', g.spend, g.low)"
    "  WHEN g.kept <> g.spent - g.back THEN"
    "  format('spend %s: its lots keep %s points, but it spent %s and its returns gave back %s',"
    "  g.spend, g.kept, g.spent, g.back)"
    "  ELSE format('spend %s: took lot %s, which is member %s''s, not %s''s nor its survivor''s',"
    "  g.spend, g.stray, l.member, g.member) END"
    " FROM g LEFT JOIN lots l ON l.id = g.stray"
    " WHERE g.spend = '' OR g.n = 0 OR g.low < 0 OR g.kept <> g.spent - g.back"
    " OR g.stray IS NOT NULL LIMIT 1",
    /* A spend without rows and without returns may be older than schema
     * 37, which records what every spend since takes (a redemption or
     * capture is refused unless its lots cover it, and no row is ever
     * deleted): one after a spend that has rows lost its own. One before
     * every spend with rows cannot be told from one made before schema 37
     * (the migration marks nowhere where the log was), nor can any when
     * all lost their rows. Spends are keys redeem:... and capture:...
     * whose first transfer is a REDEEM, read as ranges of the keys. */
    "WITH r AS (SELECT i.key, i.first_transfer f,"
    "  EXISTS (SELECT 1 FROM spent_lots s WHERE s.spend = i.key) has"
    "  FROM idempotency i JOIN transfers t ON t.id = i.first_transfer AND t.kind = 3"
    "  WHERE (i.key >= 'redeem:' AND i.key < 'redeem;')"
    "  OR (i.key >= 'capture:' AND i.key < 'capture;'))"
    " SELECT format('spend %s: records no lot it took, but %s, an earlier spend, does: its"
    " rows were lost', r.key, (SELECT key FROM r WHERE has ORDER BY f LIMIT 1))"
    " FROM r WHERE NOT r.has AND r.f > (SELECT MIN(f) FROM r WHERE has) ORDER BY r.f LIMIT 1",
};

static int verify_invariants(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    for (size_t i = 0; r->ok && i < sizeof(INVARIANTS) / sizeof(INVARIANTS[0]); i++) {
        pgw_sql_stmt *st = NULL;
        if (pgw_sql_prepare(s->db, INVARIANTS[i], false, &st, NULL) != PGW_OK)
            return db_error(s, PGW_EIO, "checking invariants", err);
        int step = pgw_sql_step(st);
        if (step == PGW_SQL_ROW) {
            r->ok = false;
            snprintf(r->problem, sizeof(r->problem), "%s", pgw_sql_column_text(st, 0));
        }
        pgw_sql_finalize(st);
        if (step != PGW_SQL_ROW && step != PGW_SQL_DONE)
            return db_error(s, PGW_EIO, "checking invariants", err);
    }
    return PGW_OK;
}

/* Every refunded earn: reversed + written off == floor(P*R/A). */
static const char VERIFY_REFUNDS[] =
    "SELECT e.first_transfer, e.points, e.amount_fen, e.refunded_fen, e.written_off,"
    " COALESCE((SELECT SUM(reversed) FROM earn_reversals WHERE earn = e.first_transfer), 0)"
    " FROM earns e WHERE e.refunded_fen > 0 OR e.written_off > 0";

static int verify_refunds(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db, VERIFY_REFUNDS, false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "checking refunds", err);
    int step;
    while (r->ok && (step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        int64_t target = -1, written_off = pgw_sql_column_int64(st, 4);
        int64_t reversed = pgw_sql_column_int64(st, 5);
        pgw_err why;
        if (pgw_refund_target(pgw_sql_column_int64(st, 1), pgw_sql_column_int64(st, 2),
                              pgw_sql_column_int64(st, 3), &target, &why) != PGW_OK ||
            reversed + written_off != target) {
            r->ok = false;
            snprintf(r->problem, sizeof(r->problem),
                     "earn %lld: reversed %lld + written off %lld != floor(P*R/A) %lld",
                     (long long)pgw_sql_column_int64(st, 0), (long long)reversed,
                     (long long)written_off, (long long)target);
        }
    }
    pgw_sql_finalize(st);
    return r->ok && step != PGW_SQL_DONE ? db_error(s, PGW_EIO, "checking refunds", err) : PGW_OK;
}

/*
 * Every refund's key (an event's, written_off since schema 31) against
 * the purchases: in all, the refunds' fen are at most what the earns and
 * the unearned purchases say was refunded, and their written_off at most
 * what the earns wrote off; exactly that when every refund is a refund
 * event's key (the fen agree) whose written_off is known. A refund before
 * schema 13 (no event row) or of a test's bare command has no such key,
 * and one recorded before schema 31 whose answer did not say it has NULL:
 * then only the bounds hold. One pass over each table.
 */
static const char VERIFY_WRITTEN_OFF[] =
    "WITH e AS (SELECT COALESCE(SUM(written_off), 0) w, COALESCE(SUM(refunded_fen), 0) f"
    "  FROM earns),"
    " u AS (SELECT COALESCE(SUM(refunded_fen), 0) f FROM unearned_refunds),"
    " k AS (SELECT COUNT(*) n, COUNT(written_off) known, COALESCE(SUM(written_off), 0) w,"
    "  COALESCE(SUM(amount_fen), 0) f FROM idempotency WHERE event_type = 'refund')"
    " SELECT e.w, e.f + u.f, k.n, k.known, k.w, k.f FROM e, u, k";

/* Whether the refunds' keys, summed, disagree with the purchases'. */
static bool written_off_disagrees(int64_t earns_off, int64_t earns_fen, int64_t keys, int64_t known,
                                  int64_t keys_off, int64_t keys_fen)
{
    if (keys_fen > earns_fen || keys_off > earns_off)
        return true;
    return keys_fen == earns_fen && known == keys && keys_off != earns_off;
}

static int verify_written_off(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db, VERIFY_WRITTEN_OFF, false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "checking what refunds wrote off", err);
    int step = pgw_sql_step(st);
    if (step == PGW_SQL_ROW) {
        int64_t v[6];
        for (int i = 0; i < 6; i++)
            v[i] = pgw_sql_column_int64(st, i);
        r->refunds = v[2];
        if (r->ok && written_off_disagrees(v[0], v[1], v[2], v[3], v[4], v[5])) {
            r->ok = false;
            snprintf(r->problem, sizeof(r->problem),
                     "refunds: their %lld keys say %lld points written off for %lld fen"
                     " refunded (%lld keys do not say), the purchases %lld for %lld fen",
                     (long long)v[2], (long long)v[4], (long long)v[5], (long long)(v[2] - v[3]),
                     (long long)v[0], (long long)v[1]);
        }
    }
    pgw_sql_finalize(st);
    return step != PGW_SQL_ROW ? db_error(s, PGW_EIO, "checking what refunds wrote off", err)
                               : PGW_OK;
}

/* Every event's record (what reconciliation reads: idempotency.points, not
 * chained) equals what its transfers moved for its member. */
static const char VERIFY_EVENTS[] =
    "SELECT key, points, moved FROM (SELECT i.key, i.points, COALESCE((SELECT SUM(CASE"
    " WHEN t.credit = 'member:' || i.member THEN t.points"
    " WHEN t.debit = 'member:' || i.member THEN -t.points ELSE 0 END) FROM transfers t"
    " WHERE t.id >= i.first_transfer AND t.id < i.first_transfer + i.transfer_count), 0)"
    " AS moved FROM idempotency i WHERE i.event_type <> '') AS e"
    " WHERE moved <> points LIMIT 1";

static int verify_events(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db, VERIFY_EVENTS, false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "checking events", err);
    int step = pgw_sql_step(st);
    if (step == PGW_SQL_ROW) {
        char key[PGW_IDEM_KEY_MAX + 1] = "";
        (void)column_text(st, 0, key, sizeof(key));
        r->ok = false;
        snprintf(r->problem, sizeof(r->problem),
                 "event %.128s: recorded %lld points, its transfers moved %lld", key,
                 (long long)pgw_sql_column_int64(st, 1), (long long)pgw_sql_column_int64(st, 2));
    }
    pgw_sql_finalize(st);
    return step != PGW_SQL_ROW && step != PGW_SQL_DONE
               ? db_error(s, PGW_EIO, "checking events", err)
               : PGW_OK;
}

/*
 * SQLite: the file's own structure (quick_check: every page of every
 * B-tree, not the indexes' agreement with their tables). The checks above
 * read the log and the member tables; a damaged page of the stored
 * answers or the receipts went unseen, and `verify` said OK of a file
 * SQLite calls malformed (the operator review).
 */
static int verify_file(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    if (is_postgres(s))
        return PGW_OK; /* the server's own checksums and tools */
    char said[256];
    if (quick_check(pgw_sql_sqlite_handle(s->db), said, sizeof(said)) != SQLITE_ROW)
        return db_error(s, PGW_EIO, "checking the file", err); /* too damaged to say */
    if (strcmp(said, "ok") != 0) {
        r->ok = false;
        snprintf(r->problem, sizeof(r->problem),
                 "the database file is damaged (SQLite's quick_check: %s)", said);
    }
    return PGW_OK;
}

/* Every reference leads to its row: SQLite's writers do not check them as
 * they go (configure), PostgreSQL's do. */
static int verify_references(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    char said[sizeof(r->problem)];
    int rc = dangling_reference(s, said, sizeof(said), err);
    if (rc == PGW_OK && said[0] != '\0') {
        r->ok = false;
        memcpy(r->problem, said, sizeof(said));
    }
    return rc;
}

/* pgw_store_verify but the file's structure (verify_file): what a
 * backup's copy, its pages checked already (check_copy), is verified by. */
static int verify_ledger(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    memset(r, 0, sizeof(*r));
    r->ok = true;
    /* PostgreSQL compiles a query estimated over jit_above_cost, 0.1-0.4 s
     * each: past 20,000 members more of verify's cross it, and the
     * compiling grew faster than the log (bench/RESULTS.md). And it plans
     * a query's LIMIT 1 (stop at the first broken row) to stop early: as
     * a nested loop comparing every row with every other (lots with
     * their EXPIRE transfers, earns with their REVERSALs, joined on an
     * expression), which on a log that verifies reads to the end: 27 s
     * for 20,000 refunded purchases, 1 s with hash joins. The session is
     * verify's own (pointsgw verify; a backup checks a SQLite copy). */
    int rc = is_postgres(s) ? exec(s, "SET jit = off; SET enable_nestloop = off",
                                   "setting verify's session up", err)
                            : PGW_OK;
    if (rc == PGW_OK)
        rc = verify_chain(s, r, err);
    if (rc == PGW_OK)
        rc = verify_sums(s, r, err);
    if (rc == PGW_OK && r->ok)
        rc = verify_references(s, r, err);
    if (rc == PGW_OK)
        rc = verify_members(s, r, err);
    if (rc == PGW_OK)
        rc = verify_invariants(s, r, err);
    if (rc == PGW_OK)
        rc = verify_refunds(s, r, err);
    if (rc == PGW_OK)
        rc = verify_written_off(s, r, err);
    if (rc == PGW_OK && r->ok)
        rc = verify_events(s, r, err);
    return rc;
}

int pgw_store_verify(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    int rc = verify_ledger(s, r, err);
    if (rc == PGW_OK && r->ok)
        rc = verify_file(s, r, err);
    return rc;
}

int pgw_store_member_debt(pgw_store *s, const char *member, bool *found, int64_t *debt,
                          pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_DEBT];
    pgw_sql_bind_text(st, 1, member);
    int step = pgw_sql_step(st);
    *found = step == PGW_SQL_ROW;
    *debt = *found ? pgw_sql_column_int64(st, 0) : 0;
    pgw_sql_reset(st);
    if (step != PGW_SQL_ROW && step != PGW_SQL_DONE)
        return db_error(s, PGW_EIO, "reading a member", err);
    return PGW_OK;
}

int pgw_store_put_member(pgw_store *s, const char *member, int64_t debt, int64_t now_us,
                         pgw_err *err)
{
    PGW_ASSERT(debt >= 0);
    pgw_sql_stmt *st = s->st[ST_PUT_MEMBER];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, debt);
    pgw_sql_bind_int64(st, 3, now_us);
    int rc = send_done(s, st, "writing a member", err);
    return rc;
}

/* Sent (send_done): nothing here reads the new lot's id, and on PostgreSQL
 * reading it (RETURNING) cost a round trip of every purchase's. The
 * member's sums (schema 33) are added here, not by a trigger (schema 35):
 * a trigger made the insert a multi-row write, which SQLite runs in a
 * statement journal. This is the one insert of a lot. */
/* The lot's row alone: its member's sums are the caller's. */
static int insert_lot_row(pgw_store *s, const pgw_lot *lot, pgw_err *err)
{
    PGW_ASSERT(lot->points > 0 && lot->left >= 0 && lot->held >= 0);
    PGW_ASSERT(lot->left + lot->held <= lot->points);
    pgw_sql_stmt *st = s->st[ST_INSERT_LOT];
    pgw_sql_bind_text(st, 1, lot->member);
    pgw_sql_bind_int64(st, 2, lot->points);
    pgw_sql_bind_int64(st, 3, lot->left);
    pgw_sql_bind_int64(st, 4, lot->held);
    pgw_sql_bind_int64(st, 5, lot->earned_at);
    pgw_sql_bind_int64(st, 6, lot->expires_at);
    pgw_sql_bind_int64(st, 7, lot->source_transfer);
    return send_done(s, st, "writing a lot", err);
}

int pgw_store_insert_lot(pgw_store *s, const pgw_lot *lot, pgw_err *err)
{
    int rc = insert_lot_row(s, lot, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_stmt *st = s->st[ST_ADD_LOT_SUMS];
    pgw_sql_bind_text(st, 1, lot->member);
    pgw_sql_bind_int64(st, 2, lot->left);
    pgw_sql_bind_int64(st, 3, lot->held);
    return send_done(s, st, "adding a lot to its member's sums", err);
}

/* One row of LOT_COLUMNS into a lot; false when the member id does not fit. */
static bool row_to_lot(pgw_sql_stmt *st, pgw_lot *lot, int64_t *expired)
{
    memset(lot, 0, sizeof(*lot));
    lot->id = pgw_sql_column_int64(st, 0);
    lot->points = pgw_sql_column_int64(st, 2);
    lot->left = pgw_sql_column_int64(st, 3);
    lot->held = pgw_sql_column_int64(st, 4);
    lot->earned_at = pgw_sql_column_int64(st, 5);
    lot->expires_at = pgw_sql_column_int64(st, 6);
    lot->source_transfer = pgw_sql_column_int64(st, 7);
    if (expired != NULL)
        *expired = pgw_sql_column_int64(st, 8);
    return column_text(st, 1, lot->member, sizeof(lot->member));
}

static bool lot_row(pgw_sql_stmt *st, void *item)
{
    return row_to_lot(st, item, NULL);
}

/* A portion: LOT_COLUMNS of its lot, then the points it reserves. */
static bool portion_row(pgw_sql_stmt *st, void *item)
{
    pgw_portion *p = item;
    p->points = pgw_sql_column_int64(st, 9);
    return row_to_lot(st, &p->lot, NULL);
}

int pgw_store_get_lot(pgw_store *s, int64_t id, bool *found, pgw_lot *out, int64_t *expired,
                      int64_t *back_at, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_LOT];
    pgw_sql_bind_int64(st, 1, id);
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    *found = step == PGW_SQL_ROW;
    if (*found && !row_to_lot(st, out, expired))
        rc = pgw_err_set_database(err, PGW_EIO, "%s: lot %lld has a malformed member", s->path,
                                  (long long)id);
    else if (!*found && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading a lot", err);
    if (*found && back_at != NULL)
        *back_at = pgw_sql_column_int64(st, 9);
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_expire_lot_points(pgw_store *s, int64_t id, int64_t points, pgw_err *err)
{
    PGW_ASSERT(points > 0);
    pgw_sql_stmt *st = s->st[ST_EXPIRE_LOT];
    pgw_sql_bind_int64(st, 1, id);
    pgw_sql_bind_int64(st, 2, points);
    int rc = step_done(s, st, "expiring a lot", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ESTATE, "lot %lld has fewer than %lld free points", (long long)id,
                         (long long)points);
    if (rc != PGW_OK)
        return rc;
    st = s->st[ST_EARN_EXPIRED];
    pgw_sql_bind_int64(st, 1, id);
    pgw_sql_bind_int64(st, 2, points);
    return step_done(s, st, "counting a lot's expiry on its earn", err);
}

int pgw_store_earn_lot_due(pgw_store *s, const pgw_earn_record *e, int64_t now, int64_t *points,
                           pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_EARN_LOT_DUE];
    pgw_sql_bind_text(st, 1, e->member);
    pgw_sql_bind_int64(st, 2, now);
    pgw_sql_bind_int64(st, 3, e->first_transfer);
    return one_int64(s, st, false, points, "reading an earn's due lot", err);
}

int pgw_store_earn_lot(pgw_store *s, const pgw_earn_record *e, int64_t now, int64_t *id,
                       int64_t *left, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_EARN_LOT];
    pgw_sql_bind_text(st, 1, e->member);
    pgw_sql_bind_int64(st, 2, now);
    pgw_sql_bind_int64(st, 3, e->first_transfer);
    int step = pgw_sql_step(st);
    *id = step == PGW_SQL_ROW ? pgw_sql_column_int64(st, 0) : 0;
    *left = step == PGW_SQL_ROW ? pgw_sql_column_int64(st, 1) : 0;
    pgw_sql_reset(st);
    return step == PGW_SQL_ROW || step == PGW_SQL_DONE
               ? PGW_OK
               : db_error(s, PGW_EIO, "reading an earn's lot", err);
}

int pgw_store_due_lots(pgw_store *s, int64_t now, int64_t after_id, pgw_lot *out, size_t cap,
                       size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_DUE_LOTS];
    pgw_sql_bind_int64(st, 1, now);
    pgw_sql_bind_int64(st, 2, after_id);
    pgw_sql_bind_int64(st, 3, (int64_t)cap);
    return read_rows(s, st, lot_row, out, sizeof(*out), cap, n, "reading due lots", err);
}

/* ---- spending ------------------------------------------------------------ */

/* What a member's holds keep (ST_MEMBER_HOLD_FIGURES) into h[0..2]:
 * pending points, pending and overdue portions of lots past expiry. */
static int member_hold_figures(pgw_store *s, const char *member, int64_t now, int64_t h[3],
                               pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MEMBER_HOLD_FIGURES];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, now);
    int step = pgw_sql_step(st);
    for (int i = 0; i < 3; i++)
        h[i] = step == PGW_SQL_ROW ? pgw_sql_column_int64(st, i) : 0;
    pgw_sql_reset(st);
    return step == PGW_SQL_ROW ? PGW_OK : db_error(s, PGW_EIO, "reading a member's holds", err);
}

/* A member's figures (into *out, its debt there already) from its lots'
 * sums: live (left + held), left, lapsed_left and unspendable (left, and
 * left + held, of live lots past expiry) and what its holds keep (h[3]:
 * member_hold_figures; all 0 without a hold). */
static int figures_from_sums(pgw_store *s, const char *member, int64_t live, int64_t left,
                             int64_t lapsed_left, int64_t unspendable, const int64_t h[3],
                             pgw_member_figures *out, pgw_err *err)
{
    out->free = left - lapsed_left;
    out->balance = live - out->debt;
    out->pending = h[0];
    /* Points of lots past their expiry stay in the balance until the sweep
     * moves them, but nothing can spend them: only a pending hold's keep
     * their use (its capture takes them), and a hold past its deadline not
     * yet released repays the member's debt from them first (settle_hold:
     * expired lots come first in consumption order; with two such holds
     * this may count a few too many as repaid). */
    int64_t lapsed = unspendable - h[1] - pgw_min64(out->debt, h[2]);
    out->available = out->balance - out->pending - lapsed;
    out->unexpired = out->balance - lapsed;
    if (lapsed < 0) /* pending holds reserve more of a lot than it holds */
        return pgw_err_set_database(err, PGW_EIO, "%s: member %.64s: its holds exceed its lots",
                                    s->path, member);
    return PGW_OK;
}

int pgw_store_member_figures(pgw_store *s, const char *member, int64_t now, bool *found,
                             pgw_member_figures *out, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MEMBER_FIGURES];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, now);
    int step = pgw_sql_step(st);
    memset(out, 0, sizeof(*out));
    *found = step == PGW_SQL_ROW;
    int64_t live = 0, free_left = 0, unspendable = 0, holds[3] = {0, 0, 0};
    bool has_holds = false;
    if (*found) {
        out->debt = pgw_sql_column_int64(st, 0);
        live = pgw_sql_column_int64(st, 1);
        free_left = pgw_sql_column_int64(st, 2);
        unspendable = pgw_sql_column_int64(st, 3);
        has_holds = pgw_sql_column_int64(st, 4) != 0;
    }
    pgw_sql_reset(st);
    if (step != PGW_SQL_ROW && step != PGW_SQL_DONE)
        return db_error(s, PGW_EIO, "reading a member's figures", err);
    int rc = has_holds ? member_hold_figures(s, member, now, holds, err) : PGW_OK;
    if (!*found || rc != PGW_OK)
        return rc;
    return figures_from_sums(s, member, live, free_left, 0, unspendable, holds, out, err);
}

/* Binds a consumption-order cursor at parameters first..first+2. */
static void bind_lot_cursor(pgw_sql_stmt *st, int first, const pgw_lot *after)
{
    pgw_sql_bind_int64(st, first, after ? after->expires_at : INT64_MIN);
    pgw_sql_bind_int64(st, first + 1, after ? after->earned_at : INT64_MIN);
    pgw_sql_bind_int64(st, first + 2, after ? after->id : INT64_MIN);
}

int pgw_store_spendable_lots(pgw_store *s, const char *member, int64_t now, const pgw_lot *after,
                             pgw_lot *out, size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SPENDABLE_LOTS];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, now);
    bind_lot_cursor(st, 3, after);
    pgw_sql_bind_int64(st, 6, (int64_t)cap);
    return read_rows(s, st, lot_row, out, sizeof(*out), cap, n, "reading a member's lots", err);
}

/* Runs an UPDATE that must change exactly one row; PGW_ESTATE otherwise. */
static int update_one(pgw_store *s, pgw_sql_stmt *st, const char *what, pgw_err *err)
{
    int rc = step_done(s, st, what, err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ESTATE, "%s: no such row, or it would break its bounds", what);
    return rc;
}

int pgw_store_move_lot_points(pgw_store *s, int64_t id, int64_t d_left, int64_t d_held,
                              pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MOVE_LOT];
    pgw_sql_bind_int64(st, 1, id);
    pgw_sql_bind_int64(st, 2, d_left);
    pgw_sql_bind_int64(st, 3, d_held);
    return update_one(s, st, "moving a lot's points", err);
}

int pgw_store_give_back_lot_points(pgw_store *s, int64_t id, int64_t points, int64_t at,
                                   pgw_err *err)
{
    PGW_ASSERT(points > 0);
    pgw_sql_stmt *st = s->st[ST_GIVE_BACK_LOT];
    pgw_sql_bind_int64(st, 1, id);
    pgw_sql_bind_int64(st, 2, points);
    pgw_sql_bind_int64(st, 3, at);
    return update_one(s, st, "giving points back to a lot", err);
}

/* ---- earns ------------------------------------------------------------------ */

int pgw_store_insert_earn(pgw_store *s, const pgw_earn_record *e, pgw_err *err)
{
    PGW_ASSERT(e->amount_fen > 0 && e->points > 0);
    PGW_ASSERT(e->n_funders >= 1 && e->n_funders <= PGW_EARN_FUNDERS_MAX);
    pgw_sql_stmt *st = s->st[ST_INSERT_EARN];
    pgw_sql_bind_int64(st, 1, e->first_transfer);
    pgw_sql_bind_text(st, 2, e->member);
    pgw_sql_bind_int64(st, 3, e->amount_fen);
    pgw_sql_bind_int64(st, 4, e->points);
    pgw_sql_bind_int64(st, 5, (int64_t)e->n_funders);
    int rc = send_done(s, st, "writing an earn", err);
    return rc;
}

static int read_reversals(pgw_store *s, pgw_earn_record *e, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_REVERSALS];
    pgw_sql_bind_int64(st, 1, e->first_transfer);
    int rc = PGW_OK, step;
    while (rc == PGW_OK && (step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        int64_t line = pgw_sql_column_int64(st, 0);
        if (line < 0 || line >= (int64_t)e->n_funders)
            rc = pgw_err_set_database(err, PGW_EIO, "%s: earn %.128s has a reversal of line %lld",
                                      s->path, e->key, (long long)line);
        else
            e->reversed[line] = pgw_sql_column_int64(st, 1);
    }
    if (rc == PGW_OK && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading an earn's reversals", err);
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_get_earn(pgw_store *s, const char *key, bool *found, pgw_earn_record *out,
                       pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_EARN];
    pgw_sql_bind_text(st, 1, key);
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    memset(out, 0, sizeof(*out));
    *found = step == PGW_SQL_ROW;
    if (*found) {
        snprintf(out->key, sizeof(out->key), "%s", key);
        out->amount_fen = pgw_sql_column_int64(st, 1);
        out->points = pgw_sql_column_int64(st, 2);
        out->refunded_fen = pgw_sql_column_int64(st, 3);
        out->written_off = pgw_sql_column_int64(st, 4);
        out->first_transfer = pgw_sql_column_int64(st, 5);
        int64_t funders = pgw_sql_column_int64(st, 6);
        out->expired = pgw_sql_column_int64(st, 7);
        out->occurred_at = pgw_sql_column_int64(st, 8);
        if (!column_text(st, 0, out->member, sizeof(out->member)) || funders < 1 ||
            funders > PGW_EARN_FUNDERS_MAX)
            rc = pgw_err_set_database(err, PGW_EIO, "%s: earn %.128s is malformed", s->path, key);
        out->n_funders = rc == PGW_OK ? (size_t)funders : 0;
    } else if (step != PGW_SQL_DONE) {
        rc = db_error(s, PGW_EIO, "reading an earn", err);
    }
    pgw_sql_reset(st);
    if (rc == PGW_OK && *found)
        rc = read_reversals(s, out, err);
    return rc;
}

int pgw_store_get_unearned(pgw_store *s, const char *key, bool *found, pgw_earn_record *out,
                           pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_UNEARNED];
    pgw_sql_bind_text(st, 1, key);
    int step = pgw_sql_step(st), rc = PGW_OK;
    memset(out, 0, sizeof(*out));
    *found = step == PGW_SQL_ROW;
    if (*found) {
        snprintf(out->key, sizeof(out->key), "%s", key);
        out->amount_fen = pgw_sql_column_int64(st, 1);
        out->refunded_fen = pgw_sql_column_int64(st, 2);
        out->occurred_at = pgw_sql_column_int64(st, 3);
        if (!column_text(st, 0, out->member, sizeof(out->member)) || out->amount_fen < 1 ||
            out->refunded_fen < 0 || out->refunded_fen > out->amount_fen)
            rc = pgw_err_set_database(err, PGW_EIO, "%s: purchase %.128s is malformed", s->path,
                                      key);
    } else if (step != PGW_SQL_DONE) {
        rc = db_error(s, PGW_EIO, "reading a purchase", err);
    }
    pgw_sql_reset(st);
    /* Its key keeps the buyer it had; merges moved the buyer since. */
    if (rc == PGW_OK && *found)
        rc = pgw_store_survivor(s, out->member, NULL, err);
    return rc;
}

int pgw_store_update_earn(pgw_store *s, const pgw_earn_record *e, pgw_err *err)
{
    if (e->n_funders == 0) { /* a purchase that earned nothing */
        PGW_ASSERT(e->points == 0 && e->first_transfer == 0 && e->refunded_fen > 0);
        pgw_sql_stmt *st = s->st[ST_PUT_UNEARNED_REFUND];
        pgw_sql_bind_text(st, 1, e->key);
        pgw_sql_bind_int64(st, 2, e->refunded_fen);
        return step_done(s, st, "recording a refund of a purchase that earned nothing", err);
    }
    pgw_sql_stmt *st = s->st[ST_UPDATE_EARN];
    pgw_sql_bind_int64(st, 1, e->first_transfer);
    pgw_sql_bind_int64(st, 2, e->refunded_fen);
    pgw_sql_bind_int64(st, 3, e->written_off);
    int rc = update_one(s, st, "updating an earn", err);
    for (size_t i = 0; rc == PGW_OK && i < e->n_funders; i++) {
        if (e->reversed[i] == 0)
            continue; /* absent rows read as 0, and reversals never shrink */
        st = s->st[ST_PUT_REVERSAL];
        pgw_sql_bind_int64(st, 1, e->first_transfer);
        pgw_sql_bind_int64(st, 2, (int64_t)i);
        pgw_sql_bind_int64(st, 3, e->reversed[i]);
        rc = step_done(s, st, "recording a reversal", err);
    }
    return rc;
}

/* ---- holds ------------------------------------------------------------------ */

static void bind_hold(pgw_sql_stmt *st, const pgw_hold_record *h)
{
    pgw_sql_bind_text(st, 1, h->id);
    pgw_sql_bind_text(st, 2, h->member);
    pgw_sql_bind_text(st, 3, h->shop);
    pgw_sql_bind_int64(st, 4, h->points);
    pgw_sql_bind_int64(st, 5, h->captured);
    pgw_sql_bind_int64(st, 6, (int)h->state);
    pgw_sql_bind_int64(st, 7, h->deadline);
    pgw_sql_bind_int64(st, 8, h->created_at);
    pgw_sql_bind_int64(st, 9, h->capture_transfer);
}

/* One row of HOLD_COLUMNS; false when a field does not fit or the state is unknown. */
static bool row_to_hold(pgw_sql_stmt *st, pgw_hold_record *h)
{
    memset(h, 0, sizeof(*h));
    h->points = pgw_sql_column_int64(st, 3);
    h->captured = pgw_sql_column_int64(st, 4);
    int state = pgw_sql_column_int64(st, 5);
    h->state = (pgw_hold_state)state;
    h->deadline = pgw_sql_column_int64(st, 6);
    h->created_at = pgw_sql_column_int64(st, 7);
    h->capture_transfer = pgw_sql_column_int64(st, 8);
    return state >= PGW_HOLD_PENDING && state <= PGW_HOLD_EXPIRED &&
           column_text(st, 0, h->id, sizeof(h->id)) &&
           column_text(st, 1, h->member, sizeof(h->member)) &&
           column_text(st, 2, h->shop, sizeof(h->shop));
}

static bool hold_row(pgw_sql_stmt *st, void *item)
{
    return row_to_hold(st, item);
}

int pgw_store_insert_hold(pgw_store *s, const pgw_hold_record *h, pgw_err *err)
{
    PGW_ASSERT(h->points > 0 && h->state == PGW_HOLD_PENDING);
    pgw_sql_stmt *st = s->st[ST_INSERT_HOLD];
    bind_hold(st, h);
    int rc = step_done(s, st, "writing a hold", err);
    return rc;
}

int pgw_store_get_hold(pgw_store *s, const char *id, bool *found, pgw_hold_record *out,
                       pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_HOLD];
    pgw_sql_bind_text(st, 1, id);
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    *found = step == PGW_SQL_ROW;
    if (*found && !row_to_hold(st, out))
        rc = pgw_err_set_database(err, PGW_EIO, "%s: hold %.128s is malformed", s->path, id);
    else if (!*found && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading a hold", err);
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_update_hold(pgw_store *s, const pgw_hold_record *h, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_UPDATE_HOLD];
    pgw_sql_bind_text(st, 1, h->id);
    pgw_sql_bind_int64(st, 2, (int)h->state);
    pgw_sql_bind_int64(st, 3, h->captured);
    pgw_sql_bind_int64(st, 4, h->capture_transfer);
    return update_one(s, st, "updating a hold", err);
}

/*
 * Adds `points` of `lot` to the row of `key` (a hold's portion, a spend's
 * lot) with statement `add`, or takes -points from it with `take`. SQLite
 * checks CHECK constraints on the row an upsert would insert, before the
 * conflict: taking points is a plain UPDATE.
 */
static int move_row_points(pgw_store *s, int add, int take, const char *key, int64_t lot,
                           int64_t points, const char *adding, const char *taking, pgw_err *err)
{
    PGW_ASSERT(points != 0);
    pgw_sql_stmt *st = s->st[points > 0 ? add : take];
    pgw_sql_bind_text(st, 1, key);
    pgw_sql_bind_int64(st, 2, lot);
    pgw_sql_bind_int64(st, 3, points > 0 ? points : -points);
    return points < 0 ? update_one(s, st, taking, err) : step_done(s, st, adding, err);
}

int pgw_store_add_portion(pgw_store *s, const char *hold, int64_t lot, int64_t points, pgw_err *err)
{
    return move_row_points(s, ST_ADD_PORTION, ST_TAKE_PORTION, hold, lot, points,
                           "reserving a lot portion", "giving back part of a lot portion", err);
}

int pgw_store_hold_portions(pgw_store *s, const char *hold, const pgw_lot *after, pgw_portion *out,
                            size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_HOLD_PORTIONS];
    pgw_sql_bind_text(st, 1, hold);
    bind_lot_cursor(st, 2, after);
    pgw_sql_bind_int64(st, 5, (int64_t)cap);
    return read_rows(s, st, portion_row, out, sizeof(*out), cap, n, "reading a hold's portions",
                     err);
}

int pgw_store_release_hold(pgw_store *s, const char *hold, int64_t at, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_RELEASE_LOTS];
    pgw_sql_bind_text(st, 1, hold);
    pgw_sql_bind_int64(st, 2, at);
    int rc = step_done(s, st, "releasing a hold's lots", err);
    if (rc != PGW_OK)
        return rc;
    st = s->st[ST_EMPTY_PORTIONS];
    pgw_sql_bind_text(st, 1, hold);
    rc = step_done(s, st, "releasing a hold's portions", err);
    return rc;
}

int pgw_store_add_spent(pgw_store *s, const char *spend, int64_t lot, int64_t points, pgw_err *err)
{
    return move_row_points(s, ST_ADD_SPENT, ST_TAKE_SPENT, spend, lot, points,
                           "recording a spend's lot", "giving back part of a spend", err);
}

int pgw_store_spent_lots(pgw_store *s, const char *spend, pgw_portion *out, size_t cap, size_t *n,
                         pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SPENT_LOTS];
    pgw_sql_bind_text(st, 1, spend);
    pgw_sql_bind_int64(st, 2, (int64_t)cap);
    return read_rows(s, st, portion_row, out, sizeof(*out), cap, n, "reading a spend's lots", err);
}

int pgw_store_spent_left(pgw_store *s, const char *spend, int64_t *out, bool *recorded,
                         pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SPENT_LEFT];
    pgw_sql_bind_text(st, 1, spend);
    int step = pgw_sql_step(st);
    int rc =
        step == PGW_SQL_ROW ? PGW_OK : db_error(s, PGW_EIO, "reading what a spend has left", err);
    *out = rc == PGW_OK ? pgw_sql_column_int64(st, 0) : 0;
    /* Rows stay (at 0) when returns empty them: none at all, none recorded. */
    *recorded = rc == PGW_OK && pgw_sql_column_int64(st, 1) > 0;
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_due_holds(pgw_store *s, int64_t now, const pgw_hold_record *after,
                        pgw_hold_record *out, size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_DUE_HOLDS];
    pgw_sql_bind_int64(st, 1, now);
    pgw_sql_bind_int64(st, 2, after ? after->deadline : INT64_MIN);
    pgw_sql_bind_text(st, 3, after ? after->id : "");
    pgw_sql_bind_int64(st, 4, (int64_t)cap);
    return read_rows(s, st, hold_row, out, sizeof(*out), cap, n, "reading due holds", err);
}

int pgw_store_member_due_holds(pgw_store *s, const char *member, int64_t now, pgw_hold_record *out,
                               size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MEMBER_DUE_HOLDS];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, now);
    pgw_sql_bind_int64(st, 3, (int64_t)cap);
    return read_rows(s, st, hold_row, out, sizeof(*out), cap, n, "reading a member's due holds",
                     err);
}

/* One member account's page of history (either side), newest first. */
static int account_history(pgw_store *s, const char *member, int64_t before_id, pgw_transfer *out,
                           size_t cap, size_t *n, pgw_err *err)
{
    char account[PGW_ACCOUNT_MAX + 1];
    snprintf(account, sizeof(account), "member:%.*s", PGW_ID_MAX, member);
    pgw_sql_stmt *st = s->st[ST_HISTORY];
    pgw_sql_bind_text(st, 1, account);
    pgw_sql_bind_int64(st, 2, before_id > 0 ? before_id : INT64_MAX);
    pgw_sql_bind_int64(st, 3, (int64_t)cap);
    pgw_sql_bind_text(st, 4, member);
    return read_rows(s, st, transfer_row, out, sizeof(*out), cap, n, "reading a member's history",
                     err);
}

static bool id_row(pgw_sql_stmt *st, void *out)
{
    return column_text(st, 0, out, PGW_ID_MAX + 1);
}

/*
 * Merges `b` (nb) into `a` (na), both newest first, keeping the newest
 * `cap` and each id once (a MERGE between two of the accounts is in both).
 * `tmp` has room for cap.
 */
static size_t merge_newest(pgw_transfer *a, size_t na, const pgw_transfer *b, size_t nb,
                           pgw_transfer *tmp, size_t cap)
{
    size_t i = 0, j = 0, k = 0;
    while (k < cap && (i < na || j < nb)) {
        if (j == nb || (i < na && a[i].id > b[j].id)) {
            tmp[k++] = a[i++];
        } else if (i == na || b[j].id > a[i].id) {
            tmp[k++] = b[j++];
        } else { /* the same transfer, seen from both accounts */
            tmp[k++] = a[i++];
            j++;
        }
    }
    memcpy(a, tmp, k * sizeof(*a));
    return k;
}

int pgw_store_merged_members(pgw_store *s, const char *member, char (*out)[PGW_ID_MAX + 1],
                             size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MERGED_MEMBERS];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, (int64_t)cap);
    return read_rows(s, st, id_row, out, sizeof(out[0]), cap, n,
                     "reading the members merged into one", err);
}

int pgw_store_member_history(pgw_store *s, const char *member, int64_t before_id, pgw_transfer *out,
                             size_t cap, size_t *n, pgw_err *err)
{
    char merged[PGW_HISTORY_MERGED_MAX][PGW_ID_MAX + 1];
    size_t n_merged = 0;
    int rc = pgw_store_merged_members(s, member, merged, PGW_HISTORY_MERGED_MAX, &n_merged, err);
    if (rc == PGW_OK)
        rc = account_history(s, member, before_id, out, cap, n, err);
    if (rc != PGW_OK || n_merged == 0)
        return rc;
    /* Only a member others were merged into pays for this room. */
    pgw_transfer *page = calloc(2 * cap, sizeof(*page));
    if (page == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for a merged member's history");
    for (size_t i = 0; rc == PGW_OK && i < n_merged; i++) {
        size_t got = 0;
        rc = account_history(s, merged[i], before_id, page, cap, &got, err);
        if (rc == PGW_OK)
            *n = merge_newest(out, *n, page, got, page + cap, cap);
    }
    free(page);
    return rc;
}

int pgw_store_member_expiring(pgw_store *s, const char *member, int64_t now, pgw_expiring *out,
                              size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_EXPIRING];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, now);
    pgw_sql_bind_int64(st, 3, PGW_NEVER);
    pgw_sql_bind_int64(st, 4, (int64_t)cap);
    int step;
    *n = 0;
    while ((step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        PGW_ASSERT(*n < cap);
        out[*n].expires_at = pgw_sql_column_int64(st, 0);
        out[(*n)++].points = pgw_sql_column_int64(st, 1);
    }
    pgw_sql_reset(st);
    return step == PGW_SQL_DONE ? PGW_OK : db_error(s, PGW_EIO, "reading expiring points", err);
}

/* ---- identities ------------------------------------------------------------------ */

int pgw_store_find_identity(pgw_store *s, const pgw_identity_key *key, bool *found,
                            char member[PGW_ID_MAX + 1], pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_FIND_IDENTITY];
    pgw_sql_bind_int64(st, 1, (int)key->kind);
    pgw_sql_bind_text(st, 2, key->scope);
    pgw_sql_bind_text(st, 3, key->lookup);
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    *found = step == PGW_SQL_ROW;
    if (*found && !column_text(st, 0, member, PGW_ID_MAX + 1))
        rc =
            pgw_err_set_database(err, PGW_EIO, "%s: an identity names a malformed member", s->path);
    else if (!*found && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "looking up an identity", err);
    pgw_sql_reset(st);
    return rc;
}

/* The member's notices held for SMS are due again (ST_WAKE_NOTICES), the
 * channels `reopened` (core/notice.h) no longer excluded: a subscription,
 * a WeChat identity or a merge may let WeChat reach them. */
static int wake_notices(pgw_store *s, const char *member, unsigned reopened, pgw_err *err)
{
    /* None: a claimed notice's mark would say nothing (PGW_NOTICE_WOKEN). */
    PGW_ASSERT(reopened != 0 && (reopened & ~(unsigned)(PGW_CHANNEL_MP | PGW_CHANNEL_OA)) == 0);
    pgw_sql_stmt *st = s->st[ST_WAKE_NOTICES];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, (int64_t)reopened);
    return step_done(s, st, "waking held notices", err);
}

/* The same for whoever holds an official-account openid that follows now:
 * a 43004 (not following) no longer holds. */
static int wake_follower(pgw_store *s, const char *appid, const char *openid, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_WAKE_FOLLOWER];
    pgw_sql_bind_text(st, 1, appid);
    pgw_sql_bind_text(st, 2, openid);
    pgw_sql_bind_int64(st, 3, (int)PGW_ID_OA_OPENID);
    pgw_sql_bind_int64(st, 4, (int64_t)PGW_CHANNEL_OA);
    return step_done(s, st, "waking held notices", err);
}

/* The channel an identity of `kind` lets reach a member (0: none). */
static unsigned channel_of(pgw_identity_kind kind)
{
    return kind == PGW_ID_MP_OPENID   ? (unsigned)PGW_CHANNEL_MP
           : kind == PGW_ID_OA_OPENID ? (unsigned)PGW_CHANNEL_OA
                                      : 0u;
}

int pgw_store_bind_identity(pgw_store *s, const pgw_identity_key *key, const char *member,
                            int64_t now_us, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_BIND_IDENTITY];
    pgw_sql_bind_int64(st, 1, (int)key->kind);
    pgw_sql_bind_text(st, 2, key->scope);
    pgw_sql_bind_text(st, 3, key->lookup);
    pgw_sql_bind_text(st, 4, member);
    if (key->sealed_len > 0)
        pgw_sql_bind_blob(st, 5, key->sealed, (int)key->sealed_len);
    else
        pgw_sql_bind_null(st, 5);
    pgw_sql_bind_int64(st, 6, now_us);
    int rc = step_done(s, st, "binding an identity", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) == 0) /* the primary key: already someone's */
        rc = pgw_err_set(err, PGW_ECONFLICT, "that %s already belongs to a member",
                         pgw_identity_kind_name(key->kind));
    if (rc == PGW_OK && channel_of(key->kind) != 0) /* WeChat may reach them now */
        rc = wake_notices(s, member, channel_of(key->kind), err);
    return rc;
}

static bool identity_row(pgw_sql_stmt *st, void *item)
{
    pgw_identity_key *k = item;
    memset(k, 0, sizeof(*k));
    k->kind = (pgw_identity_kind)pgw_sql_column_int64(st, 0);
    size_t sealed = pgw_sql_column_bytes(st, 3);
    if (sealed > sizeof(k->sealed))
        return false;
    if (sealed > 0)
        memcpy(k->sealed, pgw_sql_column_blob(st, 3), sealed);
    k->sealed_len = sealed;
    return column_text(st, 1, k->scope, sizeof(k->scope)) &&
           column_text(st, 2, k->lookup, sizeof(k->lookup));
}

int pgw_store_member_identities(pgw_store *s, const char *member, pgw_identity_key *out, size_t cap,
                                size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MEMBER_IDENTITIES];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, (int64_t)cap);
    return read_rows(s, st, identity_row, out, sizeof(*out), cap, n, "reading identities", err);
}

int pgw_store_some_phones(pgw_store *s, pgw_identity_key out[2], size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SOME_PHONES];
    pgw_sql_bind_int64(st, 1, (int)PGW_ID_PHONE);
    return read_rows(s, st, identity_row, out, sizeof(*out), 2, n, "reading stored phones", err);
}

int pgw_store_member_reach(pgw_store *s, const char *member, const char *mp_appid,
                           const char *oa_appid, pgw_identity_key out[3], size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MEMBER_REACH];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, mp_appid);
    pgw_sql_bind_text(st, 3, oa_appid);
    return read_rows(s, st, identity_row, out, sizeof(*out), 3, n, "reading whom to notify", err);
}

/* ---- merges ----------------------------------------------------------------------- */

int pgw_store_merged_into(pgw_store *s, const char *member, char into[PGW_ID_MAX + 1], pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MERGED_INTO];
    pgw_sql_bind_text(st, 1, member);
    return one_member_id(s, st, member, "merged_into", into, "reading a merge", err);
}

/* The newest merge into a member's account: by the merges' index
 * (transfers_merges_in, whose condition the query repeats so that either
 * database may use it), not the whole log. */
#define MERGED_IN_AT                                                                               \
    "SELECT COALESCE(MAX(occurred_at), 0) FROM transfers WHERE credit = ?1"                        \
    " AND credit LIKE 'member:%' AND kind = 6"

int pgw_store_merged_in_at(pgw_store *s, const char *member, int64_t *at, pgw_err *err)
{
    PGW_STATIC_ASSERT(PGW_TRANSFER_MERGE == 6, "the query names MERGE by its number");
    char account[PGW_ACCOUNT_MAX + 1];
    snprintf(account, sizeof(account), "member:%s", member);
    *at = 0;
    pgw_sql_stmt *st = NULL;
    if (prepare(s, MERGED_IN_AT, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "reading a member's merges", err);
    pgw_sql_bind_text(st, 1, account);
    int step = pgw_sql_step(st);
    if (step == PGW_SQL_ROW)
        *at = pgw_sql_column_int64(st, 0);
    release(s, st);
    return step == PGW_SQL_ROW ? PGW_OK : db_error(s, PGW_EIO, "reading a member's merges", err);
}

/* The merge that took a member into another: the MERGE transfer its
 * merge wrote (reference merge:<member>), on whichever side the member's
 * balance put it, each side read by its merges' index. */
#define MERGE_OF                                                                                   \
    "SELECT occurred_at, debit, credit FROM transfers WHERE debit = ?1"                            \
    " AND debit LIKE 'member:%' AND kind = 6 AND reference = ?2"                                   \
    " UNION ALL SELECT occurred_at, debit, credit FROM transfers WHERE credit = ?1"                \
    " AND credit LIKE 'member:%' AND kind = 6 AND reference = ?2 ORDER BY 1 DESC LIMIT 1"

int pgw_store_merge_of(pgw_store *s, const char *member, bool *found, int64_t *at,
                       char into[PGW_ID_MAX + 1], pgw_err *err)
{
    PGW_STATIC_ASSERT(PGW_TRANSFER_MERGE == 6, "the query names MERGE by its number");
    char account[PGW_ACCOUNT_MAX + 1], reference[PGW_ACCOUNT_MAX + 1];
    snprintf(account, sizeof(account), "member:%s", member);
    snprintf(reference, sizeof(reference), "merge:%s", member);
    *found = false;
    *at = 0;
    into[0] = '\0';
    pgw_sql_stmt *st = NULL;
    if (prepare(s, MERGE_OF, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "reading a member's merge", err);
    pgw_sql_bind_text(st, 1, account);
    pgw_sql_bind_text(st, 2, reference);
    int step = pgw_sql_step(st), rc = PGW_OK;
    if (step == PGW_SQL_ROW) {
        char debit[PGW_ACCOUNT_MAX + 1], credit[PGW_ACCOUNT_MAX + 1];
        const char *other = NULL;
        if (column_text(st, 1, debit, sizeof(debit)) && column_text(st, 2, credit, sizeof(credit)))
            other = strcmp(debit, account) == 0 ? credit : debit;
        if (other == NULL || strncmp(other, "member:", 7) != 0 || strlen(other + 7) > PGW_ID_MAX)
            rc = pgw_err_set_database(err, PGW_EIO, "%s: the merge of %s has a malformed account",
                                      s->path, member);
        else {
            memcpy(into, other + 7, strlen(other + 7) + 1);
            *at = pgw_sql_column_int64(st, 0);
            *found = true;
        }
    } else if (step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading a member's merge", err);
    release(s, st);
    return rc;
}

int pgw_store_survivor(pgw_store *s, char member[PGW_ID_MAX + 1], char first[PGW_ID_MAX + 1],
                       pgw_err *err)
{
    char into[PGW_ID_MAX + 1];
    for (int hop = 0; hop < PGW_MERGE_HOPS_MAX; hop++) {
        int rc = pgw_store_merged_into(s, member, into, err);
        if (rc != PGW_OK || into[0] == '\0')
            return rc;
        if (first != NULL && first[0] == '\0')
            memcpy(first, member, PGW_ID_MAX + 1);
        memcpy(member, into, PGW_ID_MAX + 1);
    }
    return pgw_err_set(err, PGW_EIO, "member %s: merges loop", member);
}

/* ST_PIN_SUBSCRIPTIONS, then ST_DROP_UNPINNED, for `member`. */
static int pin_subscriptions(pgw_store *s, const char *member, pgw_err *err)
{
    pgw_sql_stmt *pin = s->st[ST_PIN_SUBSCRIPTIONS], *drop = s->st[ST_DROP_UNPINNED];
    pgw_sql_bind_text(pin, 1, member);
    pgw_sql_bind_int64(pin, 2, PGW_QUOTA_MAX);
    int rc = step_done(s, pin, "merging members", err);
    if (rc == PGW_OK) {
        pgw_sql_bind_text(drop, 1, member);
        rc = step_done(s, drop, "merging members", err);
    }
    return rc;
}

int pgw_store_merge_rows(pgw_store *s, const char *from, const char *into, pgw_err *err)
{
    PGW_ASSERT(strcmp(from, into) != 0);
    int rc = pin_subscriptions(s, from, err);
    if (rc == PGW_OK)
        rc = pin_subscriptions(s, into, err);
    static const int moves[] = {
        ST_MERGE_LOTS,          ST_MERGE_HOLDS,          ST_MERGE_EARNS,
        ST_MERGE_IDENTITIES,    ST_MERGE_DAYS,           ST_MERGE_RULE_DAYS,
        ST_MERGE_SUBSCRIPTIONS, ST_MERGE_NOTICES,        ST_DROP_DAYS,
        ST_DROP_RULE_DAYS,      ST_DROP_SUBSCRIPTIONS,   ST_REPOINT_MERGED,
        ST_MERGE_FLAGS,         ST_MERGE_CHALLENGE_DAYS, ST_DROP_CHALLENGE_DAYS,
        ST_MERGE_REMINDERS,     ST_DROP_REMINDERS,       ST_SET_MERGED};
    for (size_t i = 0; rc == PGW_OK && i < sizeof(moves) / sizeof(moves[0]); i++) {
        pgw_sql_stmt *st = s->st[moves[i]];
        pgw_sql_bind_text(st, 1, from);
        if (pgw_sql_param_count(st) >= 2) /* the deletes name only `from` */
            pgw_sql_bind_text(st, 2, into);
        if (pgw_sql_param_count(st) >= 3)
            pgw_sql_bind_int64(st, 3, PGW_QUOTA_MAX);
        rc = step_done(s, st, "merging members", err);
    }
    if (rc == PGW_OK) {
        pgw_sql_bind_text(s->st[ST_RUN_DAYS], 1, into);
        rc = step_done(s, s->st[ST_RUN_DAYS], "merging members", err);
    }
    /* The survivor holds both members' identities and quotas: WeChat may
     * reach notices either held for SMS, by openids that did not refuse. */
    return rc == PGW_OK ? wake_notices(s, into, PGW_CHANNEL_MP | PGW_CHANNEL_OA, err) : rc;
}

int pgw_store_claim_receipt(pgw_store *s, const char *shop, const char *receipt, const char *key,
                            pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_CLAIM_RECEIPT];
    pgw_sql_bind_text(st, 1, shop);
    pgw_sql_bind_text(st, 2, receipt);
    pgw_sql_bind_text(st, 3, key);
    int rc = step_done(s, st, "recording a receipt", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) == 0)
        rc = pgw_err_set(err, PGW_ECONFLICT, "receipt %.64s at shop %s was already used", receipt,
                         shop);
    return rc;
}

int pgw_store_receipt_claimant(pgw_store *s, const char *shop, const char *receipt,
                               char key[PGW_IDEM_KEY_MAX + 1], pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_RECEIPT_CLAIMANT];
    pgw_sql_bind_text(st, 1, shop);
    pgw_sql_bind_text(st, 2, receipt);
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    key[0] = '\0';
    if (step == PGW_SQL_ROW && !column_text(st, 0, key, PGW_IDEM_KEY_MAX + 1))
        rc = pgw_err_set_database(err, PGW_EIO, "%s: receipt %.64s at %s has a malformed key",
                                  s->path, receipt, shop);
    else if (step != PGW_SQL_ROW && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading a receipt", err);
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_enrolments(pgw_store *s, const char *address, int64_t hour, int64_t *members,
                         pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_ENROLMENTS];
    pgw_sql_bind_text(st, 1, address);
    pgw_sql_bind_int64(st, 2, hour);
    return one_int64(s, st, true, members, "reading enrolments", err);
}

int pgw_store_add_enrolment(pgw_store *s, const char *address, int64_t hour, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_ADD_ENROLMENT];
    pgw_sql_bind_text(st, 1, address);
    pgw_sql_bind_int64(st, 2, hour);
    int rc = step_done(s, st, "counting an enrolment", err);
    return rc;
}

int pgw_store_member_on_wechat(pgw_store *s, const char *member, bool *on_wechat, pgw_err *err)
{
    PGW_STATIC_ASSERT(PGW_ID_MP_OPENID == 3 && PGW_ID_OA_OPENID == 4 && PGW_ID_UNIONID == 5,
                      "ST_MEMBER_WECHAT_IDS names the kinds by number");
    pgw_sql_stmt *st = s->st[ST_MEMBER_WECHAT_IDS];
    pgw_sql_bind_text(st, 1, member);
    int64_t n = 0;
    int rc = one_int64(s, st, false, &n, "reading a member's WeChat identities", err);
    *on_wechat = n > 0;
    return rc;
}

int pgw_store_member_created(pgw_store *s, const char *member, int64_t *created_us, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MEMBER_CREATED];
    pgw_sql_bind_text(st, 1, member);
    return one_int64(s, st, true, created_us, "reading a member", err);
}

int pgw_store_referred_by(pgw_store *s, const char *member, char by[PGW_ID_MAX + 1], pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_REFERRED_BY];
    pgw_sql_bind_text(st, 1, member);
    return one_member_id(s, st, member, "referred_by", by, "reading a referral", err);
}

int pgw_store_set_referred_by(pgw_store *s, const char *member, const char *by, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SET_REFERRED_BY];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, by);
    return update_one(s, st, "recording a referral", err);
}

/* ---- member activity ---------------------------------------------------------- */

static bool rule_total_row(pgw_sql_stmt *st, void *item)
{
    pgw_rule_total *t = item;
    t->points = pgw_sql_column_int64(st, 1);
    return column_text(st, 0, t->rule, sizeof(t->rule));
}

int pgw_store_member_rule_points(pgw_store *s, const char *member, const char *rule, int64_t first,
                                 int64_t last, int64_t *points, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_RULE_POINTS];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, rule);
    pgw_sql_bind_int64(st, 3, first);
    pgw_sql_bind_int64(st, 4, last);
    return one_int64(s, st, false, points, "reading a rule's points", err);
}

/* Reads up to PGW_ACTIVITY_TODAY_MAX rule totals of `day` into a->today. */
int pgw_store_member_today(pgw_store *s, const char *member, int64_t day, pgw_member_activity *a,
                           pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_ACTIVITY_TODAY];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, day);
    pgw_sql_bind_int64(st, 3, PGW_ACTIVITY_TODAY_MAX);
    int rc = read_rows(s, st, rule_total_row, a->today, sizeof(a->today[0]), PGW_ACTIVITY_TODAY_MAX,
                       &a->n_today, "reading today's points", err);
    a->today_read = rc == PGW_OK;
    return rc;
}

/* pgw_store_member_activity clears all that comes before today[]; after it
 * comes only today_read, which it sets. */
_Static_assert(offsetof(pgw_member_activity, n_today) < offsetof(pgw_member_activity, today) &&
                   offsetof(pgw_member_activity, today_read) >
                       offsetof(pgw_member_activity, today) &&
                   sizeof(pgw_member_activity) - offsetof(pgw_member_activity, today_read) <=
                       sizeof(int64_t),
               "member activity's layout");

/* A member's activity_days row (DAY_COLUMNS), or all 0 for none. */
typedef struct activity_day {
    int64_t day, purchases, spend_fen, events;
    pgw_day_run run;
} activity_day;

/* The DAY_COLUMNS of st's row, from column `first` on. */
static activity_day day_columns(pgw_sql_stmt *st, int first)
{
    return (activity_day){
        .day = pgw_sql_column_int64(st, first),
        .purchases = pgw_sql_column_int64(st, first + 1),
        .spend_fen = pgw_sql_column_int64(st, first + 2),
        .events = pgw_sql_column_int64(st, first + 3),
        .run = {pgw_sql_column_int64(st, first + 4), pgw_sql_column_int64(st, first + 5)}};
}

/* *out: the member's last day row on or before `day` (none: all 0). */
static int read_day_at(pgw_store *s, const char *member, int64_t day, activity_day *out,
                       pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_DAY_AT];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, day);
    int step = pgw_sql_step(st);
    *out = step == PGW_SQL_ROW ? day_columns(st, 0) : (activity_day){0};
    pgw_sql_reset(st);
    return step == PGW_SQL_ROW || step == PGW_SQL_DONE
               ? PGW_OK
               : db_error(s, PGW_EIO, "reading a member's day", err);
}

/* The member's columns of ST_ACTIVITY's tag 0 row into *out. */
static bool read_member_columns(pgw_sql_stmt *st, pgw_member_activity *out)
{
    out->purchased_before = pgw_sql_column_int64(st, 1) != 0;
    out->registered_before = pgw_sql_column_int64(st, 2) != 0;
    out->followed_before = pgw_sql_column_int64(st, 3) != 0;
    out->has_last_sign_in = !pgw_sql_column_null(st, 4);
    out->last_sign_in = pgw_sql_column_int64(st, 4);
    out->sign_in_streak = (int32_t)pgw_sql_column_int64(st, 5);
    out->debt = pgw_sql_column_int64(st, 7);
    out->merged = pgw_sql_column_int64(st, 8) != 0;
    return column_text(st, 6, out->birthday, sizeof(out->birthday));
}

/* The windows from the member's last day up to today, the last up to a
 * year before and the last before the month (none: all 0). Running totals
 * only grow by what a window holds, so a difference that overflows is a
 * damaged row. */
static bool activity_from_days(const activity_day *last, const activity_day *year_before,
                               const activity_day *month_before, int64_t today,
                               pgw_member_activity *out)
{
    bool is_today = last->day == today;
    out->events_today = is_today ? last->events : 0;
    out->before_today = last->run;
    return pgw_sub(last->run.spend_fen, year_before->run.spend_fen, &out->spend_12m_fen) ==
               PGW_OK &&
           pgw_sub(last->run.purchases, month_before->run.purchases, &out->month_purchases) ==
               PGW_OK &&
           pgw_sub(last->run.spend_fen, month_before->run.spend_fen, &out->month_spend_fen) ==
               PGW_OK &&
           (!is_today || (pgw_sub(last->run.purchases, last->purchases,
                                  &out->before_today.purchases) == PGW_OK &&
                          pgw_sub(last->run.spend_fen, last->spend_fen,
                                  &out->before_today.spend_fen) == PGW_OK));
}

int pgw_store_member_activity(pgw_store *s, const char *member, const pgw_activity_days *days,
                              bool *found, pgw_member_activity *out, pgw_err *err)
{
    PGW_ASSERT(days->year_before < days->month_first && days->month_first <= days->today);
    pgw_sql_stmt *st = s->st[ST_ACTIVITY];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, days->year_before);
    pgw_sql_bind_int64(st, 3, days->month_first);
    pgw_sql_bind_int64(st, 4, days->figures_at);
    /* All but today[], 12 KB, which only n_today (zeroed here) says is
     * filled: clearing it was 5% of the writer's instructions per event. */
    memset(out, 0, offsetof(pgw_member_activity, today));
    activity_day d[4] = {{0}};
    int64_t sums[5] = {0}; /* live, left (tag 0); lapsed left, unspendable, has a hold (4) */
    bool seen[5] = {false}, fits = true;
    int step;
    bool none = false;
    while (!none && (step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        int64_t tag = pgw_sql_column_int64(st, 0);
        PGW_ASSERT(tag >= 0 && tag < 5 && !seen[tag]); /* one row per arm at most */
        seen[tag] = true;
        none = tag == 0 && pgw_sql_column_int64(st, 8) == -1; /* no days without a member */
        if (tag == 0 && !none)
            fits &= read_member_columns(st, out);
        else if (tag > 0 && tag < 4)
            d[tag] = day_columns(st, 9);
        /* Tag 0 fills columns 15 and 16, tag 4 17 to 19: NULL in the other. */
        for (int i = 0; (tag == 0 || tag == 4) && i < 5; i++)
            if (!pgw_sql_column_null(st, 15 + i))
                sums[i] = pgw_sql_column_int64(st, 15 + i);
    }
    pgw_sql_reset(st);
    *found = seen[0] && !none;
    out->today_read = !*found; /* none, for a member not seen yet */
    if (!none && step != PGW_SQL_DONE)
        return db_error(s, PGW_EIO, "reading a member's activity", err);
    /* Rare: a later day is recorded (a till sent it before today's), so
     * today's totals are an earlier row's. */
    out->later_days = d[1].day > days->today;
    int rc = out->later_days ? read_day_at(s, member, days->today, &d[1], err) : PGW_OK;
    if (rc == PGW_OK && (!fits || !activity_from_days(&d[1], &d[2], &d[3], days->today, out)))
        rc = pgw_err_set_database(
            err, PGW_EIO, "%s: member %s has a malformed birthday or day totals", s->path, member);
    /* A member not seen yet has none: all 0. */
    static const int64_t no_holds[3] = {0, 0, 0};
    bool figures = days->figures_at != 0 && (none || seen[4]) && sums[4] == 0;
    out->figures.debt = out->debt;
    if (rc == PGW_OK && figures)
        rc = figures_from_sums(s, member, sums[0], sums[1], sums[2], sums[3], no_holds,
                               &out->figures, err);
    out->has_figures = rc == PGW_OK && figures;
    return rc;
}

int pgw_store_add_member_day(pgw_store *s, const char *member, int64_t day, int64_t purchases,
                             int64_t spend_fen, int64_t events, bool later_days,
                             const pgw_day_run *before, pgw_err *err)
{
    PGW_ASSERT(events == 0 || events == 1);
    activity_day last = {0};
    int rc = before == NULL ? read_day_at(s, member, day - 1, &last, err) : PGW_OK;
    if (before == NULL)
        before = &last.run;
    static const int steps[] = {ST_ADD_DAY, ST_ADD_TO_LATER_DAYS};
    size_t n = later_days ? 2 : 1; /* none later: no range to update */
    for (size_t i = 0; rc == PGW_OK && i < n; i++) {
        pgw_sql_stmt *st = s->st[steps[i]];
        pgw_sql_bind_text(st, 1, member);
        pgw_sql_bind_int64(st, 2, day);
        pgw_sql_bind_int64(st, 3, purchases);
        pgw_sql_bind_int64(st, 4, spend_fen);
        if (steps[i] == ST_ADD_DAY) {
            pgw_sql_bind_int64(st, 5, events);
            pgw_sql_bind_int64(st, 6, before->purchases);
            pgw_sql_bind_int64(st, 7, before->spend_fen);
        }
        rc = send_done(s, st, "recording a member's day", err);
    }
    return rc;
}

/* Runs `which` (ST_ADD_RULE_DAY or ST_TAKE_BACK_RULE_DAY) on a member's
 * points of `rule` on `day`: both are sent (send_done). */
static int move_rule_day(pgw_store *s, int which, const char *member, int64_t day, const char *rule,
                         int64_t points, const char *what, pgw_err *err)
{
    PGW_ASSERT(points > 0);
    pgw_sql_stmt *st = s->st[which];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, day);
    pgw_sql_bind_text(st, 3, rule);
    pgw_sql_bind_int64(st, 4, points);
    return send_done(s, st, what, err);
}

int pgw_store_add_rule_day(pgw_store *s, const char *member, int64_t day, const char *rule,
                           int64_t points, pgw_err *err)
{
    return move_rule_day(s, ST_ADD_RULE_DAY, member, day, rule, points, "recording a rule's points",
                         err);
}

int pgw_store_challenge_month(pgw_store *s, const char *member, const char *campaign, int64_t first,
                              int64_t last, int64_t *purchases, int64_t *spend_fen, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_CHALLENGE_MONTH];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, campaign);
    pgw_sql_bind_int64(st, 3, first);
    pgw_sql_bind_int64(st, 4, last);
    int step = pgw_sql_step(st), rc = PGW_OK;
    if (step == PGW_SQL_ROW) {
        *purchases = pgw_sql_column_int64(st, 0);
        *spend_fen = pgw_sql_column_int64(st, 1);
    } else {
        rc = db_error(s, PGW_EIO, "reading a challenge's month", err);
    }
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_move_challenge_day(pgw_store *s, const char *member, const char *campaign,
                                 int64_t day, int64_t spend_fen, pgw_err *err)
{
    PGW_ASSERT(spend_fen != 0);
    pgw_sql_stmt *st = s->st[spend_fen > 0 ? ST_ADD_CHALLENGE_DAY : ST_TAKE_BACK_CHALLENGE_DAY];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, campaign);
    pgw_sql_bind_int64(st, 3, day);
    pgw_sql_bind_int64(st, 4, spend_fen > 0 ? spend_fen : -spend_fen);
    return send_done(s, st, "recording a challenge's day", err);
}

int pgw_store_take_back_rule_day(pgw_store *s, const char *member, int64_t day, const char *rule,
                                 int64_t points, pgw_err *err)
{
    return move_rule_day(s, ST_TAKE_BACK_RULE_DAY, member, day, rule, points,
                         "taking back a rule's points", err);
}

/* Binds a member's flags as ST_SET_FLAGS and ST_ADD_MEMBER take them (?1 the member). */
static void bind_flags(pgw_sql_stmt *st, const char *member, const pgw_member_activity *a)
{
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, a->purchased_before);
    pgw_sql_bind_int64(st, 3, a->registered_before);
    pgw_sql_bind_int64(st, 4, a->followed_before);
    if (a->has_last_sign_in)
        pgw_sql_bind_int64(st, 5, a->last_sign_in);
    else
        pgw_sql_bind_null(st, 5);
    pgw_sql_bind_int64(st, 6, a->sign_in_streak);
}

int pgw_store_set_member_flags(pgw_store *s, const char *member, const pgw_member_activity *a,
                               pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SET_FLAGS];
    bind_flags(st, member, a);
    return update_one(s, st, "updating a member", err);
}

int pgw_store_add_member(pgw_store *s, const char *member, const pgw_member_activity *a,
                         int64_t now_us, const pgw_lot *first_lot, pgw_err *err)
{
    PGW_ASSERT(first_lot == NULL || strcmp(first_lot->member, member) == 0);
    pgw_sql_stmt *st = s->st[ST_ADD_MEMBER];
    bind_flags(st, member, a);
    pgw_sql_bind_int64(st, 7, now_us);
    pgw_sql_bind_int64(st, 8, first_lot != NULL ? first_lot->left : 0);
    pgw_sql_bind_int64(st, 9, first_lot != NULL ? first_lot->held : 0);
    int rc = send_done(s, st, "enrolling a member", err);
    return rc == PGW_OK && first_lot != NULL ? insert_lot_row(s, first_lot, err) : rc;
}

/* ---- WeChat ---------------------------------------------------------------------- */

int pgw_store_insert_session(pgw_store *s, const char *id, const char *member, const char *appid,
                             int64_t created_at, int64_t expires_at, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_INSERT_SESSION];
    pgw_sql_bind_text(st, 1, id);
    pgw_sql_bind_text(st, 2, member);
    pgw_sql_bind_text(st, 3, appid);
    pgw_sql_bind_int64(st, 4, created_at);
    pgw_sql_bind_int64(st, 5, expires_at);
    int rc = step_done(s, st, "recording a session", err);
    return rc;
}

int pgw_store_session_valid(pgw_store *s, const char *id, const char *member, int64_t now,
                            bool *valid, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SESSION];
    pgw_sql_bind_text(st, 1, id);
    int step = pgw_sql_step(st);
    const char *holder = step == PGW_SQL_ROW ? pgw_sql_column_text(st, 2) : NULL;
    *valid = step == PGW_SQL_ROW && pgw_sql_column_int64(st, 0) > now &&
             pgw_sql_column_null(st, 1) && holder != NULL && strcmp(holder, member) == 0;
    int rc = step == PGW_SQL_ROW || step == PGW_SQL_DONE
                 ? PGW_OK
                 : db_error(s, PGW_EIO, "reading a session", err);
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_revoke_session(pgw_store *s, const char *id, int64_t now, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_REVOKE_SESSION];
    pgw_sql_bind_text(st, 1, id);
    pgw_sql_bind_int64(st, 2, now);
    int rc = step_done(s, st, "revoking a session", err);
    return rc;
}

/* Runs a prune statement (?1 the bound, ?2 the limit); *deleted: rows gone. */
static int prune(pgw_store *s, int which, int64_t bound, int64_t limit, int64_t *deleted,
                 const char *what, pgw_err *err)
{
    PGW_ASSERT(limit > 0);
    pgw_sql_stmt *st = s->st[which];
    pgw_sql_bind_int64(st, 1, bound);
    pgw_sql_bind_int64(st, 2, limit);
    int rc = step_done(s, st, what, err);
    *deleted = rc == PGW_OK ? pgw_sql_changes(s->db) : 0;
    return rc;
}

int pgw_store_prune_sessions(pgw_store *s, int64_t before, int64_t limit, int64_t *deleted,
                             pgw_err *err)
{
    return prune(s, ST_PRUNE_SESSIONS, before, limit, deleted, "deleting expired sessions", err);
}

int pgw_store_prune_enrolments(pgw_store *s, int64_t before_hour, int64_t limit, int64_t *deleted,
                               pgw_err *err)
{
    return prune(s, ST_PRUNE_ENROLMENTS, before_hour, limit, deleted, "deleting past enrolments",
                 err);
}

int pgw_store_prune_reminders(pgw_store *s, int64_t before_day, int64_t limit, int64_t *deleted,
                              pgw_err *err)
{
    return prune(s, ST_PRUNE_REMINDERS, before_day, limit, deleted, "deleting past reminders", err);
}

int pgw_store_add_quota(pgw_store *s, const char *member, const char *openid,
                        const char *template_id, int64_t n, int64_t *quota, pgw_err *err)
{
    PGW_ASSERT(n > 0 && n <= PGW_QUOTA_MAX);
    pgw_sql_stmt *st = s->st[ST_ADD_QUOTA];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, template_id);
    pgw_sql_bind_int64(st, 3, n);
    pgw_sql_bind_int64(st, 4, PGW_QUOTA_MAX);
    pgw_sql_bind_text(st, 5, openid);
    int rc = step_done(s, st, "adding subscription quota", err);
    if (rc == PGW_OK)
        rc = pgw_store_quota(s, member, template_id, quota, err);
    return rc == PGW_OK ? wake_notices(s, member, PGW_CHANNEL_MP, err) : rc; /* 43101 is over */
}

int pgw_store_mp_target(pgw_store *s, const char *member, const char *mp_appid,
                        const char *template_id, char openid[PGW_OPENID_MAX + 1],
                        char quota_openid[PGW_OPENID_MAX + 1], pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MP_TARGET];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, mp_appid);
    pgw_sql_bind_text(st, 3, template_id);
    openid[0] = quota_openid[0] = '\0';
    int step = pgw_sql_step(st), rc = PGW_OK;
    if (step == PGW_SQL_ROW && (!column_text(st, 0, openid, PGW_OPENID_MAX + 1) ||
                                !column_text(st, 1, quota_openid, PGW_OPENID_MAX + 1)))
        rc = pgw_err_set_database(err, PGW_EIO, "%s: member %s: a malformed openid", s->path,
                                  member);
    else if (step != PGW_SQL_ROW && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "choosing an openid to notify", err);
    if (rc != PGW_OK)
        openid[0] = quota_openid[0] = '\0';
    pgw_sql_reset(st);
    return rc;
}

int pgw_store_quota(pgw_store *s, const char *member, const char *template_id, int64_t *quota,
                    pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_QUOTA];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, template_id);
    return one_int64(s, st, true, quota, "reading a subscription quota", err);
}

int pgw_store_set_follow(pgw_store *s, const char *appid, const char *openid, bool following,
                         int64_t at, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SET_FOLLOW];
    pgw_sql_bind_text(st, 1, appid);
    pgw_sql_bind_text(st, 2, openid);
    pgw_sql_bind_int64(st, 3, following ? 1 : 0);
    pgw_sql_bind_int64(st, 4, at);
    int rc = step_done(s, st, "recording a follower", err);
    /* Only a follow the store took: one older than an unfollow it has is not. */
    bool took = rc == PGW_OK && pgw_sql_changes(s->db) == 1;
    return took && following ? wake_follower(s, appid, openid, err) : rc;
}

int pgw_store_note_follower(pgw_store *s, const char *appid, const char *openid, int64_t at,
                            bool *noted, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_NOTE_FOLLOWER];
    pgw_sql_bind_text(st, 1, appid);
    pgw_sql_bind_text(st, 2, openid);
    pgw_sql_bind_int64(st, 3, at);
    int rc = step_done(s, st, "recording a follower", err);
    *noted = rc == PGW_OK && pgw_sql_changes(s->db) == 1;
    return *noted ? wake_follower(s, appid, openid, err) : rc;
}

int pgw_store_forget_follower(pgw_store *s, const char *appid, const char *openid, int64_t at,
                              pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_FORGET_FOLLOWER];
    pgw_sql_bind_text(st, 1, appid);
    pgw_sql_bind_text(st, 2, openid);
    pgw_sql_bind_int64(st, 3, at);
    return step_done(s, st, "forgetting a follower", err);
}

int pgw_store_member_follows(pgw_store *s, const char *member, bool *follows, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MEMBER_FOLLOWS];
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, (int)PGW_ID_OA_OPENID);
    int step = pgw_sql_step(st);
    *follows = step == PGW_SQL_ROW && pgw_sql_column_int64(st, 0) > 0;
    int rc = step == PGW_SQL_ROW ? PGW_OK : db_error(s, PGW_EIO, "reading followers", err);
    pgw_sql_reset(st);
    return rc;
}

/* One statement of the token cache, prepared per call: refreshes are rare. */
static int token_exec(pgw_store *s, const char *sql, const char *appid, const char *text, int64_t a,
                      int64_t b, pgw_sql_stmt **keep, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db, sql, false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "the token cache", err);
    pgw_sql_bind_text(st, 1, appid);
    if (text != NULL)
        pgw_sql_bind_text(st, 2, text);
    pgw_sql_bind_int64(st, 3, a);
    pgw_sql_bind_int64(st, 4, b);
    int step = pgw_sql_step(st);
    if (step == PGW_SQL_ROW && keep != NULL) {
        *keep = st;
        return PGW_OK;
    }
    pgw_sql_finalize(st);
    if (keep != NULL)
        *keep = NULL;
    return step == PGW_SQL_DONE || step == PGW_SQL_ROW
               ? PGW_OK
               : db_error(s, PGW_EIO, "the token cache", err);
}

int pgw_store_token_load(pgw_store *s, const char *appid, char *token, size_t cap,
                         int64_t *expires_at, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = token_exec(s,
                        "SELECT token, expires_at FROM wechat_tokens"
                        " WHERE appid = ?1 AND token <> '' AND ?3 = ?4",
                        appid, NULL, 0, 0, &st, err);
    if (rc != PGW_OK)
        return rc;
    if (st == NULL)
        return PGW_ENOTFOUND;
    *expires_at = pgw_sql_column_int64(st, 1);
    rc = column_text(st, 0, token, cap)
             ? PGW_OK
             : pgw_err_set_database(err, PGW_EIO, "%s: stored token too long", s->path);
    pgw_sql_finalize(st);
    return rc;
}

int pgw_store_token_lease(pgw_store *s, const char *appid, int64_t now, int64_t until, bool *taken,
                          pgw_err *err)
{
    int rc = token_exec(s,
                        "INSERT INTO wechat_tokens (appid, token, expires_at, lease_until)"
                        " VALUES (?1, '', 0, ?4) ON CONFLICT (appid) DO UPDATE"
                        " SET lease_until = ?4 WHERE wechat_tokens.lease_until <= ?3",
                        appid, NULL, now, until, NULL, err);
    *taken = rc == PGW_OK && pgw_sql_changes(s->db) == 1;
    return rc;
}

int pgw_store_token_save(pgw_store *s, const char *appid, const char *token, int64_t expires_at,
                         pgw_err *err)
{
    return token_exec(s,
                      "INSERT INTO wechat_tokens (appid, token, expires_at, lease_until)"
                      " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (appid) DO UPDATE"
                      " SET token = ?2, expires_at = ?3, lease_until = ?4",
                      appid, token, expires_at, 0, NULL, err);
}

int pgw_store_token_forget(pgw_store *s, const char *appid, const char *token, pgw_err *err)
{
    return token_exec(s,
                      "UPDATE wechat_tokens SET token = '', expires_at = 0"
                      " WHERE appid = ?1 AND token = ?2 AND ?3 = ?4",
                      appid, token, 0, 0, NULL, err);
}

int pgw_store_token_release(pgw_store *s, const char *appid, pgw_err *err)
{
    return token_exec(s, "UPDATE wechat_tokens SET lease_until = 0 WHERE appid = ?1 AND ?3 = ?4",
                      appid, NULL, 0, 0, NULL, err);
}

/* ---- notifications ---------------------------------------------------------------- */

int pgw_store_relax_sync(pgw_store *s, pgw_err *err)
{
    /* PostgreSQL's equivalent of NORMAL: a commit may be lost in a crash of
     * the server, never half applied. */
    if (is_postgres(s))
        return pgw_sql_set_session(s->db, "SET synchronous_commit = off", err);
    return exec(s, "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0", "relaxing sync",
                err);
}

/* The parameters ?1..?6 that coalescing and queueing a notice share. */
static pgw_sql_stmt *bind_notice(pgw_sql_stmt *st, const char *member, const char *kind,
                                 int64_t points, int64_t balance, const char *shop, int64_t now)
{
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, kind);
    pgw_sql_bind_int64(st, 3, points);
    pgw_sql_bind_int64(st, 4, balance);
    pgw_sql_bind_text(st, 5, shop);
    pgw_sql_bind_int64(st, 6, now);
    return st;
}

int pgw_store_enqueue_notice(pgw_store *s, const char *member, const char *kind, int64_t points,
                             int64_t balance, const char *shop, const char *detail, int64_t now,
                             int64_t coalesce_s, pgw_err *err)
{
    int rc = PGW_OK;
    if (strcmp(kind, "points_arrived") != 0) {
        pgw_sql_stmt *st = s->st[ST_HURRY_ARRIVALS];
        pgw_sql_bind_text(st, 1, member);
        pgw_sql_bind_int64(st, 2, now);
        rc = step_done(s, st, "hurrying a member's arrivals", err);
        if (rc != PGW_OK)
            return rc;
    }
    if (coalesce_s > 0) {
        pgw_sql_stmt *st =
            bind_notice(s->st[ST_COALESCE_NOTICE], member, kind, points, balance, shop, now);
        pgw_sql_bind_int64(st, 7, now + coalesce_s);
        rc = step_done(s, st, "coalescing a notice", err);
        if (rc != PGW_OK || pgw_sql_changes(s->db) == 1)
            return rc;
    }
    pgw_sql_stmt *st =
        bind_notice(s->st[ST_INSERT_NOTICE], member, kind, points, balance, shop, now);
    pgw_sql_bind_int64(st, 7, now + (coalesce_s > 0 ? coalesce_s : 0));
    pgw_sql_bind_text(st, 8, detail);
    rc = step_done(s, st, "queueing a notice", err);
    return rc;
}

#define NOTICE_COLUMNS                                                                             \
    "id, member, kind, points, balance, shop, created_at, due_at, state, channel, excluded,"       \
    " attempts, last_error, provider_id, updated_at, about_at, detail, hurried"

static bool notice_row(pgw_sql_stmt *st, void *item)
{
    pgw_notice *n = item;
    n->id = pgw_sql_column_int64(st, 0);
    n->points = pgw_sql_column_int64(st, 3);
    n->balance = pgw_sql_column_int64(st, 4);
    n->created_at = pgw_sql_column_int64(st, 6);
    n->due_at = pgw_sql_column_int64(st, 7);
    n->excluded = pgw_sql_column_int64(st, 10);
    n->attempts = pgw_sql_column_int64(st, 11);
    n->updated_at = pgw_sql_column_int64(st, 14);
    n->about_at = pgw_sql_column_int64(st, 15);
    n->hurried = pgw_sql_column_int64(st, 17) == 1;
    n->merged = pgw_sql_column_int64(st, 17) == 2;
    n->read_when_sent = false; /* the courier's to say */
    n->read_past = false;
    n->may_have_reached = false;
    return column_text(st, 1, n->member, sizeof(n->member)) &&
           column_text(st, 16, n->detail, sizeof(n->detail)) &&
           column_text(st, 2, n->kind, sizeof(n->kind)) &&
           column_text(st, 5, n->shop, sizeof(n->shop)) &&
           column_text(st, 8, n->state, sizeof(n->state)) &&
           column_text(st, 9, n->channel, sizeof(n->channel)) &&
           column_text(st, 12, n->last_error, sizeof(n->last_error)) &&
           column_text(st, 13, n->provider_id, sizeof(n->provider_id));
}

/*
 * A statement for `sql`, prepared on first use and kept: the couriers run
 * a handful per notice, and parsing them each time cost more than running
 * them. Found again by its text (not its address: a caller may build the
 * SQL in one buffer, differently each time). Give it back with release().
 * Once LAZY_STATEMENTS are kept, the next are prepared per call (release()
 * finalizes those).
 */
static int prepare(pgw_store *s, const char *sql, pgw_sql_stmt **st, pgw_err *err)
{
    for (size_t i = 0; i < s->n_lazy; i++) {
        if (strcmp(pgw_sql_text(s->lazy[i]), sql) == 0) {
            *st = s->lazy[i];
            return PGW_OK;
        }
    }
    bool keep = s->n_lazy < LAZY_STATEMENTS;
    int rc = pgw_sql_prepare(s->db, sql, keep, st, err);
    if (rc != PGW_OK)
        return rc;
    if (keep)
        s->lazy[s->n_lazy++] = *st;
    return PGW_OK;
}

/* Gives back a statement of prepare(): reset for its next use. */
static void release(pgw_store *s, pgw_sql_stmt *st)
{
    for (size_t i = 0; i < s->n_lazy; i++) {
        if (s->lazy[i] == st) {
            pgw_sql_reset(st);
            return;
        }
    }
    pgw_sql_finalize(st);
}

/* A courier's claim: due ?1, at most ?2, owner ?3, lease ?4 s. A member's
 * notices in the order they were queued (ties: a hurried arrival and the
 * notice that hurried it, due the same second), read in that order from
 * notices_due_id: no sort, however many are due at once. Another
 * instance's claims are passed over (SKIP LOCKED), not waited for. */
#define CLAIM_NOTICES                                                                              \
    "UPDATE notices SET state = 'sending', attempts = attempts + 1,"                               \
    " updated_at = ?1, claimed_by = ?3, lease_until = ?1 + ?4"                                     \
    " WHERE id IN (SELECT id FROM notices"                                                         \
    " WHERE state = 'pending' AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2"                       \
    " /*pg FOR UPDATE SKIP LOCKED */)"                                                             \
    " RETURNING " NOTICE_COLUMNS

/* qsort's order of claimed notices: due time, then id (the claim's). */
static int by_due_then_id(const void *a, const void *b)
{
    const pgw_notice *x = a, *y = b;
    if (x->due_at != y->due_at)
        return x->due_at < y->due_at ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int pgw_store_claim_notices(pgw_store *s, const char *owner, int64_t now, pgw_notice *out,
                            size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, CLAIM_NOTICES, &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, now);
    pgw_sql_bind_int64(st, 2, (int64_t)cap);
    pgw_sql_bind_text(st, 3, owner);
    pgw_sql_bind_int64(st, 4, PGW_NOTICE_LEASE_S);
    rc = read_rows(s, st, notice_row, out, sizeof(*out), cap, n, "claiming notices", err);
    release(s, st);
    /* RETURNING keeps no order (PostgreSQL's did not): the courier sends a
     * batch in this order, a member's notices as they were queued. */
    if (rc == PGW_OK && *n > 1)
        qsort(out, *n, sizeof(*out), by_due_then_id);
    return rc;
}

/*
 * Notice `n` of the member was sent, telling n->balance. An arrival of the
 * member still marked (hurried = 1: it tells the balance it was queued
 * with, notifier.c current_balance) loses the mark when that balance is
 * not the one the member has just read: from then on it reads the balance
 * when sent. One queued before `n`; one queued after it too when `n` read
 * its balance as it was sent (n->read_when_sent: a retry, one held, one
 * that waited its window), which may be later than the arrival's.
 * Reached through the reviews' cases: a reversal sent by WeChat while its
 * arrival is held for SMS (R2: 450 read, the arrival must not say 600);
 * both held to the morning (R5: nothing sent, the arrival goes first with
 * its 600); a reminder sent between them that told 600 (R7: the arrival
 * keeps it); a later arrival or reminder that told another balance (R8),
 * whatever is still waiting or died; R < A2 < R2, R retried telling 700
 * while A2 (850) and R2 were held (R9: in the morning A2 told 850). A
 * claimed arrival's too: its courier may hold it (R6). A merged one (2)
 * keeps its mark. Every mark of the member, however far from `n` (R3: 32
 * notices held after the arrival hid it from a window of the 32 nearest),
 * found by notices_marked: only the marks still waiting are in it.
 */
static int unhurry(pgw_store *s, const pgw_notice *n, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, UNHURRY, &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, n->id);
    pgw_sql_bind_int64(st, 2, n->balance);
    pgw_sql_bind_int64(st, 3, n->read_when_sent ? 1 : 0);
    rc = step_done(s, st, "unmarking the arrivals a notice went after", err);
    release(s, st);
    return rc;
}

/*
 * Notice `n`, recorded sent, read the balance it told as it was sent. The
 * rule that keeps a member from reading an older balance after a newer
 * one: a notice tells the balance it was queued with (sent at once, or a
 * hurried arrival) only while no notice of its member was sent telling
 * another balance, read after it was queued. A read as it is sent sees
 * every event committed before it, so a balance read later is never older;
 * one queued is as old as its event. So every notice of the member still
 * waiting once `n` is recorded, queued with another balance than `n` told,
 * reads the balance when sent from then on: marked as a merge marks
 * (hurried = 2), which a hurry keeps and the courier reads as "the balance
 * when sent". The courier applies the same rule to the rest of its batch
 * (notifier.c unmark_rest_of_batch); what this marks is what is sent after
 * the batch. Only a mark, never a balance: 7832a1e gave such notices the
 * balance `n` read, which wrote an older balance over a sale joined after
 * the read, a merged member's over a survivor's arrival, and an older
 * read's over a newer one recorded first (R5); a mark is right whatever
 * the order of the records. One queued between the read and the record is
 * marked too: it reads a balance at least as new as its own. Regressions:
 * R3 (R's retry told 1000 while A2, 850, waited out its window; R2 then
 * hurried A2, which told 850); R4 across two batches (a reversal R2 queued
 * at once while R's retry was claimed; R read 1250, counting R2 and a sale
 * after it; R2 then told its queued 850); R2 queued, then a till's
 * backlog of 32 refunds of the member, R's read recorded after them (R2,
 * the 33rd notice back, told its queued 850 after the member read 818).
 * Which notices need the mark, and how they are found (back to `since`):
 * READ_PAST.
 */
static int unmark_read_past(pgw_store *s, const pgw_notice *n, int64_t since, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, READ_PAST, &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, n->id);
    pgw_sql_bind_int64(st, 2, n->balance);
    pgw_sql_bind_int64(st, 3, since);
    rc = step_done(s, st, "marking the notices a read went past", err);
    release(s, st);
    return rc;
}

int pgw_store_finish_notice(pgw_store *s, const char *owner, const pgw_notice *n, int64_t now,
                            pgw_err *err)
{
    /* How far back a read looks (READ_PAST), before anything is written. */
    int64_t since = 0;
    if (pgw_sub(now, PGW_NOTICE_AT_ONCE_S + READ_PAST_SLACK_S, &since) != PGW_OK)
        return pgw_err_set(err, PGW_ERANGE, "notice %lld: a time out of range", (long long)n->id);
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     "UPDATE notices SET state = ?2, channel = ?3, " RECORDED ","
                     " last_error = ?6, provider_id = ?7, updated_at = ?8, attempts = ?9,"
                     " balance = ?11, claimed_by = '', lease_until = 0"
                     " WHERE id = ?1 AND state = 'sending' AND claimed_by = ?10",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, n->id);
    pgw_sql_bind_text(st, 2, n->state);
    pgw_sql_bind_text(st, 3, n->channel);
    /* The marks are the row's (a wake during the claim), never the courier's. */
    pgw_sql_bind_int64(st, 4, n->excluded & ~(int64_t)PGW_NOTICE_WOKEN);
    pgw_sql_bind_int64(st, 5, n->due_at);
    pgw_sql_bind_text(st, 6, n->last_error);
    pgw_sql_bind_text(st, 7, n->provider_id);
    pgw_sql_bind_int64(st, 8, now);
    pgw_sql_bind_int64(st, 9, n->attempts);
    pgw_sql_bind_text(st, 10, owner);
    pgw_sql_bind_int64(st, 11, n->balance);
    rc = step_done(s, st, "recording a notice", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ESTATE, "notice %lld is no longer ours (its lease ran out)",
                         (long long)n->id);
    release(s, st);
    /* An attempt whose answer was lost reached the member all the same: it
     * counts as told (R's retry delivered "balance 850", then a reversal
     * queued before that read told its queued 450; a refund delivered
     * "balance 450", then its hurried arrival's retry its queued 600). */
    bool told = pgw_store_notice_told(n);
    if (rc == PGW_OK && told)
        rc = unhurry(s, n, err);
    if (rc == PGW_OK && told && n->read_when_sent)
        rc = unmark_read_past(s, n, since, err);
    return rc;
}

bool pgw_store_notice_told(const pgw_notice *n)
{
    if (strcmp(n->state, "sent") == 0)
        return true;
    /* Whatever became of the notice after that attempt: on its last one it
     * is dead, and the member may have read it all the same. */
    return n->may_have_reached;
}

int pgw_store_unclaim_notices(pgw_store *s, const char *owner, int64_t now, int64_t *n,
                              pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     owner == NULL
                         /* Its attempt counted (its courier may have made
                          * it), otherwise as one given back: an SMS that
                          * was leaving marked the row first
                          * (pgw_store_sms_leaving), and no wake takes it.
                          * Marking every lapsed claim so kept a notice
                          * never tried (skipped at a stop) from WeChat. */
                         ? "UPDATE notices SET state = 'pending', updated_at = ?1, claimed_by = '',"
                           " lease_until = 0, " TAKEN_BACK
                           " WHERE id IN (SELECT id FROM notices WHERE state = 'sending'"
                           " AND lease_until < ?1 AND ?2 = ''"
                           /* rows a wake has locked (a writer's transaction)
                            * are left for the next pass: waiting for them,
                            * while the wake waited for rows locked here, was
                            * a deadlock on PostgreSQL */
                           " /*pg FOR UPDATE SKIP LOCKED */)"
                         : "UPDATE notices SET state = 'pending', updated_at = ?1, claimed_by = '',"
                           " lease_until = 0, " GIVEN_BACK
                           " WHERE id IN (SELECT id FROM notices WHERE state = 'sending'"
                           " AND claimed_by = ?2"
                           /* as the lapsed sweep's: a row a wake holds is
                            * left to lapse, not waited for (a deadlock) */
                           " /*pg FOR UPDATE SKIP LOCKED */)",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, now);
    pgw_sql_bind_text(st, 2, owner ? owner : "");
    rc = step_done(s, st, "unclaiming notices", err);
    *n = rc == PGW_OK ? pgw_sql_changes(s->db) : 0;
    release(s, st);
    return rc;
}

/*
 * Marks owner's claim on `n` with `mark` before a request leaves
 * (pgw_store_sms_leaving, pgw_store_wx_leaving): the row's mark, not the
 * courier's: its record of the attempt says whether the message went or
 * was refused (pgw_store_finish_notice), and only a claim that lapses
 * keeps it. The lease must still run when the request is answered: a
 * claim whose lease ran out but is not swept yet is still named ours, and
 * the sweep (this instance's or another's) may give it to a courier that
 * sends it again. With the mark, the channels the attempt left out before
 * it (n's): the row's may lack them (a 45009 is left out for one attempt),
 * and a claim that lapses must not come back to a channel the member must
 * not hear from now. The row's WeChat marks become n's (and `mark`'s): an
 * earlier channel of this attempt marked and then refused for sure (a
 * 43101, then the SMS) sent nothing, and its mark, kept by a lapse, would
 * keep the SMS's retry from SMS too, the notice skipped unsent. Nothing
 * but the claimer writes them while the claim holds.
 */
static int mark_row(pgw_store *s, const char *owner, const pgw_notice *n, int64_t now,
                    int64_t need_s, int64_t mark, const char *what, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc =
        prepare(s,
                "UPDATE notices SET excluded = (excluded - (excluded & " NOTICE_WX_GONE ")) | ?5"
                " WHERE id = ?1 AND state = 'sending' AND claimed_by = ?2 AND attempts = ?3"
                " AND lease_until >= ?4",
                &st, err);
    if (rc != PGW_OK)
        return rc;
    int64_t until = 0;
    if (pgw_add(now, need_s, &until) != PGW_OK) {
        release(s, st);
        return pgw_err_set(err, PGW_ERANGE, "notice %lld: a time out of range", (long long)n->id);
    }
    int64_t kept = PGW_CHANNEL_MP | PGW_CHANNEL_OA | PGW_CHANNEL_SMS | PGW_NOTICE_GAVE_UP |
                   PGW_NOTICE_WX_MAY_HAVE_GONE;
    pgw_sql_bind_int64(st, 1, n->id);
    pgw_sql_bind_text(st, 2, owner);
    pgw_sql_bind_int64(st, 3, n->attempts);
    pgw_sql_bind_int64(st, 4, until);
    pgw_sql_bind_int64(st, 5, (n->excluded & kept) | mark);
    rc = step_done(s, st, what, err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ESTATE,
                         "notice %lld is no longer ours, or its lease ends before its request "
                         "would be answered",
                         (long long)n->id);
    release(s, st);
    return rc;
}

/*
 * A courier's small write beside its claim (a mark, a renewal), its wait
 * for a lock bounded by wait_ms: PGW_STORE_MARK_WAIT_S, or for a renewal's
 * later claims what is left of that one wait. Its request or its record
 * waits on it, and a lease was counted with that wait at most (notifier.c
 * LEASE_MARGIN_S). PostgreSQL: a lock_timeout of its own, in a transaction
 * of its own (SET LOCAL: the courier's other statements keep theirs), two
 * round trips more than the statement alone, never behind the chain lock.
 * Regression: in autocommit with no lock_timeout, a mark behind a row lock
 * held its courier as long as the lock was held; the bound was checked
 * once the mark was done. SQLite: the statement alone, its busy handler's
 * wait bounded the same (busy_limit_ms) until bounded_end. Regression: it
 * waited BUSY_TIMEOUT_MS, 5 s, and a renewal so ate 3 s past what the
 * lease margin counts for it. bounded_begin says whether it began a
 * transaction for bounded_end to end.
 */
static int bounded_begin(pgw_store *s, const char *what, int64_t wait_ms, bool *own, pgw_err *err)
{
    PGW_ASSERT(wait_ms > 0 && wait_ms <= (int64_t)PGW_STORE_MARK_WAIT_S * 1000); /* 0: no bound */
    *own = is_postgres(s);
    if (!*own) {
        s->busy_limit_ms = wait_ms;
        return PGW_OK;
    }
    PGW_ASSERT(!pgw_sql_in_transaction(s->db)); /* its own transaction: not a caller's */
    char sql[64];
    snprintf(sql, sizeof(sql), "BEGIN; SET LOCAL lock_timeout = '%lldms'", (long long)wait_ms);
    return begin(s, sql, what, err);
}

static int bounded_end(pgw_store *s, bool own, int rc, pgw_err *err)
{
    s->busy_limit_ms = BUSY_TIMEOUT_MS;
    if (own && rc == PGW_OK)
        rc = pgw_store_commit(s, err);
    if (own && rc != PGW_OK)
        pgw_store_rollback(s, NULL);
    return rc;
}

static int mark_leaving(pgw_store *s, const char *owner, const pgw_notice *n, int64_t now,
                        int64_t need_s, int64_t mark, const char *what, pgw_err *err)
{
    PGW_ASSERT(need_s >= 0);
    bool own = false;
    int rc = bounded_begin(s, what, (int64_t)PGW_STORE_MARK_WAIT_S * 1000, &own, err);
    if (rc == PGW_OK)
        rc = mark_row(s, owner, n, now, need_s, mark, what, err);
    return bounded_end(s, own, rc, err);
}

int pgw_store_sms_leaving(pgw_store *s, const char *owner, const pgw_notice *n, int64_t now,
                          int64_t need_s, pgw_err *err)
{
    return mark_leaving(s, owner, n, now, need_s, PGW_NOTICE_SMS_MAY_HAVE_GONE,
                        "marking a notice's SMS", err);
}

int pgw_store_wx_leaving(pgw_store *s, const char *owner, const pgw_notice *n,
                         pgw_notice_channel channel, int64_t now, int64_t need_s, pgw_err *err)
{
    PGW_ASSERT(channel == PGW_CHANNEL_MP || channel == PGW_CHANNEL_OA);
    return mark_leaving(s, owner, n, now, need_s,
                        (int64_t)((unsigned)channel << PGW_NOTICE_WX_GONE_SHIFT),
                        "marking a notice's WeChat message", err);
}

int pgw_store_give_back_notice(pgw_store *s, const char *owner, const pgw_notice *n, int64_t now,
                               pgw_err *err)
{
    /* A claim that lapsed may have been taken again under the same name
     * (each courier claims under its own, but the store does not rely on
     * it), its attempt counted once more: the attempts this claim counted
     * tell the two apart. */
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     "UPDATE notices SET state = 'pending', updated_at = ?3, claimed_by = '',"
                     " lease_until = 0, " GIVEN_BACK " WHERE id = ?1 AND state = 'sending'"
                     " AND claimed_by = ?2 AND attempts = ?4",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, n->id);
    pgw_sql_bind_text(st, 2, owner);
    pgw_sql_bind_int64(st, 3, now);
    pgw_sql_bind_int64(st, 4, n->attempts);
    rc = step_done(s, st, "giving back a notice", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ESTATE, "notice %lld is no longer ours", (long long)n->id);
    release(s, st);
    return rc;
}

static bool int64_row(pgw_sql_stmt *st, void *out)
{
    *(int64_t *)out = pgw_sql_column_int64(st, 0);
    return true;
}

/* The batch's claims in one statement, ids past n bound as 0, which no
 * notice has. `wait`: for the rows another transaction holds; otherwise
 * (PostgreSQL) they are passed over, not renewed, and never waited for
 * (SKIP LOCKED). */
static int renew_rows(pgw_store *s, const char *owner, const int64_t *ids, size_t n, int64_t now,
                      bool wait, bool *renewed, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     wait ? "UPDATE notices SET lease_until = ?2 + ?3 WHERE id IN (?4, ?5, ?6, ?7)"
                            " AND state = 'sending' AND claimed_by = ?1 RETURNING id"
                          : "UPDATE notices SET lease_until = ?2 + ?3 WHERE id IN (SELECT id"
                            " FROM notices WHERE id IN (?4, ?5, ?6, ?7) AND state = 'sending'"
                            " AND claimed_by = ?1 /*pg FOR NO KEY UPDATE SKIP LOCKED */)"
                            " RETURNING id",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    PGW_STATIC_ASSERT(PGW_STORE_RENEW_MAX == 4, "a parameter a claim");
    pgw_sql_bind_text(st, 1, owner);
    pgw_sql_bind_int64(st, 2, now);
    pgw_sql_bind_int64(st, 3, PGW_NOTICE_LEASE_S);
    for (size_t i = 0; i < PGW_STORE_RENEW_MAX; i++)
        pgw_sql_bind_int64(st, (int)i + 4, i < n ? ids[i] : 0);
    int64_t got[PGW_STORE_RENEW_MAX];
    size_t n_got = 0;
    rc = read_rows(s, st, int64_row, got, sizeof(*got), PGW_STORE_RENEW_MAX, &n_got,
                   "renewing claims", err);
    release(s, st);
    for (size_t i = 0; i < n; i++) {
        renewed[i] = false;
        for (size_t k = 0; rc == PGW_OK && k < n_got; k++)
            renewed[i] |= got[k] == ids[i];
    }
    return rc;
}

/* renew_rows in a transaction of its own, its lock wait at most wait_ms. */
static int renew_bounded(pgw_store *s, const char *owner, const int64_t *ids, size_t n, int64_t now,
                         bool wait, int64_t wait_ms, bool *renewed, pgw_err *err)
{
    bool own = false;
    int rc = bounded_begin(s, "renewing claims", wait_ms, &own, err);
    if (rc == PGW_OK)
        rc = renew_rows(s, owner, ids, n, now, wait, renewed, err);
    return bounded_end(s, own, rc, err);
}

/*
 * One wait for a lock for the batch, not one a claim (four waits of 2 s
 * each outlasted the 3 s the lease margin has over a notice at its
 * slowest). SQLite: one statement. PostgreSQL: it runs beside the
 * writer's and couriers' transactions, which may lock several of a
 * member's notices, so it never holds one claim's row while it waits for
 * another's: one statement renews what nobody holds (SKIP LOCKED), then
 * each claim passed over is waited for on its own, within what is left
 * of the one wait. Regression (f167b31's review): one UPDATE for all held
 * the row it reached first while it waited for another, and deadlocked
 * with a transaction holding that one and asking for the first.
 */
int pgw_store_renew_claims(pgw_store *s, const char *owner, const int64_t *ids, size_t n,
                           int64_t now, bool *renewed, pgw_err *err)
{
    PGW_ASSERT(n <= PGW_STORE_RENEW_MAX);
    for (size_t i = 0; i < n; i++)
        PGW_ASSERT(ids[i] > 0);
    const int64_t wait_ms = (int64_t)PGW_STORE_MARK_WAIT_S * 1000;
    int64_t until_us = pgw_monotonic_us() + wait_ms * 1000;
    bool rows_locked = is_postgres(s);
    int rc = renew_bounded(s, owner, ids, n, now, !rows_locked, wait_ms, renewed, err);
    for (size_t i = 0; rc == PGW_OK && rows_locked && i < n; i++) {
        int64_t left_ms = (until_us - pgw_monotonic_us()) / 1000;
        if (!renewed[i]) /* held by another transaction, or not ours */
            rc = renew_bounded(s, owner, &ids[i], 1, now, true, left_ms < 1 ? 1 : left_ms,
                               &renewed[i], err);
    }
    return rc;
}

int pgw_store_member_notices(pgw_store *s, const char *member, int64_t before, pgw_notice *out,
                             size_t cap, size_t *n, pgw_err *err)
{
    PGW_ASSERT(before >= 0);
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     "SELECT " NOTICE_COLUMNS " FROM notices WHERE member = ?1 AND id < ?3"
                     " ORDER BY id DESC LIMIT ?2",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, (int64_t)cap);
    pgw_sql_bind_int64(st, 3, before > 0 ? before : INT64_MAX);
    rc = read_rows(s, st, notice_row, out, sizeof(*out), cap, n, "reading notices", err);
    release(s, st);
    return rc;
}

/* The condition is notices_dead's own, for the planner to use it. */
#define DEAD_NOTICES                                                                               \
    "SELECT " NOTICE_COLUMNS " FROM notices WHERE state = 'dead' AND id < ?1"                      \
    " ORDER BY id DESC LIMIT ?2"

int pgw_store_dead_notices(pgw_store *s, int64_t before, pgw_notice *out, size_t cap, size_t *n,
                           pgw_err *err)
{
    PGW_ASSERT(before >= 0);
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, DEAD_NOTICES, &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, before > 0 ? before : INT64_MAX);
    pgw_sql_bind_int64(st, 2, (int64_t)cap);
    rc = read_rows(s, st, notice_row, out, sizeof(*out), cap, n, "reading dead notices", err);
    release(s, st);
    return rc;
}

int pgw_store_retry_notice(pgw_store *s, int64_t id, int64_t now, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, "SELECT state FROM notices WHERE id = ?1", &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, id);
    int step = pgw_sql_step(st);
    char state[16] = "";
    if (step == PGW_SQL_ROW && !column_text(st, 0, state, sizeof(state)))
        rc = pgw_err_set_database(err, PGW_EIO, "%s: notice %lld has a malformed state", s->path,
                                  (long long)id);
    else if (step == PGW_SQL_DONE)
        rc = pgw_err_set(err, PGW_ENOTFOUND, "no notice %lld", (long long)id);
    else if (step != PGW_SQL_ROW)
        rc = db_error(s, PGW_EIO, "reading a notice", err);
    release(s, st);
    if (rc == PGW_OK && strcmp(state, "dead") != 0)
        rc = pgw_err_set(err, PGW_ESTATE, "notice %lld is %s, not dead", (long long)id, state);
    if (rc == PGW_OK)
        rc = prepare(s,
                     /* An SMS or a WeChat message that may have gone
                      * still may have: no wake takes it, it keeps to
                      * that channel. Attempts made (timeouts, 5xx:
                      * maybe sends) may have reached the member although the count
                      * starts anew: marked so (NOTICE_REACHED), no
                      * arrival joins it (JOINABLE). Dead still: a retry
                      * beside this one (another instance) may have made it
                      * pending, and a courier may be sending it. */
                     /* (and not hurried: it tells the balance when sent;
                      * a merge's mark stays) */
                     "UPDATE notices SET state = 'pending', due_at = ?2, attempts = 0, " UNHURRIED
                     ","
                     " excluded = (excluded & (" NOTICE_SMS_GONE " + " NOTICE_WX_GONE
                     " + " NOTICE_REACHED "))"
                     " | CASE WHEN attempts > 0 THEN " NOTICE_REACHED " ELSE 0 END,"
                     " last_error = '', updated_at = ?2 WHERE id = ?1 AND state = 'dead'",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, id);
    pgw_sql_bind_int64(st, 2, now);
    rc = step_done(s, st, "retrying a notice", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1) /* pruned, or changed, since it was read */
        rc = pgw_err_set(err, PGW_ESTATE, "notice %lld is no longer dead", (long long)id);
    release(s, st);
    return rc;
}

int pgw_store_prune_notices(pgw_store *s, int64_t before, int64_t *deleted, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    /* From the oldest finished id, a bounded range: notices are written
     * in time order, so what is old enough sits at the front, and the walk
     * never scans the table (an index for it would cost every notice a
     * write). Pending notices in front (an SMS waiting out the night) are
     * stepped over, not waited for. */
    int rc = prepare(s,
                     "WITH first AS (SELECT id FROM notices"
                     "  WHERE state IN ('sent', 'skipped', 'dead') ORDER BY id LIMIT 1)"
                     " DELETE FROM notices WHERE id >= (SELECT id FROM first)"
                     " AND id < (SELECT id FROM first) + ?2"
                     " AND state IN ('sent', 'skipped', 'dead') AND created_at < ?1"
                     /* the newest stays: ids are rowids, and without it the
                      * next notice would take an old id again (and WeChat
                      * de-duplicates template messages on it) */
                     " AND id < (SELECT max(id) FROM notices)",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, before);
    pgw_sql_bind_int64(st, 2, PGW_PRUNE_CHUNK);
    rc = step_done(s, st, "pruning notices", err);
    *deleted = rc == PGW_OK ? pgw_sql_changes(s->db) : 0;
    release(s, st);
    return rc;
}

/*
 * fdatasyncs the database file through a descriptor of our own, not
 * SQLite's: should the disk fail a write, each descriptor open on the file
 * is told once at its next sync (Linux), so SQLite's own sync still sees
 * it and its checkpoint fails as it would without us.
 */
static int flush_database(pgw_store *s, sqlite3 *lite, pgw_err *err)
{
    if (s->db_fd < 0 &&
        (s->db_fd = open(sqlite3_db_filename(lite, "main"), O_RDONLY | O_CLOEXEC)) < 0)
        return pgw_err_set_database(err, PGW_EIO, "%s: opening it to sync: %s", s->path,
                                    strerror(errno));
    if (fdatasync(s->db_fd) != 0)
        return pgw_err_set_database(err, PGW_EIO, "%s: syncing the database failed: %s", s->path,
                                    strerror(errno));
    return PGW_OK;
}

int pgw_store_checkpoint(pgw_store *s, bool flush, bool *busy, pgw_err *err)
{
    if (busy != NULL)
        *busy = false;
    if (is_postgres(s))
        return PGW_OK; /* the server checkpoints on its own */
    sqlite3 *lite = pgw_sql_sqlite_handle(s->db);
    int backfilled = 0;
    int rc = sqlite3_wal_checkpoint_v2(lite, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, &backfilled);
    if (rc == SQLITE_BUSY && busy != NULL)
        *busy = true;
    if (rc == SQLITE_OK) {
        s->wal_backfilled = backfilled;
        return flush ? flush_database(s, lite, err) : PGW_OK;
    }
    if (rc == SQLITE_BUSY)
        return PGW_OK;
    /* Called straight, not through the SQL layer: its message is SQLite's. */
    return pgw_err_set_database(err, PGW_EIO, "%s: checkpointing: %s", s->path,
                                sqlite3_errmsg(lite));
}

/* SQLite's WAL file format: a header, then each page after a frame header. */
#define WAL_HEADER_BYTES       32
#define WAL_FRAME_HEADER_BYTES 24

/* After each commit (SQLite's WAL hook, in place of its automatic
 * checkpoint, which is this same hook with the backstop at 1000 pages). */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    pgw_store *s = arg;
    s->wal_pages = pages;
    if (pages >= s->backstop_pages)
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK; /* a busy checkpoint is tried again at the next commit */
}

int pgw_store_checkpoint_backstop(pgw_store *s, int pages, pgw_err *err)
{
    PGW_ASSERT(pages > 0);
    if (is_postgres(s))
        return PGW_OK;
    s->backstop_pages = pages;
    sqlite3_wal_hook(pgw_sql_sqlite_handle(s->db), on_wal_commit, s);
    /* A WAL file keeps its largest size; one that outgrew twice the
     * backstop (a burst, a slow disk) is cut back to that when it starts
     * over. Not less: a WAL cut back at each start over grows its file
     * again, new blocks for the file system to allocate at every sync, and
     * a slow disk's checkpoint at the backstop lets it pass the backstop
     * by half (writer.c). */
    pgw_sql_stmt *st = NULL;
    int64_t page = 0;
    int rc = pgw_sql_prepare(s->db, "PRAGMA page_size", false, &st, err);
    if (rc == PGW_OK)
        rc = one_int64(s, st, false, &page, "reading the page size", err);
    pgw_sql_finalize(st);
    if (rc != PGW_OK)
        return rc;
    PGW_ASSERT(page >= 512 && page <= 65536);
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld",
             (long long)WAL_HEADER_BYTES + 2 * pages * (page + WAL_FRAME_HEADER_BYTES));
    return exec(s, sql, "limiting the WAL file", err);
}

int64_t pgw_store_wal_pages(const pgw_store *s)
{
    return s->wal_pages;
}

int64_t pgw_store_wal_backfilled(const pgw_store *s)
{
    return s->wal_backfilled;
}

int pgw_store_outbox_depth(pgw_store *s, int64_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     "SELECT (SELECT count(*) FROM notices WHERE state = 'pending')"
                     " + (SELECT count(*) FROM notices WHERE state = 'sending')",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    int step = pgw_sql_step(st);
    *n = step == PGW_SQL_ROW ? pgw_sql_column_int64(st, 0) : 0;
    rc = step == PGW_SQL_ROW ? PGW_OK : db_error(s, PGW_EIO, "counting the outbox", err);
    release(s, st);
    return rc;
}

int pgw_store_take_quota(pgw_store *s, const char *member, const char *openid,
                         const char *template_id, bool all, bool *taken, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     all ? "UPDATE subscriptions SET quota = 0"
                           " WHERE member = ?1 AND template_id = ?2 AND openid = ?3 AND quota > 0"
                         : "UPDATE subscriptions SET quota = quota - 1"
                           " WHERE member = ?1 AND template_id = ?2 AND openid = ?3 AND quota > 0",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, template_id);
    pgw_sql_bind_text(st, 3, openid);
    rc = step_done(s, st, "taking subscription quota", err);
    *taken = rc == PGW_OK && pgw_sql_changes(s->db) == 1;
    release(s, st);
    return rc;
}

/* Members with points expiring on a local day within the horizon, not yet
 * reminded of that day: their notices (the day's total, due now) and the
 * days, in one transaction. The balance told is the member's unexpired
 * one, as every other notice's (pgw_member_figures, the same sums): what
 * lots past their expiry keep, not swept yet, is not counted, but a
 * pending hold's points on them are (its capture still takes them), and
 * an overdue hold's, not released yet, as far as they repay the debt
 * (the release repays it from them first; the rest the sweep takes).
 * Holds on lapsed lots are few: one grouped read of them (x) for the
 * whole run. A reminder hurries the member's arrivals still
 * waiting out their window, as any notice of another kind does
 * (ST_HURRY_ARRIVALS): its balance counts their points, and told first it
 * would tell points the member has not been told of (R2). */
int pgw_store_queue_reminders(pgw_store *s, int64_t now, int64_t horizon_s, int32_t offset_s,
                              int64_t *queued, pgw_err *err)
{
    static const char due[] =
        "SELECT member, (expires_at + ?3) / 86400 AS day, min(expires_at) AS at,"
        " sum(left_points) AS points FROM lots WHERE left_points > 0 AND expires_at > ?1"
        " AND expires_at <= ?1 + ?2 GROUP BY member, day";
    /* clang-format off */
    static const char notices_sql[] =
        "INSERT INTO notices (member, kind, points, balance, shop, created_at, about_at, due_at,"
        " state, channel, excluded, attempts, last_error, provider_id, updated_at)"
        " SELECT d.member, 'points_expiring', d.points,"
        " (SELECT coalesce(sum(left_points + held), 0) FROM lots WHERE member = d.member"
        "   AND expires_at > ?1 AND " LOT_LIVE("") " = 1)"
        "  + coalesce(x.pending, 0) - CASE WHEN m.debt > coalesce(x.overdue, 0)"
        "   THEN m.debt - coalesce(x.overdue, 0) ELSE 0 END,"
        " '', ?1, d.at, ?1, 'pending', '', 0, 0, '', '', ?1 FROM (%s) d"
        " JOIN members m ON m.id = d.member LEFT JOIN (SELECT h.member,"
        "   sum(CASE WHEN h.deadline > ?1 THEN p.points ELSE 0 END) AS pending,"
        "   sum(CASE WHEN h.deadline > ?1 THEN 0 ELSE p.points END) AS overdue"
        "   FROM holds h JOIN hold_portions p ON p.hold = h.id JOIN lots l ON l.id = p.lot"
        "   WHERE h.state = 0 AND l.expires_at <= ?1 GROUP BY h.member) x ON x.member = d.member"
        " WHERE NOT EXISTS (SELECT 1 FROM reminders r WHERE r.member = d.member AND r.day = d.day)";
    /* clang-format on */
    /* The members just reminded: those with a reminder made and due now
     * (read from notices_due_id), then their arrivals by notices_member,
     * among the HURRY_NEWEST notices before the reminder (the member's
     * newest: its id at least the one HURRY_NEWEST back), as
     * ST_HURRY_ARRIVALS: not every notice of each member reminded. Only
     * arrivals queued before the reminder can be waiting. */
    static const char hurry_sql[] =
        "UPDATE notices SET due_at = ?1, " HURRIED " WHERE id IN (SELECT x.id FROM (SELECT"
        " DISTINCT member FROM notices WHERE state = 'pending' AND due_at = ?1"
        " AND kind = 'points_expiring' AND created_at = ?1) AS r JOIN notices x"
        " ON x.member = r.member AND x.id >= COALESCE((SELECT id FROM notices WHERE member ="
        " r.member ORDER BY id DESC LIMIT 1 OFFSET " HURRY_NEWEST "), 0)) AND " HURRY_TAKES("?1");
    _Static_assert(sizeof(hurry_sql) < 1024, "hurry_sql fits in sql");
    static const char days_sql[] =
        "INSERT INTO reminders (member, day) SELECT member, day FROM (%s) AS d WHERE true"
        " ON CONFLICT (member, day) DO NOTHING";
    char sql[2048];
    _Static_assert(sizeof(notices_sql) + sizeof(due) < sizeof(sql), "notices_sql fits in sql");
    int rc = pgw_store_begin(s, err);
    int64_t n = 0;
    for (int step = 0; rc == PGW_OK && step < 3; step++) { /* notices, hurry, days */
        pgw_sql_stmt *st = NULL;
        if (step == 1)
            snprintf(sql, sizeof(sql), "%s", hurry_sql);
        else
            snprintf(sql, sizeof(sql), step == 0 ? notices_sql : days_sql, due);
        rc = prepare(s, sql, &st, err);
        if (rc != PGW_OK)
            break;
        pgw_sql_bind_int64(st, 1, now);
        if (step != 1) { /* the hurry takes ?1 alone */
            pgw_sql_bind_int64(st, 2, horizon_s);
            pgw_sql_bind_int64(st, 3, offset_s);
        }
        rc = step_done(s, st, "queueing reminders", err);
        if (step == 0)
            n = pgw_sql_changes(s->db);
        release(s, st);
    }
    if (rc == PGW_OK)
        rc = pgw_store_commit(s, err);
    else if (pgw_store_rollback(s, NULL) != PGW_OK)
        rc = pgw_err_prefix(err, "(and the rollback failed) ");
    *queued = rc == PGW_OK ? n : 0;
    return rc;
}

int pgw_store_set_sms_opt_out(pgw_store *s, const char *member, bool opt_out, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, "UPDATE members SET sms_opt_out = ?2 WHERE id = ?1", &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_int64(st, 2, opt_out ? 1 : 0);
    rc = step_done(s, st, "recording an SMS preference", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ENOTFOUND, "no member %s", member);
    release(s, st);
    return rc;
}

int pgw_store_sms_opt_out(pgw_store *s, const char *member, bool *opt_out, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, "SELECT sms_opt_out FROM members WHERE id = ?1", &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, member);
    int step = pgw_sql_step(st);
    *opt_out = step == PGW_SQL_ROW && pgw_sql_column_int64(st, 0) != 0;
    rc = step == PGW_SQL_ROW || step == PGW_SQL_DONE
             ? PGW_OK
             : db_error(s, PGW_EIO, "reading a preference", err);
    release(s, st);
    return rc;
}

int pgw_store_set_birthday(pgw_store *s, const char *member, const char *birthday, pgw_err *err)
{
    PGW_ASSERT(strlen(birthday) == 5);
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, "UPDATE members SET birthday = ?2 WHERE id = ?1", &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, member);
    pgw_sql_bind_text(st, 2, birthday);
    rc = step_done(s, st, "recording a birthday", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ENOTFOUND, "no member %s", member);
    release(s, st);
    return rc;
}

int pgw_store_birthday(pgw_store *s, const char *member, char birthday[6], pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, "SELECT birthday FROM members WHERE id = ?1", &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, member);
    int step = pgw_sql_step(st);
    birthday[0] = '\0';
    if (step == PGW_SQL_DONE)
        rc = pgw_err_set(err, PGW_ENOTFOUND, "no member %s", member);
    else if (step != PGW_SQL_ROW)
        rc = db_error(s, PGW_EIO, "reading a birthday", err);
    else if (!column_text(st, 0, birthday, 6))
        rc = pgw_err_set_database(err, PGW_EIO, "%s: member %s has a malformed birthday", s->path,
                                  member);
    release(s, st);
    return rc;
}

/* ---- SMS verification codes --------------------------------------------------------- */

static bool otp_time_row(pgw_sql_stmt *st, void *item)
{
    *(int64_t *)item = pgw_sql_column_int64(st, 0);
    return true;
}

int pgw_store_otp_times(pgw_store *s, const char *phone_lookup, const char *ip, int64_t since,
                        int64_t *out, size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     phone_lookup ? "SELECT created_at FROM otps WHERE phone = ?1 AND"
                                    " created_at > ?2 ORDER BY id DESC LIMIT ?3"
                                  : "SELECT created_at FROM otps WHERE ip = ?1 AND"
                                    " created_at > ?2 ORDER BY created_at DESC LIMIT ?3",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, phone_lookup ? phone_lookup : ip);
    pgw_sql_bind_int64(st, 2, since);
    pgw_sql_bind_int64(st, 3, (int64_t)cap);
    rc = read_rows(s, st, otp_time_row, out, sizeof(*out), cap, n, "reading code times", err);
    release(s, st);
    return rc;
}

int pgw_store_otp_add(pgw_store *s, const char *phone_lookup, const uint8_t *hash,
                      const char *requester, const char *ip, int64_t now, int64_t expires_at,
                      pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, "DELETE FROM otps WHERE created_at <= ?1", &st, err);
    if (rc == PGW_OK) {
        pgw_sql_bind_int64(st, 1, now - 86400);
        rc = step_done(s, st, "forgetting old codes", err);
        release(s, st);
    }
    if (rc == PGW_OK)
        rc = prepare(s,
                     "INSERT INTO otps (phone, hash, ip, created_at, expires_at, requester)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, phone_lookup);
    pgw_sql_bind_blob(st, 2, hash, PGW_OTP_HASH_LEN);
    pgw_sql_bind_text(st, 3, ip);
    pgw_sql_bind_int64(st, 4, now);
    pgw_sql_bind_int64(st, 5, expires_at);
    pgw_sql_bind_text(st, 6, requester);
    rc = step_done(s, st, "recording a code", err);
    release(s, st);
    return rc;
}

int pgw_store_otp_newest(pgw_store *s, const char *phone_lookup, pgw_otp_row *out, bool *found,
                         pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    *found = false;
    int rc = prepare(s,
                     "SELECT id, expires_at, attempts, used, hash, requester FROM otps"
                     " WHERE phone = ?1"
                     " ORDER BY id DESC LIMIT 1",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, phone_lookup);
    int step = pgw_sql_step(st);
    if (step == PGW_SQL_ROW && pgw_sql_column_bytes(st, 4) == PGW_OTP_HASH_LEN) {
        *found = true;
        *out = (pgw_otp_row){.id = pgw_sql_column_int64(st, 0),
                             .expires_at = pgw_sql_column_int64(st, 1),
                             .attempts = pgw_sql_column_int64(st, 2),
                             .used = pgw_sql_column_int64(st, 3) != 0};
        memcpy(out->hash, pgw_sql_column_blob(st, 4), PGW_OTP_HASH_LEN);
        if (!column_text(st, 5, out->requester, sizeof(out->requester)))
            step = PGW_EIO; /* longer than any we write */
    }
    rc = step == PGW_SQL_ROW || step == PGW_SQL_DONE ? PGW_OK
                                                     : db_error(s, PGW_EIO, "reading a code", err);
    release(s, st);
    return rc;
}

int pgw_store_otp_void(pgw_store *s, const char *phone_lookup, const uint8_t *hash, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, "DELETE FROM otps WHERE phone = ?1 AND hash = ?2 AND used = 0", &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, phone_lookup);
    pgw_sql_bind_blob(st, 2, hash, PGW_OTP_HASH_LEN);
    rc = step_done(s, st, "voiding a code", err);
    release(s, st);
    return rc;
}

int pgw_store_otp_mark(pgw_store *s, int64_t id, bool used, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s,
                     used ? "UPDATE otps SET used = 1 WHERE id = ?1 AND used = 0"
                          : "UPDATE otps SET attempts = attempts + 1 WHERE id = ?1 AND used = 0",
                     &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, id);
    rc = step_done(s, st, "recording a code's try", err);
    if (rc == PGW_OK && pgw_sql_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ESTATE, "code %lld is used or gone", (long long)id);
    release(s, st);
    return rc;
}

/* ---- answers --------------------------------------------------------------------- */

int pgw_store_get_answer(pgw_store *s, const char *key, char *out, size_t cap, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_SELECT_ANSWER];
    pgw_sql_bind_text(st, 1, key);
    int step = pgw_sql_step(st);
    int rc = PGW_OK;
    out[0] = '\0';
    if (step == PGW_SQL_ROW && !column_text(st, 0, out, cap))
        rc = pgw_err_set_database(err, PGW_EIO, "%s: the answer of %.128s is too long", s->path,
                                  key);
    else if (step != PGW_SQL_ROW && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading an answer", err);
    pgw_sql_reset(st);
    return rc;
}

/* 1 to PGW_ID_MAX characters: lower-case letters, digits and '_', and
 * with `shop` upper-case letters and '-' too. */
static bool id_of(const char *s, bool shop)
{
    size_t n = 0;
    for (; s[n] != '\0' && n <= PGW_ID_MAX; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              (shop && ((c >= 'A' && c <= 'Z') || c == '-'))))
            return false;
    }
    return n >= 1 && n <= PGW_ID_MAX;
}

/* The first parts of the gateway's own idempotency keys (api.c, import.c,
 * command.c): a channel of these names would key its events among them,
 * "hold:S001:X" being both hold S001:X and event X of channel hold at shop
 * S001 (the audit's capture refused for a hold still pending). */
static const char *const KEY_PREFIXES[] = {
    "hold",   "redeem", "capture",  "void",   "bind",    "mp_phone",  "otp",         "expire",
    "import", "logout", "mp_login", "mp_sub", "oa_link", "oa_follow", "oa_unfollow", "return",
};

bool pgw_store_channel_name_ok(const char *s)
{
    for (size_t i = 0; i < sizeof(KEY_PREFIXES) / sizeof(KEY_PREFIXES[0]); i++)
        if (strcmp(s, KEY_PREFIXES[i]) == 0)
            return false;
    return id_of(s, false);
}

bool pgw_store_shop_id_ok(const char *s)
{
    return id_of(s, true);
}

void pgw_store_event_key(char out[PGW_IDEM_KEY_MAX + 1], const char *channel, const char *shop,
                         const char *event_id)
{
    PGW_STATIC_ASSERT(PGW_IDEM_KEY_MAX >= 2 * PGW_ID_MAX + PGW_EVENT_ID_MAX + 2,
                      "an event's key holds its channel, shop and id whole");
    PGW_ASSERT(pgw_store_channel_name_ok(channel));
    PGW_ASSERT(shop[0] == '\0' || pgw_store_shop_id_ok(shop));
    PGW_ASSERT(strlen(event_id) <= PGW_EVENT_ID_MAX);
    PGW_TEXT(out, PGW_IDEM_KEY_MAX + 1, channel, ":", shop[0] ? shop : "-", ":", event_id);
}

int pgw_store_channel_has_keys(pgw_store *s, const char *channel, const char *source_prefix,
                               bool *has, pgw_err *err)
{
    PGW_ASSERT(strlen(source_prefix) <= PGW_ID_MAX + 1); /* "", "wx", or "S001:" */
    *has = false;
    if (!pgw_store_channel_name_ok(channel))
        return pgw_err_set(err, PGW_EINVAL, "not a channel name");
    /* The keys "channel:prefix..." sort from "channel:prefix" to before it
     * with its last byte one more (":" + 1 is ";"). */
    char from[2 * PGW_ID_MAX + 4], to[2 * PGW_ID_MAX + 4];
    int n = snprintf(from, sizeof(from), "%s:%s", channel, source_prefix);
    PGW_ASSERT(n > 0 && (size_t)n < sizeof(from));
    memcpy(to, from, (size_t)n + 1);
    to[n - 1]++;
    pgw_sql_stmt *st = NULL;
    int rc = prepare(s, "SELECT 1 FROM idempotency WHERE key >= ?1 AND key < ?2 LIMIT 1", &st, err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_text(st, 1, from);
    pgw_sql_bind_text(st, 2, to);
    int step = pgw_sql_step(st);
    *has = step == PGW_SQL_ROW;
    release(s, st);
    return step == PGW_SQL_ROW || step == PGW_SQL_DONE
               ? PGW_OK
               : db_error(s, PGW_EIO, "looking for a channel's keys", err);
}

/* `s` to quote back in a message, if it is printable ASCII: anything else
 * (not UTF-8, say) would make the message unsayable in JSON. */
static const char *quotable(const char *s)
{
    for (const char *p = s; *p != '\0'; p++)
        if (*p < 0x20 || *p > 0x7e)
            return "(unprintable)";
    return s;
}

int pgw_store_check_event_filter(const pgw_event_filter *f, pgw_err *err)
{
    if (!pgw_store_channel_name_ok(f->channel))
        return pgw_err_set(err, PGW_EINVAL,
                           "channel \"%.40s\" is not a channel name (a-z, 0-9, '_'; at most %d)",
                           quotable(f->channel), PGW_ID_MAX);
    if (f->shop != NULL && !pgw_store_shop_id_ok(f->shop))
        return pgw_err_set(err, PGW_EINVAL,
                           "shop \"%.40s\" is not a shop id (letters, digits, '_', '-'; at "
                           "most %d; \"-\" for events without one)",
                           quotable(f->shop), PGW_ID_MAX);
    return PGW_OK;
}

/* Copies a key's part up to `stop` (or its end) into out[cap]; where it stopped. */
static const char *key_part(const char *from, char stop, char *out, size_t cap)
{
    const char *end = stop ? strchr(from, stop) : from + strlen(from);
    if (end == NULL || (size_t)(end - from) >= cap)
        return NULL;
    memcpy(out, from, (size_t)(end - from));
    out[end - from] = '\0';
    return end;
}

/* One row of EVENT_COLUMNS: the key split back into source and event_id. */
static bool event_row(pgw_sql_stmt *st, void *item)
{
    pgw_recon_row *r = item; /* every field set: rows are read by the million */
    r->line = 0;
    r->malformed = false;
    r->key_read = false;
    r->problem[0] = '\0';
    r->original[0] = '\0'; /* a statement's field: sorting packs it by its length */
    r->occurred_at = pgw_sql_column_int64(st, 1);
    r->amount_fen = pgw_sql_column_int64(st, 4);
    r->points = pgw_sql_column_int64(st, 5);
    r->written_off = pgw_sql_column_null(st, 6) ? PGW_RECON_UNKNOWN : pgw_sql_column_int64(st, 6);
    const char *key = pgw_sql_column_text(st, 0), *colon = key ? strchr(key, ':') : NULL;
    const char *at = colon ? key_part(colon + 1, ':', r->source, sizeof(r->source)) : NULL;
    /* The source goes back into the next page's cursor key: only what
     * pgw_store_event_key wrote (a hand-edited key fails the read). */
    return at != NULL && pgw_store_shop_id_ok(r->source) &&
           key_part(at + 1, '\0', r->event_id, sizeof(r->event_id)) != NULL &&
           column_text(st, 2, r->type, sizeof(r->type)) &&
           column_text(st, 3, r->member, sizeof(r->member));
}

int pgw_store_read_events(pgw_store *s, const pgw_event_filter *f, const char *after_id,
                          const char *after_source, pgw_recon_row *out, size_t cap, size_t *n,
                          pgw_err *err)
{
    *n = 0;
    int rc = pgw_store_check_event_filter(f, err);
    if (rc != PGW_OK)
        return rc;
    /* Keys after the cursor's, before the first past the range: ';' follows ':'. */
    char after[PGW_IDEM_KEY_MAX + 1], before[PGW_ID_MAX * 2 + 3];
    if (f->shop != NULL)
        pgw_store_event_key(after, f->channel, f->shop, after_id);
    else if (after_source[0] != '\0')
        pgw_store_event_key(after, f->channel, after_source, after_id);
    else
        snprintf(after, sizeof(after), "%s:", f->channel);
    if (f->shop != NULL)
        snprintf(before, sizeof(before), "%s:%s;", f->channel, f->shop);
    else
        snprintf(before, sizeof(before), "%s;", f->channel);
    pgw_sql_stmt *st = s->st[ST_EVENTS];
    pgw_sql_bind_text(st, 1, after);
    pgw_sql_bind_text(st, 2, before);
    pgw_sql_bind_int64(st, 3, f->from);
    pgw_sql_bind_int64(st, 4, f->to);
    pgw_sql_bind_int64(st, 5, (int64_t)cap);
    return read_rows(s, st, event_row, out, sizeof(*out), cap, n, "reading events", err);
}

int pgw_store_read_event(pgw_store *s, const char *channel, const char *shop, const char *event_id,
                         pgw_recon_row *out, bool *found, pgw_err *err)
{
    *found = false;
    if (!pgw_store_channel_name_ok(channel) || !pgw_store_shop_id_ok(shop) ||
        strlen(event_id) > PGW_EVENT_ID_MAX)
        return PGW_OK; /* no key of the log is made of them */
    char key[PGW_IDEM_KEY_MAX + 1];
    pgw_store_event_key(key, channel, shop, event_id);
    return pgw_store_read_keyed_event(s, key, out, found, err);
}

int pgw_store_read_keyed_event(pgw_store *s, const char *key, pgw_recon_row *out, bool *found,
                               pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_EVENT];
    pgw_sql_bind_text(st, 1, key);
    size_t n = 0;
    int rc = read_rows(s, st, event_row, out, sizeof(*out), 1, &n, "reading an event", err);
    *found = rc == PGW_OK && n == 1;
    return rc;
}

static bool flow_row(pgw_sql_stmt *st, void *item)
{
    pgw_flow *f = item;
    f->kind = (pgw_transfer_kind)pgw_sql_column_int64(st, 0);
    f->points = pgw_sql_column_int64(st, 2);
    f->to_member = pgw_sql_column_int64(st, 3) != 0;
    return column_text(st, 1, f->account, sizeof(f->account));
}

/* Binds [from, to) and runs a paged read that must fit in cap. */
static int read_all(pgw_store *s, pgw_sql_stmt *st, row_reader row, void *out, size_t size,
                    size_t cap, size_t *n, const char *what, pgw_err *err)
{
    pgw_sql_bind_int64(st, 4, (int64_t)cap + 1);
    int rc = read_rows(s, st, row, out, size, cap + 1, n, what, err);
    if (rc == PGW_OK && *n > cap)
        rc = pgw_err_set(err, PGW_EINVAL, "%s: more than %zu rows; ask for a shorter period", what,
                         cap);
    return rc;
}

int pgw_store_flows(pgw_store *s, int64_t from, int64_t to, pgw_flow *out, size_t cap, size_t *n,
                    pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_FLOWS];
    pgw_sql_bind_int64(st, 1, from);
    pgw_sql_bind_int64(st, 2, to);
    pgw_sql_bind_int64(st, 3, (int64_t)cap + 1); /* one more says "too many" (sql.h: bounded) */
    int step;
    *n = 0;
    int rc = PGW_OK;
    while (rc == PGW_OK && (step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        if (*n == cap)
            rc = pgw_err_set(err, PGW_ETOOLARGE, "more than %zu accounts moved points", cap);
        else if (!flow_row(st, &out[(*n)++]))
            rc = pgw_err_set_database(err, PGW_EIO, "%s: an account name does not fit", s->path);
    }
    if (rc == PGW_OK && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading flows", err);
    pgw_sql_reset(st);
    return rc;
}

/* The funders of lot `lot` into e (debit accounts and points, in order). */
static int lot_funders(pgw_store *s, int64_t lot, pgw_lot_expiry *e, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_LOT_FUNDERS];
    pgw_sql_bind_int64(st, 1, lot);
    int step, rc = PGW_OK;
    e->n_funders = 0;
    while (rc == PGW_OK && (step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        if (e->n_funders == PGW_EARN_FUNDERS_MAX ||
            !column_text(st, 0, e->funder[e->n_funders], sizeof(e->funder[0])))
            rc = pgw_err_set_database(err, PGW_EIO, "%s: lot %lld has funders beyond the bounds",
                                      s->path, (long long)lot);
        else
            e->funded[e->n_funders++] = pgw_sql_column_int64(st, 1);
    }
    if (rc == PGW_OK && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading a lot's funders", err);
    pgw_sql_reset(st);
    if (rc == PGW_OK && e->n_funders == 0)
        rc = pgw_err_set_database(err, PGW_EIO, "%s: lot %lld has no funding transfer", s->path,
                                  (long long)lot);
    return rc;
}

bool pgw_store_expiry_key(const char *key, int64_t *lot, int64_t *before)
{
    static const char prefix[] = "expire:lot:";
    const char *rest =
        strncmp(key, prefix, sizeof(prefix) - 1) == 0 ? key + sizeof(prefix) - 1 : NULL;
    const char *colon = rest != NULL ? strchr(rest, ':') : NULL;
    char digits[24]; /* an int64's 19 digits and some leading zeros */
    int64_t l = 0, b = 0;
    if (colon == NULL || (size_t)(colon - rest) >= sizeof(digits))
        return false;
    memcpy(digits, rest, (size_t)(colon - rest));
    digits[colon - rest] = '\0';
    if (!pgw_decimal_in(digits, 1, INT64_MAX, &l) || !pgw_decimal_in(colon + 1, 0, INT64_MAX, &b))
        return false;
    *lot = l;
    *before = b;
    return true;
}

int pgw_store_expiries(pgw_store *s, int64_t from, int64_t to, int64_t after_id,
                       pgw_lot_expiry *out, size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_EXPIRIES];
    pgw_sql_bind_int64(st, 1, from);
    pgw_sql_bind_int64(st, 2, to);
    pgw_sql_bind_int64(st, 3, after_id);
    pgw_sql_bind_int64(st, 4, (int64_t)cap);
    int step, rc = PGW_OK;
    *n = 0;
    /* Rows first (the statement stays open while the funders are read
     * with another one), then each lot's funders. */
    while (rc == PGW_OK && (step = pgw_sql_step(st)) == PGW_SQL_ROW) {
        PGW_ASSERT(*n < cap);
        pgw_lot_expiry *e = &out[(*n)++];
        e->transfer_id = pgw_sql_column_int64(st, 0);
        e->points = pgw_sql_column_int64(st, 1);
        const char *ref = pgw_sql_column_text(st, 2), *key = pgw_sql_column_text(st, 3);
        int64_t lot = 0;
        e->lot = 0;
        e->before = -1;
        /* Its reference is lot:<lot>, its key says that lot too (apply_expire_lot). */
        bool named = ref != NULL && strncmp(ref, "lot:", 4) == 0 &&
                     pgw_decimal_in(ref + 4, 1, INT64_MAX, &e->lot) && key != NULL &&
                     pgw_store_expiry_key(key, &lot, &e->before) && lot == e->lot;
        if (!named)
            rc = pgw_err_set_database(err, PGW_EIO, "%s: expiry %lld does not name its lot",
                                      s->path, (long long)e->transfer_id);
        else
            rc = lot_funders(s, e->lot, e, err);
    }
    if (rc == PGW_OK && step != PGW_SQL_DONE)
        rc = db_error(s, PGW_EIO, "reading expiries", err);
    pgw_sql_reset(st);
    return rc;
}

static bool day_flow_row(pgw_sql_stmt *st, void *item)
{
    pgw_day_flow *d = item;
    d->day = pgw_sql_column_int64(st, 0);
    d->issued = pgw_sql_column_int64(st, 1);
    d->reversed = pgw_sql_column_int64(st, 2);
    d->redeemed = pgw_sql_column_int64(st, 3);
    d->expired = pgw_sql_column_int64(st, 4);
    return true;
}

int pgw_store_day_flows(pgw_store *s, int64_t from, int64_t to, int32_t offset_s, pgw_day_flow *out,
                        size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_DAY_FLOWS];
    pgw_sql_bind_int64(st, 1, from);
    pgw_sql_bind_int64(st, 2, to);
    pgw_sql_bind_int64(st, 3, offset_s);
    return read_all(s, st, day_flow_row, out, sizeof(*out), cap, n, "reading the pool's days", err);
}

int pgw_store_member_net(pgw_store *s, int64_t from, int64_t to, int64_t *out, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_MEMBER_NET];
    pgw_sql_bind_int64(st, 1, from);
    pgw_sql_bind_int64(st, 2, to);
    return one_int64(s, st, false, out, "summing members", err);
}

static bool day_holding_row(pgw_sql_stmt *st, void *item)
{
    pgw_day_holding *d = item;
    d->day = pgw_sql_column_int64(st, 0);
    d->held = pgw_sql_column_int64(st, 1);
    d->owed = pgw_sql_column_int64(st, 2);
    return true;
}

int pgw_store_day_holdings(pgw_store *s, int64_t from, int64_t to, int32_t offset_s,
                           pgw_day_holding *out, size_t cap, size_t *n, pgw_err *err)
{
    pgw_sql_stmt *st = s->st[ST_DAY_HOLDINGS];
    pgw_sql_bind_int64(st, 1, from);
    pgw_sql_bind_int64(st, 2, to);
    pgw_sql_bind_int64(st, 3, offset_s);
    pgw_sql_bind_int64(st, 5, PGW_STORE_OPENING_DAY(from, offset_s));
    return read_all(s, st, day_holding_row, out, sizeof(*out), cap, n,
                    "reading what members hold and owe", err);
}

const char *pgw_store__statement_for_test(pgw_store *s, const char *name)
{
    static const struct {
        const char *name;
        int id;
    } named[] = {{"member_figures", ST_MEMBER_FIGURES}, {"history", ST_HISTORY},
                 {"spendable_lots", ST_SPENDABLE_LOTS}, {"expiring", ST_EXPIRING},
                 {"hurry_arrivals", ST_HURRY_ARRIVALS}, {"insert_notice", ST_INSERT_NOTICE}};
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
        if (strcmp(named[i].name, name) == 0)
            return pgw_sql_text(s->st[named[i].id]);
    return strcmp(name, "claim_notices") == 0  ? CLAIM_NOTICES
           : strcmp(name, "unhurry") == 0      ? UNHURRY
           : strcmp(name, "read_past") == 0    ? READ_PAST
           : strcmp(name, "merged_in_at") == 0 ? MERGED_IN_AT
           : strcmp(name, "merge_of") == 0     ? MERGE_OF
           : strcmp(name, "dead_notices") == 0 ? DEAD_NOTICES
                                               : NULL;
}

const char *pgw_store__verify_query_for_test(size_t i)
{
    enum { N_INVARIANTS = sizeof(INVARIANTS) / sizeof(INVARIANTS[0]) };
    static const char *const fixed[] = {VERIFY_SUMS, VERIFY_MEMBERS, VERIFY_REFUNDS,
                                        VERIFY_WRITTEN_OFF, VERIFY_EVENTS};
    enum { N_FIXED = sizeof(fixed) / sizeof(fixed[0]) };
    if (i < 2)
        return fixed[i];
    if (i < 2 + N_INVARIANTS)
        return INVARIANTS[i - 2];
    return i < N_FIXED + N_INVARIANTS ? fixed[i - N_INVARIANTS] : NULL;
}

/* ---- closed periods ----------------------------------------------------------- */

#define PERIOD_NEWEST                                                                              \
    "SELECT before_at, closed_at_us, last_transfer FROM period_closes"                             \
    " ORDER BY before_at DESC LIMIT 1"

int pgw_store_period_close(pgw_store *s, pgw_period_close *out, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    pgw_sql_stmt *st = NULL;
    if (prepare(s, PERIOD_NEWEST, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "reading the period's close", err);
    int step = pgw_sql_step(st);
    if (step == PGW_SQL_ROW) {
        out->before = pgw_sql_column_int64(st, 0);
        out->closed_at_us = pgw_sql_column_int64(st, 1);
        out->last_transfer = pgw_sql_column_int64(st, 2);
    }
    release(s, st);
    return step == PGW_SQL_ROW || step == PGW_SQL_DONE
               ? PGW_OK
               : db_error(s, PGW_EIO, "reading the period's close", err);
}

/* PGW_ESTATE when work dated before `before` is still to be written: a
 * lot due before it with points left (its expiry), a hold pending past a
 * deadline before it (its release). The sweep dates an expiry by its run
 * (serve's clock, a moment after it fell due; expire's --as-of): closed
 * first, the expiry would land in the open period. A run as of a second
 * before the close dates them in the period it closes (the message says,
 * its times in `tz` as finance copies them). */
static int check_nothing_due(pgw_store *s, int64_t before, const pgw_tz *tz, pgw_err *err)
{
    pgw_lot lot;
    pgw_hold_record hold;
    size_t lots = 0, holds = 0;
    int rc = pgw_store_due_lots(s, before - 1, 0, &lot, 1, &lots, err);
    if (rc == PGW_OK)
        rc = pgw_store_due_holds(s, before - 1, NULL, &hold, 1, &holds, err);
    if (rc != PGW_OK || (lots == 0 && holds == 0))
        return rc;
    char what[200], due[PGW_RFC3339_MAX], close[PGW_RFC3339_MAX], as_of[PGW_RFC3339_MAX];
    pgw_format_moment(lots > 0 ? lot.expires_at : hold.deadline, tz, due);
    pgw_format_moment(before, tz, close);
    pgw_format_moment(before - 1, tz, as_of);
    if (lots > 0)
        snprintf(what, sizeof(what), "lot %lld of member %.64s is due since %s with %lld points",
                 (long long)lot.id, lot.member, due, (long long)lot.left);
    else
        snprintf(what, sizeof(what), "hold %.64s is pending past its deadline %s", hold.id, due);
    return pgw_err_set(err, PGW_ESTATE,
                       "work dated before %s is not written yet (%s): run pointsgw expire "
                       "--as-of %s first (a second before the close, so that the expiries "
                       "are dated in the period it closes), then close",
                       close, what, as_of);
}

static int count_closes(pgw_store *s, int64_t *count, pgw_err *err)
{
    pgw_sql_stmt *st = NULL;
    if (pgw_sql_prepare(s->db, "SELECT COUNT(*) FROM period_closes", false, &st, NULL) != PGW_OK)
        return db_error(s, PGW_EIO, "counting the closes of periods", err);
    int step = pgw_sql_step(st);
    *count = step == PGW_SQL_ROW ? pgw_sql_column_int64(st, 0) : 0;
    pgw_sql_finalize(st);
    return step == PGW_SQL_ROW ? PGW_OK
                               : db_error(s, PGW_EIO, "counting the closes of periods", err);
}

int pgw_store_close_period(pgw_store *s, int64_t before, int64_t now_us, const pgw_tz *tz,
                           bool *moved, pgw_err *err)
{
    PGW_ASSERT(pgw_sql_in_transaction(s->db));
    *moved = false;
    pgw_period_close was;
    char asked[PGW_RFC3339_MAX], in_force[PGW_RFC3339_MAX];
    pgw_format_moment(before, before > 0 ? tz : NULL, asked);
    if (before <= 0 || before > now_us / 1000000)
        return pgw_err_set(err, PGW_EINVAL,
                           "a period closes before a moment already past (%s is %s)", asked,
                           before <= 0 ? "not one" : "ahead of the clock");
    int rc = pgw_store_period_close(s, &was, err);
    if (rc == PGW_OK && before < was.before) {
        pgw_format_moment(was.before, tz, in_force);
        rc = pgw_err_set(err, PGW_EINVAL,
                         "the period is closed before %s already; a close only moves later, "
                         "%s is earlier: nothing changed",
                         in_force, asked);
    }
    if (rc != PGW_OK || before == was.before)
        return rc;
    int64_t count = 0;
    rc = count_closes(s, &count, err);
    if (rc == PGW_OK && count >= PGW_PERIOD_CLOSES_MAX)
        rc = pgw_err_set_database(err, PGW_EFULL,
                                  "%s holds %d closes of periods, the most verify reads", s->path,
                                  PGW_PERIOD_CLOSES_MAX);
    if (rc == PGW_OK)
        rc = check_nothing_due(s, before, tz, err);
    int64_t head = 0;
    uint8_t hash[PGW_HASH_LEN];
    if (rc == PGW_OK)
        rc = pgw_store_chain_head(s, &head, hash, err);
    pgw_sql_stmt *st = NULL;
    if (rc == PGW_OK && prepare(s,
                                "INSERT INTO period_closes (before_at, closed_at_us, last_transfer)"
                                " VALUES (?1, ?2, ?3)",
                                &st, NULL) != PGW_OK)
        rc = db_error(s, PGW_EIO, "closing the period", err);
    if (rc != PGW_OK)
        return rc;
    pgw_sql_bind_int64(st, 1, before);
    pgw_sql_bind_int64(st, 2, now_us);
    pgw_sql_bind_int64(st, 3, head);
    int step = pgw_sql_step(st);
    release(s, st);
    if (step != PGW_SQL_DONE)
        return db_error(s, PGW_EIO, "closing the period", err);
    s->closed_before = before;
    *moved = true;
    return PGW_OK;
}

int pgw_store__exec_for_test(pgw_store *s, const char *sql, pgw_err *err)
{
    return exec(s, sql, "test SQL", err);
}

void pgw_store__fail_syncs_for_test(pgw_store *s)
{
    s->fail_syncs = true;
}
