/*
 * The process's cgroup memory limit (see cgroup.h).
 *
 * 1. /proc/self/cgroup names the process's cgroup in each hierarchy, one
 *    line "ID:CONTROLLERS:PATH" per hierarchy: "0::PATH" for v2, a line
 *    whose controllers include "memory" for v1.
 * 2. /proc/self/mountinfo says where each hierarchy is mounted (field 5),
 *    and which of its directories is the mount's root (field 4): a
 *    container usually sees its own cgroup as "/" of its mount. The cgroup's
 *    directory is the mount point plus the cgroup's path with the mount's
 *    root taken off its front. When the path is not below the mount's root
 *    (a process moved to another cgroup after a namespace or mount was set
 *    up) it is taken as relative to the mount point instead, as .NET's
 *    runtime does; ".." and "." components are dropped, so the walk never
 *    leaves the mount.
 * 3. From that directory up to the mount point, every level's limit counts
 *    and the lowest wins: a parent's limit covers its children. v1 only: a
 *    parent whose memory.use_hierarchy is 0 does not account its children,
 *    so the walk stops below it (kernels before 5.16 allowed that).
 *
 * Everything is read with fixed buffers, line by line; a line too long for
 * them is skipped, and so is a cgroup path too long to build.
 */
#include <config.h>

#include "cgroup.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "sys.h"

#define PATH_CAP 4096  /* a directory or file name, the root prefix included */
#define LINE_CAP 8192  /* a line of mountinfo: two escaped paths and more */
#define READ_CAP 4096  /* what one read(2) of a line file asks for */
#define VALUE_CAP 256  /* a whole value file: memory.max, cgroup.controllers */
#define MAX_FIELDS 32  /* of a mountinfo line */

#define UNLIMITED UINT64_MAX
/* Limits at or above this mean "none": v1 reports its unlimited as LONG_MAX
 * rounded down to the page size (9223372036854771712 with 4 KiB pages,
 * 9223372036854710272 with 64 KiB pages). */
#define HUGE_LIMIT ((uint64_t)1 << 62)

struct hierarchy {
  bool in_cgroup;      /* /proc/self/cgroup has its line: path is set */
  bool mounted;        /* mountinfo has a mount of it: mount_* are set */
  bool root_is_prefix; /* the mount's root is path or one of its ancestors */
  char path[PATH_CAP];
  char mount_root[PATH_CAP];
  char mount_point[PATH_CAP];
};

/* What one hierarchy's walk found. */
struct found {
  bool present; /* it has a memory controller the process is under */
  uint64_t max, high;
};

/* Static, not on the stack: 45 KiB would be a lot for a caller's thread.
 * Callers serialise (cgroup.h). */
static struct {
  struct hierarchy v1, v2;
  char rbuf[READ_CAP];
  char line[LINE_CAP];
  char dir[PATH_CAP];
  char file[PATH_CAP];
  char value[VALUE_CAP];
} s;

/* ---------------------------------------------------------------- strings */

/* Appends src to dst (holding *len characters); false if it does not fit
 * (dst is then unchanged past *len). */
static bool append(char *dst, size_t cap, size_t *len, const char *src,
                   size_t n) {
  if (n >= cap - *len) return false;
  memcpy(dst + *len, src, n);
  *len += n;
  dst[*len] = '\0';
  return true;
}

static bool append_str(char *dst, size_t cap, size_t *len, const char *src) {
  return append(dst, cap, len, src, strlen(src));
}

/* Whether `word` is one of the items of `list`, items being separated by
 * any of the characters in `seps`. */
static bool has_word(const char *list, const char *seps, const char *word) {
  size_t wlen = strlen(word);
  while (*list) {
    size_t n = strcspn(list, seps);
    if (n == wlen && memcmp(list, word, n) == 0) return true;
    list += n;
    if (*list) list++;
  }
  return false;
}

/* Whether `root` is `path` or an ancestor of it ("/" is everyone's). */
static bool path_has_prefix(const char *path, const char *root) {
  size_t n = strlen(root);
  while (n > 0 && root[n - 1] == '/') n--;
  return strncmp(path, root, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Decodes mountinfo's octal escapes (\040 for a space, \011, \012, \134) in
 * place. Anything else, and an escape of NUL, stays as it is. */
static void unescape(char *p) {
  char *out = p;
  while (*p) {
    if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' &&
        p[2] <= '7' && p[3] >= '0' && p[3] <= '7') {
      int c = (p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0');
      if (c != 0) {
        *out++ = (char)c;
        p += 4;
        continue;
      }
    }
    *out++ = *p++;
  }
  *out = '\0';
}

/* ------------------------------------------------------------------ files */

/* Opens root + path; -1 if that does not fit or the open fails. */
static int open_under(const char *root, const char *path) {
  size_t len = 0;
  s.file[0] = '\0';
  if (!append_str(s.file, sizeof s.file, &len, root) ||
      !append_str(s.file, sizeof s.file, &len, path))
    return -1;
  return osmem__posix_open(s.file);
}

struct reader {
  int fd;
  size_t pos, len; /* unread bytes of s.rbuf: [pos, len) */
  bool done;       /* end of file, or a read failed */
};

/* The next line into s.line, without its newline. A line too long for
 * s.line, or holding a NUL byte, is skipped; so is a line cut short by a
 * failed read. A last line without a newline counts. False at the end. */
static bool next_line(struct reader *r) {
  size_t n = 0;
  bool any = false, bad = false;
  for (;;) {
    if (r->pos == r->len) {
      ssize_t got = r->done ? 0 : osmem__posix_read(r->fd, s.rbuf, sizeof s.rbuf);
      if (got <= 0) {
        r->done = true;
        if (!any || bad || got < 0) return false;
        s.line[n] = '\0';
        return true;
      }
      r->pos = 0;
      r->len = (size_t)got;
    }
    char c = s.rbuf[r->pos++];
    any = true;
    if (c == '\n') {
      if (!bad) {
        s.line[n] = '\0';
        return true;
      }
      n = 0;
      any = bad = false;
    } else if (c == '\0' || n + 1 >= sizeof s.line) {
      bad = true;
    } else if (!bad) {
      s.line[n++] = c;
    }
  }
}

enum read_result { READ_OK, READ_MISSING, READ_OVERLONG };

/* Reads the whole of s.dir + "/" + name into s.value, NUL-terminated, its
 * length in *len. READ_MISSING when it cannot be opened or read;
 * READ_OVERLONG when it does not fit s.value. */
static enum read_result read_small(const char *name, size_t *len) {
  size_t n = 0;
  s.file[0] = '\0';
  if (!append_str(s.file, sizeof s.file, &n, s.dir) ||
      !append_str(s.file, sizeof s.file, &n, "/") ||
      !append_str(s.file, sizeof s.file, &n, name))
    return READ_MISSING;
  int fd = osmem__posix_open(s.file);
  if (fd < 0) return READ_MISSING;
  enum read_result res = READ_OK;
  n = 0;
  for (;;) {
    ssize_t got;
    if (n == sizeof s.value - 1) { /* full: is there more? */
      char extra;
      got = osmem__posix_read(fd, &extra, 1);
      if (got > 0) res = READ_OVERLONG;
      if (got < 0) res = READ_MISSING;
      break;
    }
    got = osmem__posix_read(fd, s.value + n, sizeof s.value - 1 - n);
    if (got < 0) res = READ_MISSING;
    if (got <= 0) break;
    n += (size_t)got;
  }
  osmem__posix_close(fd);
  s.value[n] = '\0';
  *len = n;
  return res;
}

enum value_kind { VALUE_MISSING, VALUE_IGNORED, VALUE_UNLIMITED, VALUE_LIMIT };

/* Reads a limit file of s.dir: a number of bytes into *out (VALUE_LIMIT),
 * no limit ("max", "-1", huge numbers), a file that is not there, or one
 * whose contents are ignored (anything else, 0 included). */
static enum value_kind read_limit(const char *name, uint64_t *out) {
  size_t len;
  enum read_result r = read_small(name, &len);
  if (r == READ_MISSING) return VALUE_MISSING;
  if (r == READ_OVERLONG) return VALUE_IGNORED;
  const char *v = s.value;
  while (len > 0 && (v[len - 1] == '\n' || v[len - 1] == ' ' ||
                     v[len - 1] == '\t' || v[len - 1] == '\r'))
    len--;
  if (len == 0) return VALUE_IGNORED;
  if ((len == 3 && memcmp(v, "max", 3) == 0) ||
      (len == 2 && memcmp(v, "-1", 2) == 0))
    return VALUE_UNLIMITED;
  uint64_t x = 0;
  bool overflow = false;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return VALUE_IGNORED;
    unsigned d = (unsigned)(v[i] - '0');
    if (x > (UINT64_MAX - d) / 10)
      overflow = true;
    else
      x = x * 10 + d;
  }
  if (overflow || x >= HUGE_LIMIT) return VALUE_UNLIMITED;
  if (x == 0) return VALUE_IGNORED;
  *out = x;
  return VALUE_LIMIT;
}

/* ------------------------------------------------------- what to read */

/* Step 1: the process's v1 memory and v2 cgroups. The first line of each
 * kind wins. */
static void read_proc_cgroup(const char *root) {
  int fd = open_under(root, "/proc/self/cgroup");
  if (fd < 0) return;
  struct reader r = {fd, 0, 0, false};
  while (next_line(&r)) {
    char *c1 = strchr(s.line, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2) continue;
    *c1 = *c2 = '\0';
    const char *id = s.line, *controllers = c1 + 1, *path = c2 + 1;
    if (path[0] != '/') continue;
    struct hierarchy *h;
    if (strcmp(id, "0") == 0 && controllers[0] == '\0')
      h = &s.v2;
    else if (has_word(controllers, ",", "memory"))
      h = &s.v1;
    else
      continue;
    if (h->in_cgroup) continue;
    size_t len = 0;
    if (append_str(h->path, sizeof h->path, &len, path)) h->in_cgroup = true;
  }
  osmem__posix_close(fd);
}

/* Step 2: where the hierarchies are mounted. A hierarchy may be mounted more
 * than once (bind mounts): the first mount whose root is the cgroup or above
 * it wins, else the first mount. */
static void read_mountinfo(const char *root) {
  int fd = open_under(root, "/proc/self/mountinfo");
  if (fd < 0) return;
  struct reader r = {fd, 0, 0, false};
  while (next_line(&r)) {
    /* id parent major:minor root mount-point options [optional...] - fstype
     * source super-options */
    char *f[MAX_FIELDS];
    size_t nf = 0;
    for (char *p = s.line; *p;) {
      if (*p == ' ') {
        p++;
        continue;
      }
      if (nf == MAX_FIELDS) {
        nf = 0;
        break;
      }
      f[nf++] = p;
      while (*p && *p != ' ') p++;
      if (*p) *p++ = '\0';
    }
    size_t sep = 6;
    while (sep < nf && strcmp(f[sep], "-") != 0) sep++;
    if (sep + 3 >= nf) continue;
    const char *fstype = f[sep + 1], *super = f[sep + 3];
    struct hierarchy *h;
    if (strcmp(fstype, "cgroup2") == 0)
      h = &s.v2;
    else if (strcmp(fstype, "cgroup") == 0 && has_word(super, ",", "memory"))
      h = &s.v1;
    else
      continue;
    if (!h->in_cgroup) continue;
    char *mroot = f[3], *mpoint = f[4];
    unescape(mroot);
    unescape(mpoint);
    if (mroot[0] != '/' || mpoint[0] != '/') continue;
    bool prefix = path_has_prefix(h->path, mroot);
    if (h->mounted && (h->root_is_prefix || !prefix)) continue;
    size_t lr = strlen(mroot), lp = strlen(mpoint);
    if (lr >= sizeof h->mount_root || lp >= sizeof h->mount_point) continue;
    memcpy(h->mount_root, mroot, lr + 1);
    memcpy(h->mount_point, mpoint, lp + 1);
    h->mounted = true;
    h->root_is_prefix = prefix;
  }
  osmem__posix_close(fd);
}

/* s.dir = root + mount point + the cgroup's path below the mount's root,
 * without "", "." and ".." components; *base = the length of root + mount
 * point, where the walk up stops. False when it does not fit. */
static bool build_dir(const char *root, const struct hierarchy *h,
                      size_t *base) {
  const char *rel = h->path;
  if (h->root_is_prefix) {
    size_t n = strlen(h->mount_root);
    while (n > 0 && h->mount_root[n - 1] == '/') n--;
    rel += n;
  }
  size_t len = 0, root_len = strlen(root);
  s.dir[0] = '\0';
  if (!append_str(s.dir, sizeof s.dir, &len, root) ||
      !append_str(s.dir, sizeof s.dir, &len, h->mount_point))
    return false;
  while (len > root_len && s.dir[len - 1] == '/') s.dir[--len] = '\0';
  *base = len;
  while (*rel) {
    size_t n = strcspn(rel, "/");
    bool skip = n == 0 || (n == 1 && rel[0] == '.') ||
                (n == 2 && rel[0] == '.' && rel[1] == '.');
    if (!skip && (!append_str(s.dir, sizeof s.dir, &len, "/") ||
                  !append(s.dir, sizeof s.dir, &len, rel, n)))
      return false;
    rel += n;
    if (*rel) rel++;
  }
  return true;
}

static void lower(uint64_t *to, uint64_t x) {
  if (x < *to) *to = x;
}

/* Step 3: the limits of the cgroup's directory and of each directory above
 * it, up to the mount point. */
static struct found walk(const char *root, const struct hierarchy *h,
                         unsigned version) {
  struct found f = {false, UNLIMITED, UNLIMITED};
  size_t base;
  if (!h->in_cgroup || !h->mounted || !build_dir(root, h, &base)) return f;
  size_t n = strlen(s.dir);
  for (bool leaf = true;; leaf = false) {
    s.dir[n] = '\0';
    uint64_t x;
    enum value_kind k;
    if (version == 1) {
      if (!leaf) {
        size_t len;
        if (read_small("memory.use_hierarchy", &len) == READ_OK &&
            s.value[0] == '0' && (s.value[1] == '\0' || s.value[1] == '\n'))
          break;
      }
      k = read_limit("memory.limit_in_bytes", &x);
      f.present |= k != VALUE_MISSING;
      if (k == VALUE_LIMIT) lower(&f.max, x);
    } else {
      k = read_limit("memory.max", &x);
      f.present |= k != VALUE_MISSING;
      if (k == VALUE_LIMIT) lower(&f.max, x);
      k = read_limit("memory.high", &x);
      f.present |= k != VALUE_MISSING;
      if (k == VALUE_LIMIT) lower(&f.high, x);
      /* The root cgroup has neither file: its controller list tells. */
      size_t len;
      if (leaf && read_small("cgroup.controllers", &len) == READ_OK &&
          has_word(s.value, " \t\n", "memory"))
        f.present = true;
    }
    if (n <= base) break;
    while (n > base && s.dir[n - 1] != '/') n--;
    if (n > base) n--;
  }
  return f;
}

void osmem__cgroup_read(const char *root, struct osmem__cgroup_limits *out) {
  if (!out) return;
  if (!root) root = "";
  int saved_errno = errno;
  s.v1.in_cgroup = s.v1.mounted = s.v1.root_is_prefix = false;
  s.v2.in_cgroup = s.v2.mounted = s.v2.root_is_prefix = false;
  read_proc_cgroup(root);
  if (s.v1.in_cgroup || s.v2.in_cgroup) read_mountinfo(root);
  struct found f1 = walk(root, &s.v1, 1);
  struct found f2 = walk(root, &s.v2, 2);
  out->max = f1.max < f2.max ? f1.max : f2.max;
  out->high = f2.high;
  if (f1.present && f2.present)
    out->version = f1.max < f2.max ? 1 : 2;
  else
    out->version = f1.present ? 1 : f2.present ? 2 : 0;
  errno = saved_errno;
}
