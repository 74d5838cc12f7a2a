/*
 * path.c - see path.h.
 */
#include "util/path.h"

#include <string.h>

bool pgw_path_folder(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    const char *folder = slash == NULL ? "." : path;
    size_t n = slash == NULL ? 1 : (slash == path ? 1 : (size_t)(slash - path));
    if (cap == 0 || n >= cap) {
        if (cap > 0)
            out[0] = '\0';
        return false;
    }
    memcpy(out, folder, n);
    out[n] = '\0';
    return true;
}
