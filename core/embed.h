/* embed.h — the Lua half of the library, compiled into the binary.
 * The table is generated at build time by core/embed.cmake from lua/orch. */
#ifndef ORCH_EMBED_H
#define ORCH_EMBED_H

#include <stddef.h>

struct orch_embedded {
    const char *module;    /* "orch", "orch.run", "orch.providers.mock" */
    const char *chunkname; /* "@lua/orch/run.lua", for tracebacks */
    const unsigned char *src;
    size_t len;
};

extern const struct orch_embedded orch_embedded_lua[]; /* ends with module == NULL */
/* The web page of `orch serve` (the files in web/, by core/embed.cmake), named
 * by file name ("index.html"); ends with module == NULL. */
extern const struct orch_embedded orch_embedded_web[];

#endif
