/* fsutil.h — small file-system helpers shared by the output sink (core/)
 * and the state store (storage/). common/ is what both layers may
 * include: it includes neither. Pure C, libc only. */
#ifndef ORCH_FSUTIL_H
#define ORCH_FSUTIL_H

/* mkdir -p of the directory part of path ("out/a/b.jsonl" -> out/a).
 * Best effort: a directory that cannot be made shows up as the error of
 * the open that follows, which names the path and the reason. */
void orch_mkdir_parents(const char *path);

#endif
