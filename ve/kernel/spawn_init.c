/*
 * ve-spawn: start a VE's init in fresh namespaces and exec it, leaving no
 * supervisor. The C half of ve/kernel/spawn.py, which says what to do (the
 * spec: paths, lists, the seccomp program) and drives the hand-shake; this
 * program only does it, without the cost of forking a large Python process
 * twice and building the mount tree through ctypes.
 *
 * Descriptors on entry (placed by the caller's posix_spawn):
 *   3 the spec (records until EOF, the last one "Z")      4 the error pipe (close-on-exec here)
 *   5 up: lines to the caller           6 down: lines from the caller
 *   7 socket for the seccomp listener   8 the console terminal (optional)
 * Every other descriptor is closed first: nothing of the caller reaches the VE.
 *
 * Up, in order: "pid N" from the setup process (this one, or the child made in
 * a cgroup v2 group with CLONE_PARENT, which the caller then also reaps),
 * "unshared" (user namespace only; the caller writes the id maps and answers
 * "mapped"), then init's PID. Failures go to the error pipe as "stage: text";
 * a warning is framed by \x01 and \x02. EOF on the error pipe with no
 * failure means init was exec'd.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { FD_SPEC = 3, FD_ERR = 4, FD_UP = 5, FD_DOWN = 6, FD_LISTENER = 7, FD_CONSOLE = 8 };

#define NSNX (MS_NOSUID | MS_NODEV | MS_NOEXEC)
#define CLONE_INTO_CGROUP_FLAG 0x200000000ULL
#define KEYCTL_JOIN_SESSION_KEYRING 1
#define SPEC_LIMIT (16 << 20)

/* One record of the spec: a tag byte, a 32-bit little-endian length, the bytes
 * (NUL-terminated here). A pair is "first\0second" in one record. */
struct record {
    char tag;
    uint32_t len;
    char *data;
};

static struct record *records;
static size_t nrecords;
static const char *stage = "setup";

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    char text[4000];
    int n = snprintf(text, sizeof text, "%s: ", stage);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text + n, sizeof text - n, fmt, ap);
    va_end(ap);
    ssize_t ignored = write(FD_ERR, text, strlen(text));
    (void)ignored;
    _exit(strcmp(stage, "init") == 0 ? 127 : 1);
}

static void warn(const char *fmt, ...)
{
    char text[520];
    va_list ap;
    text[0] = '\x01';
    va_start(ap, fmt);
    vsnprintf(text + 1, 500, fmt, ap);
    va_end(ap);
    size_t n = strlen(text);
    text[n] = '\x02';
    ssize_t ignored = write(FD_ERR, text, n + 1);
    (void)ignored;
}

/* -- the spec ------------------------------------------------------------ */

static void read_spec(void)
{
    size_t size = 0, cap = 65536;
    char *buf = malloc(cap);
    ssize_t n;
    if (!buf)
        fail("out of memory");
    while ((n = read(FD_SPEC, buf + size, cap - size)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("reading the spec: %s", strerror(errno));
        }
        size += n;
        if (size == cap) {
            if (cap >= SPEC_LIMIT)
                fail("spec larger than %d bytes", SPEC_LIMIT);
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf)
                fail("out of memory");
        }
    }
    close(FD_SPEC);
    size_t count = 0;
    for (size_t at = 0; at + 5 <= size; count++) {
        uint32_t len;
        memcpy(&len, buf + at + 1, 4);
        at += 5 + (size_t)len;
    }
    records = calloc(count + 1, sizeof *records);
    if (!records)
        fail("out of memory");
    for (size_t at = 0; at + 5 <= size;) {
        struct record *r = &records[nrecords++];
        r->tag = buf[at];
        memcpy(&r->len, buf + at + 1, 4);
        if (at + 5 + (size_t)r->len > size)
            fail("truncated spec");
        r->data = malloc(r->len + 1);
        if (!r->data)
            fail("out of memory");
        memcpy(r->data, buf + at + 5, r->len);
        r->data[r->len] = '\0';
        at += 5 + (size_t)r->len;
    }
    free(buf);
    /* Without its end record the caller stopped half-way: a spec missing its
     * masks or seccomp program must never start a VE. */
    if (nrecords == 0 || records[nrecords - 1].tag != 'Z')
        fail("incomplete spec");
}

static const char *one(char tag)
{
    for (size_t i = 0; i < nrecords; i++)
        if (records[i].tag == tag)
            return records[i].data;
    return NULL;
}

static const struct record *next(char tag, size_t *at)
{
    for (; *at < nrecords; (*at)++)
        if (records[*at].tag == tag)
            return &records[(*at)++];
    return NULL;
}

/* The second half of a "first\0second" record. */
static const char *second(const struct record *r, uint32_t *len)
{
    size_t first = strlen(r->data);
    if (len)
        *len = first < r->len ? r->len - first - 1 : 0;
    return first < r->len ? r->data + first + 1 : "";
}

static char **strings(char tag)
{
    size_t count = 0, at = 0;
    while (next(tag, &at))
        count++;
    char **out = calloc(count + 1, sizeof *out);
    if (!out)
        fail("out of memory");
    const struct record *r;
    count = at = 0;
    while ((r = next(tag, &at)))
        out[count++] = r->data;
    return out;
}

/* -- small helpers ------------------------------------------------------- */

static void do_mount(const char *source, const char *target, const char *type,
                     unsigned long flags, const char *data)
{
    if (mount(source, target, type, flags, data) < 0)
        fail("mount %s on %s: %s", source ? source : "(none)", target, strerror(errno));
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        fail("open %s: %s", path, strerror(errno));
    ssize_t n = write(fd, text, strlen(text));
    if (n != (ssize_t)strlen(text))
        fail("write %s: %s", path, n < 0 ? strerror(errno) : "short write");
    close(fd);
}

static void write_line(int fd, const char *text)
{
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        fail("telling the caller: %s", strerror(errno));
}

static void read_line(char *line, size_t size)
{
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t got = read(FD_DOWN, line + n, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
}

static int exists(const char *path, int *is_dir)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return 0;
    if (is_dir)
        *is_dir = S_ISDIR(st.st_mode);
    return 1;
}

/* Remount a bind keeping the flags the kernel locks in a user namespace. */
static void remount_bind(const char *path, unsigned long extra)
{
    struct statvfs st;
    if (statvfs(path, &st) < 0)
        fail("statvfs %s: %s", path, strerror(errno));
    unsigned long keep = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME
                         | MS_NODIRATIME;
    unsigned long flags = (st.f_flag & keep) | ((st.f_flag & ST_RELATIME) ? MS_RELATIME : 0);
    do_mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | flags | extra, NULL);
}

/* -- the setup process ----------------------------------------------------- */

static void join_cgroups(void)
{
    size_t at = 0;
    const struct record *r;
    while ((r = next('c', &at)))
        write_file(r->data, "0");
}

static void bind_root(const char *private_dir, const char *mountpoint, int nodev)
{
    do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    do_mount(private_dir, mountpoint, NULL, MS_BIND | MS_REC, NULL);
    if (nodev)  /* device nodes in the private area must never work: only /dev's do */
        remount_bind(mountpoint, MS_NODEV);
    if (chdir(mountpoint) < 0)
        fail("chdir %s: %s", mountpoint, strerror(errno));
}

static void boot_clock_from_zero(void)
{
    struct timespec now;
    char text[64];
    clock_gettime(CLOCK_BOOTTIME, &now);
    snprintf(text, sizeof text, "boottime %lld 0\n", -(long long)now.tv_sec);
    write_file("/proc/self/timens_offsets", text);
}

static void become_ve_root(void)
{
    char line[32];
    write_line(FD_UP, "unshared\n");
    read_line(line, sizeof line);
    if (strcmp(line, "mapped") != 0)
        _exit(1);
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        fail("becoming VE root: %s", strerror(errno));
    size_t at = 0;
    const struct record *r;
    while ((r = next('v', &at))) {  /* the VE's own caps (ucounts.VE_CAPS) */
        char path[256];
        snprintf(path, sizeof path, "/proc/sys/%s", r->data);
        write_file(path, second(r, NULL));
    }
}

/* -- PID 1 until exec ------------------------------------------------------- */

static void unlock_root(const char *mount_name)
{
    /* The bind made by host root arrives locked in the VE's namespace and
     * pivot_root refuses a locked root: stack an unlocked bind on it and step
     * onto it (".." is VE_ROOT/root, so back in lands on the topmost mount). */
    do_mount(".", ".", NULL, MS_BIND, NULL);
    if (chdir("..") < 0 || chdir(mount_name) < 0)
        fail("chdir %s: %s", mount_name, strerror(errno));
}

static void bind_lxcfs(void)
{
    /* All or nothing: a bind that fails (an lxcfs that died a moment ago)
     * undoes the others and the VE keeps the kernel's files. */
    size_t at = 0, done = 0;
    const char *targets[64];
    const struct record *r;
    while ((r = next('l', &at)) && done < 64) {
        const char *target = second(r, NULL);
        if (mount(r->data, target, NULL, MS_BIND, NULL) == 0) {
            targets[done++] = target;
        } else if (errno != ENOENT) {
            while (done)
                umount2(targets[--done], MNT_DETACH);
            return;
        }
    }
}

static void make_file(const char *path, mode_t mode)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, mode);
    if (fd < 0)
        fail("create %s: %s", path, strerror(errno));
    close(fd);
}

static void mount_dev(const char *console)
{
    char target[128], source[128];
    do_mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k");
    size_t at = 0;
    const struct record *r;
    while ((r = next('D', &at))) {
        snprintf(target, sizeof target, "dev/%s", r->data);
        snprintf(source, sizeof source, "/dev/%s", r->data);
        make_file(target, 0666);
        do_mount(source, target, NULL, MS_BIND, NULL);
    }
    make_file("dev/console", 0666);  /* without a console terminal, writes go nowhere */
    do_mount(console ? console : "/dev/null", "dev/console", NULL, MS_BIND, NULL);
    const char *mark = one('K');
    if (console && mark) {  /* what an init's units can test for (systemd's console-getty) */
        snprintf(target, sizeof target, "dev/%s", mark);
        make_file(target, 0444);
    }
    at = 0;
    while ((r = next('L', &at))) {
        snprintf(target, sizeof target, "dev/%s", r->data);
        if (symlink(second(r, NULL), target) < 0)
            fail("symlink %s: %s", target, strerror(errno));
    }
    const char *dirs[] = {"dev/pts", "dev/shm", "dev/mqueue"};
    for (size_t i = 0; i < 3; i++)
        if (mkdir(dirs[i], 0755) < 0)
            fail("mkdir %s: %s", dirs[i], strerror(errno));
    do_mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620,gid=5");
    do_mount("shm", "dev/shm", "tmpfs", NSNX, "mode=1777,size=65536k");
    do_mount("mqueue", "dev/mqueue", "mqueue", NSNX, NULL);
}

static void mask(void)
{
    size_t at = 0;
    const struct record *r;
    int is_dir;
    while ((r = next('M', &at))) {
        if (!exists(r->data, &is_dir))
            continue;
        if (is_dir)
            do_mount("tmpfs", r->data, "tmpfs", NSNX | MS_RDONLY, "size=0");
        else
            do_mount("dev/null", r->data, NULL, MS_BIND, NULL);
    }
    at = 0;
    while ((r = next('R', &at))) {
        if (!exists(r->data, NULL))
            continue;
        do_mount(r->data, r->data, NULL, MS_BIND | MS_REC, NULL);
        do_mount(NULL, r->data, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | NSNX, NULL);
    }
}

/* A boot id of this VE's own, new at every start: journald tells its boots apart. */
static void bind_boot_id(void)
{
    unsigned char raw[16];
    char text[40];
    if (getrandom(raw, sizeof raw, 0) != sizeof raw)
        fail("getrandom: %s", strerror(errno));
    raw[6] = (raw[6] & 0x0F) | 0x40;  /* a random (version 4) UUID */
    raw[8] = (raw[8] & 0x3F) | 0x80;
    char *p = text;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        p += sprintf(p, "%02x", raw[i]);
    }
    *p++ = '\n';
    *p = '\0';
    const char *source = "dev/.boot_id", *target = "proc/sys/kernel/random/boot_id";
    int fd = open(source, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        fail("write %s: %s", source, strerror(errno));
    close(fd);
    do_mount(source, target, NULL, MS_BIND, NULL);
    do_mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | NSNX, NULL);
    unlink(source);  /* the bind keeps the file; /dev shows no trace of it */
}

static void pivot(void)
{
    /* pivot_root(".", ".") stacks the old root under the new one; detaching
     * it leaves the VE no path back to the host's tree. */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        fail("pivot_root: %s", strerror(errno));
    if (umount2(".", MNT_DETACH) < 0)
        fail("detaching the host's root: %s", strerror(errno));
    if (chdir("/") < 0)
        fail("chdir /: %s", strerror(errno));
}

/* openat2 below the VE's root: ".." and absolute symlinks stay inside, /proc
 * magic links are refused (what ve/kernel/vefiles.py does for the helpers). */
static int open_in_root(const char *path, uint64_t flags)
{
    struct open_how how = {.flags = flags | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    while (*path == '/')
        path++;
    return syscall(SYS_openat2, AT_FDCWD, *path ? path : ".", &how, sizeof how);
}

/* Replace the VE's file ``path`` by a new one holding ``data``, by rename; no
 * fsync (these files are rewritten at every start). -1 and errno on failure. */
static int replace_file(const char *path, const char *data, uint32_t len)
{
    char parent[4096], temp[300];
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (!*name || !strcmp(name, ".") || !strcmp(name, "..") || strlen(name) > 255) {
        errno = EINVAL;
        return -1;
    }
    size_t plen = slash ? (size_t)(slash - path) : 0;
    if (plen >= sizeof parent) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(parent, path, plen);
    parent[plen] = '\0';
    int dir = open_in_root(plen ? parent : "/", O_PATH | O_DIRECTORY);
    if (dir < 0)
        return -1;
    unsigned int salt;
    if (getrandom(&salt, sizeof salt, 0) != sizeof salt)
        salt = (unsigned int)getpid();
    snprintf(temp, sizeof temp, ".%.250s.ve-%08x", name, salt);
    int fd = openat(dir, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int saved = 0;
    if (fd < 0) {
        saved = errno;
        close(dir);
        errno = saved;
        return -1;
    }
    for (uint32_t at = 0; at < len;) {
        ssize_t n = write(fd, data + at, len - at);
        if (n < 0) {
            saved = errno;
            break;
        }
        at += n;
    }
    if (!saved && fchmod(fd, 0644) < 0)
        saved = errno;
    close(fd);
    if (!saved && renameat(dir, temp, dir, name) < 0)
        saved = errno;
    if (saved)
        unlinkat(dir, temp, 0);
    close(dir);
    errno = saved;
    return saved ? -1 : 0;
}

static void write_ve_files(void)
{
    size_t at = 0;
    const struct record *r;
    while ((r = next('f', &at))) {
        uint32_t len;
        const char *data = second(r, &len);
        if (replace_file(r->data, data, len) < 0)  /* the VE's doing: a warning */
            warn("cannot write %s: %s", r->data, strerror(errno));
    }
}

static void loopback_up(void)
{
    struct ifreq ifr = {0};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
        fail("lo flags: %s", strerror(errno));
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
        fail("lo up: %s", strerror(errno));
    close(fd);
}

static void drop_bounding(void)
{
    int highest = atoi(one('k') ? one('k') : "40");
    size_t at = 0;
    const struct record *r;
    while ((r = next('B', &at))) {
        int cap = atoi(r->data);
        if (cap <= highest && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            fail("dropping capability %d: %s", cap, strerror(errno));
    }
}

static void stdio_on(int console)
{
    int target = console >= 0 ? console : open("/dev/null", O_RDWR);
    if (target < 0)
        fail("open /dev/null: %s", strerror(errno));
    for (int fd = 0; fd < 3; fd++)
        if (dup2(target, fd) < 0)
            fail("dup2: %s", strerror(errno));
    if (target > 2)
        close(target);
}

static void send_fd(int fd)
{
    char data[2] = {'f', 'd'};
    struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    if (sendmsg(FD_LISTENER, &msg, 0) < 0)
        fail("handing over the seccomp listener: %s", strerror(errno));
}

/* The last step before exec: from here on the deny list holds. */
static void install_seccomp(int notify)
{
    size_t at = 0;
    const struct record *r = next('s', &at);
    if (!r || r->len % sizeof(struct sock_filter))
        fail("no seccomp program");
    struct sock_fprog prog = {.len = r->len / sizeof(struct sock_filter),
                              .filter = (struct sock_filter *)r->data};
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                      notify ? SECCOMP_FILTER_FLAG_NEW_LISTENER : 0, &prog);
    if (fd < 0)
        fail("seccomp filter: %s", strerror(errno));
    if (notify) {
        send_fd((int)fd);
        close((int)fd);
    }
}

static void run_init(int console_fd)
{
    stage = "init";
    close(FD_UP);
    close(FD_DOWN);
    const char *mountpoint = one('m'), *slash = strrchr(mountpoint, '/');
    const char *console = one('t');
    unlock_root(slash ? slash + 1 : mountpoint);
    do_mount("proc", "proc", "proc", NSNX, NULL);
    do_mount("sysfs", "sys", "sysfs", NSNX | MS_RDONLY, NULL);
    if (one('g'))  /* the VE's own cgroup2 tree (delegated to VE root) for systemd */
        do_mount("cgroup2", "sys/fs/cgroup", "cgroup2", NSNX, NULL);
    bind_lxcfs();
    mount_dev(console);
    mask();
    bind_boot_id();
    pivot();
    const char *hostname = one('h') ? one('h') : "";
    if (sethostname(hostname, strlen(hostname)) < 0)
        fail("sethostname: %s", strerror(errno));
    write_ve_files();
    loopback_up();
    /* A forked process shares its parent's session keyring: a new one, so VE
     * processes never possess the host caller's keys. */
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0)
        fail("keyctl join: %s", strerror(errno));
    drop_bounding();
    stdio_on(console_fd);
    install_seccomp(one('n') != NULL);
    char **argv = strings('a'), **env = strings('e');
    if (!argv[0])
        fail("no init to run");
    /* Only stdio and the close-on-exec error pipe are left. */
    if (syscall(SYS_close_range, 3, FD_ERR - 1, 0) < 0
        || syscall(SYS_close_range, FD_ERR + 1, ~0U, 0) < 0)
        fail("close_range: %s", strerror(errno));
    execve(argv[0], argv, env);
    fail("exec %s: %s", argv[0], strerror(errno));
}

/* SIG_DFL for ``sig`` through the kernel itself: glibc refuses the two real-time
 * signals it keeps for itself (32, 33), which a caller may have left ignored. */
static void reset_signal(int sig)
{
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } action = {0};  /* the kernel's struct sigaction: SIG_DFL, no flags, empty mask */
    syscall(SYS_rt_sigaction, sig, &action, NULL, sizeof action.mask);
}

struct clone_args_v2 {  /* struct clone_args up to .cgroup (kernel 5.7) */
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        set_tid, set_tid_size, cgroup;
};

/* Become the setup process: this one, or on a cgroup v2 host a child born in
 * the VE's group (moving there would wait an RCU grace period), made a child
 * of our caller (CLONE_PARENT) so that the caller reaps it. The setup process
 * announces itself: a launcher that wrote the line after clone3 returned could
 * come after the child's own "unshared". */
static void become_setup_process(void)
{
    const char *group = one('G');
    char line[32];
    if (group) {
        int dir = open(group, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
            fail("open %s: %s", group, strerror(errno));
        struct clone_args_v2 args = {.flags = CLONE_INTO_CGROUP_FLAG | CLONE_PARENT,
                                     .cgroup = (uint64_t)dir};
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid < 0)
            fail("clone3 into %s: %s", group, strerror(errno));
        if (pid > 0)
            _exit(0);
        close(dir);
    }
    snprintf(line, sizeof line, "pid %d\n", getpid());
    write_line(FD_UP, line);
}

int main(void)
{
    /* Nothing of the caller's but our descriptors may reach the VE. */
    syscall(SYS_close_range, FD_CONSOLE + 1, ~0U, 0);
    if (fcntl(FD_ERR, F_SETFD, FD_CLOEXEC) < 0)
        _exit(1);
    int console_fd = fcntl(FD_CONSOLE, F_GETFD) >= 0 ? FD_CONSOLE : -1;
    /* Init starts as from a fresh boot: no signal blocked or ignored (a Python
     * caller ignores SIGPIPE, which an exec would otherwise pass on). */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig <= 64; sig++)
        reset_signal(sig);
    read_spec();
    become_setup_process();
    if (setsid() < 0)
        fail("setsid: %s", strerror(errno));
    join_cgroups();
    if (unshare(CLONE_NEWNS) < 0)
        fail("unshare mount namespace: %s", strerror(errno));
    const char *idmap = one('u');
    bind_root(one('p'), one('m'), idmap != NULL);
    int flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID
                | CLONE_NEWCGROUP | CLONE_NEWTIME | (idmap ? CLONE_NEWUSER : 0);
    if (unshare(flags) < 0)
        fail("unshare: %s", strerror(errno));
    /* Still host root's /proc/self: after setresuid it is no longer ours to write. */
    boot_clock_from_zero();
    if (idmap)
        become_ve_root();
    pid_t pid = fork();
    if (pid < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0)
        run_init(console_fd);
    char line[32];
    snprintf(line, sizeof line, "%d\n", pid);
    write_line(FD_UP, line);
    return 0;
}
