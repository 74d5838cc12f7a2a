/*
 * assertions.h - invariants that stay checked in every build.
 *
 * Like Redis' serverAssert and TigerBeetle's asserts, PGW_ASSERT is never
 * compiled out: a broken invariant in a ledger is a bug that must stop the
 * process loudly (turning a correctness bug into a liveness bug) rather than
 * write a wrong balance. Use it for what cannot happen if the code is right;
 * use a PGW_E... return for what bad input can cause.
 */
#ifndef PGW_CORE_ASSERTIONS_H
#define PGW_CORE_ASSERTIONS_H

/* Prints "file:line: assertion failed: expr" to stderr and aborts. */
_Noreturn void pgw_assert_fail(const char *expr, const char *file, int line);

#define PGW_ASSERT(expr)                                                                           \
    do {                                                                                           \
        if (!(expr))                                                                               \
            pgw_assert_fail(#expr, __FILE__, __LINE__);                                            \
    } while (0)

/* Compile-time relationships between constants. */
#define PGW_STATIC_ASSERT(expr, why) _Static_assert(expr, why)

#endif
