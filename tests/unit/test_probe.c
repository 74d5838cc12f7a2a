/*
 * test_probe.c - linear probing's backward shift: which entries of the
 * run after a hole stay, in a run that wraps past the table's end and in
 * one that does not; and a table of 8 slots emptied entry by entry, every
 * other entry still found from its home after each removal.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "util/probe.h"

static void test_which_entries_stay(void **state)
{
    (void)state;
    /* Not wrapped, hole at 2, entry at 5: homes 3..5 stay, others move. */
    assert_false(pgw_probe_stays(1, 2, 5));
    assert_false(pgw_probe_stays(2, 2, 5)); /* its home is the hole */
    assert_true(pgw_probe_stays(3, 2, 5));
    assert_true(pgw_probe_stays(5, 2, 5));  /* at home */
    assert_false(pgw_probe_stays(6, 2, 5)); /* home after it: wrapped round to it */
    /* Wrapped (8 slots): hole at 6, entry at 1: homes 7, 0, 1 stay. */
    assert_true(pgw_probe_stays(7, 6, 1));
    assert_true(pgw_probe_stays(0, 6, 1));
    assert_true(pgw_probe_stays(1, 6, 1));
    assert_false(pgw_probe_stays(6, 6, 1));
    assert_false(pgw_probe_stays(5, 6, 1));
    assert_false(pgw_probe_stays(2, 6, 1));
}

/* A table of 8 slots, keys 1..255 (0: empty), a key's home its value. */
enum { SLOTS = 8 };

static size_t home(unsigned key)
{
    return key % SLOTS;
}

static void put(unsigned *t, unsigned key)
{
    size_t i = home(key);
    while (t[i] != 0)
        i = (i + 1) % SLOTS;
    t[i] = key;
}

static size_t find(const unsigned *t, unsigned key)
{
    for (size_t i = home(key), n = 0; n < SLOTS; i = (i + 1) % SLOTS, n++) {
        if (t[i] == key)
            return i;
        if (t[i] == 0)
            return SLOTS;
    }
    return SLOTS;
}

/* As peer_limit.c and http.c empty a slot. */
static void empty(unsigned *t, size_t i)
{
    for (size_t j = (i + 1) % SLOTS; t[j] != 0; j = (j + 1) % SLOTS) {
        if (!pgw_probe_stays(home(t[j]), i, j)) {
            t[i] = t[j];
            i = j;
        }
    }
    t[i] = 0;
}

/* Keys crowding homes 6, 7 and 0 so that runs wrap; each removed in every
 * order of a few, the rest found after each removal. */
static void test_a_table_stays_searchable(void **state)
{
    (void)state;
    static const unsigned keys[] = {6, 14, 7, 22, 8, 15, 3};
    enum { N = sizeof(keys) / sizeof(keys[0]) };
    for (size_t first = 0; first < N; first++) {
        unsigned t[SLOTS];
        memset(t, 0, sizeof(t));
        for (size_t k = 0; k < N; k++)
            put(t, keys[k]);
        bool gone[N] = {false};
        for (size_t step = 0; step < N; step++) {
            size_t k = (first + step * 3) % N;
            while (gone[k])
                k = (k + 1) % N;
            size_t at = find(t, keys[k]);
            assert_true(at < SLOTS);
            empty(t, at);
            gone[k] = true;
            for (size_t other = 0; other < N; other++)
                assert_int_equal(find(t, keys[other]) < SLOTS, !gone[other]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_which_entries_stay),
        cmocka_unit_test(test_a_table_stays_searchable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
