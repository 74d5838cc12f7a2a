/*
 * dashboard.h - the operator dashboard (web/index.html), compiled into the
 * binary by scripts/embed.cmake: `GET /` serves it, with nothing to install
 * beside the one binary. It reads /healthz and /metrics and watches
 * /v1/stream with a key the operator types (kept in sessionStorage).
 */
#ifndef PGW_SERVER_DASHBOARD_H
#define PGW_SERVER_DASHBOARD_H

#include <stddef.h>

extern const unsigned char pgw_dashboard_html[]; /* NUL-terminated */
extern const size_t pgw_dashboard_html_len;

#endif
