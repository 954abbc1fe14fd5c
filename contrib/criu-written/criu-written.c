// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

/*
 * criu-written.so: lets CRIU's memory tracking (--track-mem with a parent image)
 * work on kernels without soft-dirty bits (CONFIG_MEM_SOFT_DIRTY off), by reading
 * the kernel's userfaultfd write-protect bits instead. Preloaded into CRIU
 * (LD_PRELOAD) by io.rrc.v1's Checkpointer only; see docs/CHECKPOINT.md.
 *
 * io.rrc.v1 registers the container's anonymous memory with a userfaultfd in
 * asynchronous write-protect mode and write-protects it right after every dump
 * (runtime/memtrack). From then on the kernel reports, through the PAGEMAP_SCAN
 * ioctl, every page written since (category PAGE_IS_WRITTEN). CRIU 4.2 reads the
 * soft-dirty category through that same ioctl. This library:
 *
 *   - ioctl(PAGEMAP_SCAN) asking for PAGE_IS_SOFT_DIRTY: also asks for
 *     PAGE_IS_WRITTEN, PAGE_IS_WPALLOWED and PAGE_IS_PRESENT, and reports a
 *     page clean only if it is present, in a write-tracked mapping, and not
 *     written since it was protected. Everything else is dirty: a page nobody
 *     tracks, and a swapped-out page or a uffd-wp marker (what a zapped page
 *     of a tracked file mapping leaves, reported as swapped and not written);
 *   - read() of 8 bytes from a pagemap file, once: CRIU's start-up probe for
 *     soft-dirty support (kerndat_get_dirty_track) sees the bit it looks for,
 *     so --track-mem is accepted;
 *   - open(), rename() and unlink() of CRIU's kernel-feature cache
 *     (/run/criu.kdat and its .tmp): with RRC_KDAT_CACHE=FILE (a file on a
 *     tmpfs: CRIU keeps no cache elsewhere, so that none outlives a reboot)
 *     they act on FILE instead, a cache of this library's CRIU runs only;
 *     without it the open is refused. Either way this CRIU neither loads a
 *     cache that says "no dirty tracking" nor leaves one saying "dirty
 *     tracking works" for CRIU runs without this library. The cache spares
 *     each dump CRIU's kernel probing (tens of milliseconds, iptables run
 *     included), which with prepared dumps sets how soon the next checkpoint
 *     can start;
 *   - with RRC_FREEZE_NOTIFY_FD=N (N: the swrk RPC socket CRIU was started
 *     with), the first read() of the freezer state (freezer.state or
 *     cgroup.freeze, opened read-write) is preceded by an RPC notification
 *     "rrc-freeze" on that socket, and waits for its answer: io.rrc.v1 freezes
 *     the container then, right before CRIU seizes the tasks, instead of at
 *     "pre-dump", which CRIU sends some of its set-up earlier (cgroup, vDSO
 *     and CPU parsing; docs/CHECKPOINT.md). A failed or
 *     refused notification fails the read, so CRIU aborts the dump rather
 *     than freeze the cgroup itself.
 *
 * Everything else passes through unchanged. CRIU then writes the pages not
 * written since the parent dump as holes "in the parent image" and checks that
 * the parent holds them.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

struct rrc_page_region {
	uint64_t start, end, categories;
};

struct rrc_pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};

#define RRC_PAGEMAP_SCAN _IOWR('f', 16, struct rrc_pm_scan_arg)
#define RRC_PAGE_IS_WPALLOWED (1ULL << 0)
#define RRC_PAGE_IS_WRITTEN (1ULL << 1)
#define RRC_PAGE_IS_PRESENT (1ULL << 3)
#define RRC_PAGE_IS_SOFT_DIRTY (1ULL << 7)
#define RRC_PME_PRESENT (1ULL << 63)
#define RRC_PME_SOFT_DIRTY (1ULL << 55)

static int probe_answered;

/*
 * The freeze notification: notify_fd is our duplicate of CRIU's RPC socket
 * (CRIU moves its own copy to a service fd), freezer_fd the freezer file
 * CRIU opened, freeze_sent whether the notification went out (once).
 */
static int notify_fd = -1, freezer_fd = -1, freeze_sent;

__attribute__((constructor)) static void rrc_init(void)
{
	const char *v = getenv("RRC_FREEZE_NOTIFY_FD");
	char *end;
	long fd;

	if (!v || !*v)
		return;
	fd = strtol(v, &end, 10);
	if (*end || fd < 0 || fd > 1023)
		return;
	notify_fd = fcntl((int)fd, F_DUPFD_CLOEXEC, 3);
}

/*
 * notify_freeze sends CRIU's own notification message, a criu_resp
 * {type: NOTIFY, success: true, notify: {script: "rrc-freeze"}}, and accepts
 * only the answer io.rrc.v1 sends for success, criu_req {type: NOTIFY,
 * notify_success: true}, byte for byte. It returns 0 on success.
 */
static int notify_freeze(void)
{
	static const unsigned char msg[] = { 0x08, 0x06, 0x10, 0x01, 0x2a, 0x0c, 0x0a, 0x0a,
					      'r', 'r', 'c', '-', 'f', 'r', 'e', 'e', 'z', 'e' };
	static const unsigned char ok[] = { 0x08, 0x06, 0x18, 0x01 };
	unsigned char ans[64];
	ssize_t n;

	if (send(notify_fd, msg, sizeof(msg), MSG_NOSIGNAL) != (ssize_t)sizeof(msg))
		return -1;
	do
		n = recv(notify_fd, ans, sizeof(ans), 0);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(ok) || memcmp(ans, ok, sizeof(ok)) != 0) {
		errno = EIO;
		return -1;
	}
	return 0;
}

int ioctl(int fd, unsigned long req, ...)
{
	static int (*real_ioctl)(int, unsigned long, ...);
	struct rrc_pm_scan_arg *a;
	struct rrc_page_region *r;
	uint64_t asked;
	va_list ap;
	void *arg;
	int n, i;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!real_ioctl)
		real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
	a = arg;
	if (req != RRC_PAGEMAP_SCAN || !a || !(a->return_mask & RRC_PAGE_IS_SOFT_DIRTY))
		return real_ioctl(fd, req, arg);

	asked = a->return_mask;
	a->return_mask |= RRC_PAGE_IS_WRITTEN | RRC_PAGE_IS_WPALLOWED | RRC_PAGE_IS_PRESENT;
	n = real_ioctl(fd, req, arg);
	a->return_mask = asked;
	if (n <= 0)
		return n;
	r = (struct rrc_page_region *)(uintptr_t)a->vec;
	for (i = 0; i < n; i++) {
		uint64_t c = r[i].categories;
		if ((c & RRC_PAGE_IS_WRITTEN) || !(c & RRC_PAGE_IS_WPALLOWED) || !(c & RRC_PAGE_IS_PRESENT))
			c |= RRC_PAGE_IS_SOFT_DIRTY;
		r[i].categories = c & asked;
	}
	return n;
}

/* ends reports whether path ends with suffix. */
static int ends(const char *path, const char *suffix)
{
	size_t p = strlen(path), s = strlen(suffix);
	return p >= s && strcmp(path + p - s, suffix) == 0;
}

ssize_t read(int fd, void *buf, size_t count)
{
	static ssize_t (*real_read)(int, void *, size_t);
	char link[64], target[256];
	ssize_t n, k;

	if (!real_read)
		real_read = (ssize_t(*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
	if (fd == freezer_fd && !freeze_sent) {
		freeze_sent = 1;
		if (notify_freeze() < 0)
			return -1;
	}
	n = real_read(fd, buf, count);
	if (probe_answered || count != 8 || n != 8)
		return n;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	k = readlink(link, target, sizeof(target) - 1);
	if (k <= 0)
		return n;
	target[k] = '\0';
	if (ends(target, "/pagemap")) {
		uint64_t pme;
		memcpy(&pme, buf, sizeof(pme));
		if (pme & RRC_PME_PRESENT)
			pme |= RRC_PME_SOFT_DIRTY;
		memcpy(buf, &pme, sizeof(pme));
		probe_answered = 1;
	}
	return n;
}

/*
 * kdat_path returns where CRIU's access to path goes: path itself unless it is
 * the kernel-feature cache or its .tmp; then RRC_KDAT_CACHE (and .tmp), or
 * NULL (refused) without it. buf holds the result for the .tmp.
 */
static const char *kdat_path(const char *path, char *buf, size_t len)
{
	const char *cache;
	int tmp;

	if (!path)
		return path;
	tmp = ends(path, "/criu.kdat.tmp");
	if (!tmp && !ends(path, "/criu.kdat"))
		return path;
	cache = getenv("RRC_KDAT_CACHE");
	if (!cache || *cache != '/')
		return NULL;
	if (!tmp)
		return cache;
	if ((size_t)snprintf(buf, len, "%s.tmp", cache) >= len)
		return NULL;
	return buf;
}

/* freezer reports whether path, opened with flags, is where CRIU freezes. */
static int freezer(const char *path, int flags)
{
	return notify_fd >= 0 && !freeze_sent && path && (flags & O_ACCMODE) == O_RDWR &&
	       (ends(path, "/freezer.state") || ends(path, "/cgroup.freeze"));
}

#define RRC_OPEN(name)                                                             \
	int name(const char *path, int flags, ...)                                 \
	{                                                                          \
		static int (*real)(const char *, int, ...);                        \
		char buf[4096];                                                    \
		mode_t mode = 0;                                                   \
		va_list ap;                                                        \
		int fd;                                                            \
		if (flags & (O_CREAT | O_TMPFILE)) {                               \
			va_start(ap, flags);                                       \
			mode = va_arg(ap, mode_t);                                 \
			va_end(ap);                                                \
		}                                                                  \
		path = kdat_path(path, buf, sizeof(buf));                          \
		if (!path) {                                                       \
			errno = ENOENT;                                            \
			return -1;                                                 \
		}                                                                  \
		if (!real)                                                         \
			real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #name); \
		fd = real(path, flags, mode);                                      \
		if (fd >= 0 && freezer(path, flags))                               \
			freezer_fd = fd;                                           \
		return fd;                                                         \
	}

RRC_OPEN(open)
RRC_OPEN(open64)

int rename(const char *from, const char *to)
{
	static int (*real)(const char *, const char *);
	char fbuf[4096], tbuf[4096];

	if (!real)
		real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
	from = kdat_path(from, fbuf, sizeof(fbuf));
	to = kdat_path(to, tbuf, sizeof(tbuf));
	if (!from || !to) {
		errno = ENOENT;
		return -1;
	}
	return real(from, to);
}

int unlink(const char *path)
{
	static int (*real)(const char *);
	char buf[4096];

	if (!real)
		real = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
	path = kdat_path(path, buf, sizeof(buf));
	if (!path) {
		errno = ENOENT;
		return -1;
	}
	return real(path);
}
