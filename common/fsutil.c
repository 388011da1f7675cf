/* fsutil.c — see fsutil.h. */
#include "fsutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void orch_mkdir_parents(const char *path)
{
    char *dir = strdup(path);
    if (dir == NULL)
        return;
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(dir, 0777);
        *p = '/';
    }
    free(dir);
}
