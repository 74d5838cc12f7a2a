/*
 * path.c - see path.h.
 */
#include "util/path.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

bool pgw_path_whole(const char *path, char whole[PATH_MAX])
{
    if (realpath(path, whole) != NULL)
        return true;
    char dir[PATH_MAX], real_dir[PATH_MAX];
    if (!pgw_path_folder(path, dir, sizeof(dir)) || realpath(dir, real_dir) == NULL)
        return false;
    const char *slash = strrchr(path, '/');
    const char *name = slash != NULL ? slash + 1 : path;
    return snprintf(whole, PATH_MAX, "%s/%s", strcmp(real_dir, "/") == 0 ? "" : real_dir, name) <
           PATH_MAX;
}

bool pgw_path_link_step(const char *path, char *next, size_t cap, bool *was_link)
{
    char link[PATH_MAX];
    ssize_t n = readlink(path, link, sizeof(link) - 1);
    *was_link = n >= 0;
    if (n < 0)
        return (size_t)snprintf(next, cap, "%s", path) < cap;
    link[n] = '\0';
    const char *slash = strrchr(path, '/');
    if (link[0] == '/' || slash == NULL)
        return (size_t)snprintf(next, cap, "%s", link) < cap;
    return (size_t)snprintf(next, cap, "%.*s/%s", (int)(slash - path), path, link) < cap;
}
