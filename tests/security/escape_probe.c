/*
 * escape_probe: tries one container escape per subcommand, from inside a VE.
 *
 * Built statically at test time (the busybox template has no libc) and copied
 * into the VE through `vectl exec`. Every attack prints one line per attempt,
 * "blocked <what>: <error> (errno N)" or "SUCCEEDED <what>", and exits
 * 0 when every attempt was blocked, 1 when one succeeded (a security hole),
 * 2 on bad usage. Raw syscalls keep it free of libkeyutils and friends.
 *
 *   probe module                  init_module and finit_module
 *   probe mknod PATH MAJOR MINOR  create a block device node, then mount it
 *   probe ptrace PID              PTRACE_ATTACH to a (host) PID number
 *   probe keyctl SERIAL           read/describe a key and the session keyring
 *   probe cgroup TYPE OPTS DIR    mount a cgroup fs and join its root group,
 *                                 then stay alive for the host to inspect
 *                                 (mounting is allowed: the host judges)
 *   probe sys ABI NR[:ARG...]...  raw system calls on ABI 64 (syscall), 32
 *                                 (int 0x80, the i386 entry) or x32 (NR with
 *                                 bit 30); one line "call NR: errno E" each
 *                                 (E 0: it returned >= 0), always exits 0
 *   probe handle HEX              open_by_handle_at(/, FILEID_INO32_GEN handle
 *                                 HEX) and list the directory it opens (Shocker)
 *   probe shm KEY                 attach a System V shared memory segment by key
 *   probe abstract NAME           connect to the abstract unix socket @NAME
 *   probe hog MIB                 allocate and touch MIB MiB, then say "survived"
 *   probe exewatch SECONDS        watch /proc for new processes; open each one's
 *                                 /proc/PID/exe and, if it is not a file of the
 *                                 VE's root filesystem, reopen it for writing
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEYCTL_GET_KEYRING_ID 0
#define KEYCTL_DESCRIBE 6
#define KEYCTL_READ 11
#define KEY_SPEC_SESSION_KEYRING -3

static int holes;

/* Report the outcome of one attempt: rc < 0 means it was blocked. */
static void outcome(const char *what, long rc)
{
    if (rc < 0) {
        int err = errno;
        printf("blocked %s: %s (errno %d)\n", what, strerror(err), err);
    } else {
        printf("SUCCEEDED %s (rc %ld)\n", what, rc);
        holes++;
    }
    fflush(stdout);
}

static int attack_module(void)
{
    static const char image[] = "\177ELF";  /* garbage: the check comes first */
    outcome("init_module", syscall(SYS_init_module, image, sizeof image, ""));
    outcome("finit_module", syscall(SYS_finit_module, 0, "", 0));
    return holes ? 1 : 0;
}

static int attack_mknod(const char *path, unsigned major_nr, unsigned minor_nr)
{
    long rc = mknod(path, S_IFBLK | 0600, makedev(major_nr, minor_nr));
    outcome("mknod", rc);
    if (rc == 0) {
        int fd = open(path, O_RDONLY);
        outcome("open", fd);
        if (fd >= 0)
            close(fd);
        mkdir("/probe-mnt", 0700);
        outcome("mount", mount(path, "/probe-mnt", "ext4", MS_RDONLY, NULL));
        umount2("/probe-mnt", MNT_DETACH);
        unlink(path);
    }
    return holes ? 1 : 0;
}

static int attack_ptrace(pid_t pid)
{
    long rc = ptrace(PTRACE_ATTACH, pid, NULL, NULL);
    outcome("ptrace attach", rc);
    if (rc == 0) {
        waitpid(pid, NULL, __WALL);
        ptrace(PTRACE_DETACH, pid, NULL, NULL);
    }
    return holes ? 1 : 0;
}

/* Read a key or keyring; a keyring reads as an array of serials. */
static long key_read(long serial, char *buf, size_t len)
{
    memset(buf, 0, len);
    return syscall(SYS_keyctl, KEYCTL_READ, serial, buf, len);
}

static int attack_keyctl(long serial)
{
    char buf[4096];
    long rc;

    outcome("keyctl read host key", key_read(serial, buf, sizeof buf));
    rc = syscall(SYS_keyctl, KEYCTL_DESCRIBE, serial, buf, sizeof buf - 1);
    outcome("keyctl describe host key", rc);

    rc = key_read(KEY_SPEC_SESSION_KEYRING, buf, sizeof buf);
    if (rc < 0) {
        outcome("keyctl read session keyring", rc);
    } else {
        int32_t *ids = (int32_t *)buf;
        long count = (rc < (long)sizeof buf ? rc : (long)sizeof buf) / 4;
        int found = 0;
        for (long i = 0; i < count; i++)
            found |= ids[i] == serial;
        printf("session keyring %ld holds %ld key(s)\n",
               syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), count);
        if (found) {
            errno = 0;
            outcome("host key linked in the session keyring", 0);
        } else {
            errno = ENOENT;
            outcome("host key linked in the session keyring", -1);
        }
    }
    return holes ? 1 : 0;
}

static int attack_cgroup(const char *type, const char *opts, const char *dir)
{
    char path[4096], pid[32];
    long rc;
    int fd;

    mkdir(dir, 0755);
    /* A cgroup namespace lets VE root mount cgroupfs: its root is the VE's
       own group. The hole would be a write that moves the process out of
       that group, which only the host can see in /proc/<pid>/cgroup. */
    rc = mount("cgroup", dir, type, 0, *opts ? opts : NULL);
    if (rc < 0) {
        outcome("mount", rc);
    } else {
        printf("mounted %s on %s\n", type, dir);
        snprintf(path, sizeof path, "%s/cgroup.procs", dir);
        snprintf(pid, sizeof pid, "%d", getpid());
        fd = open(path, O_WRONLY);
        rc = fd < 0 ? -1 : write(fd, pid, strlen(pid));
        if (rc < 0)
            outcome("write cgroup.procs", -1);
        else
            printf("wrote cgroup.procs (the host checks where it went)\n");
        if (fd >= 0)
            close(fd);
    }
    printf("ready\n");
    fflush(stdout);
    sleep(60);  /* killed by the test once it has looked */
    return holes ? 1 : 0;
}

/* The i386 entry from a 64-bit process (int 0x80, arguments in ebx, ecx, edx,
   esi, edi): the kernel returns -errno in eax. */
static long sys32(long nr, long a, long b, long c, long d, long e)
{
    long ret;
    asm volatile("int $0x80"
                 : "=a"(ret)
                 : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                 : "memory", "r8", "r9", "r10", "r11", "cc");
    return ret;
}

static int attack_sys(const char *abi, int count, char **specs)
{
    for (int i = 0; i < count; i++) {
        long a[7] = {0};
        char *p = specs[i];
        for (int j = 0; j < 7 && p && *p; j++) {
            a[j] = strtol(p, &p, 0);
            if (*p == ':')
                p++;
        }
        long rc;
        int err = 0;
        if (!strcmp(abi, "32")) {
            rc = sys32(a[0], a[1], a[2], a[3], a[4], 0);
            err = rc < 0 && rc > -4096 ? (int)-rc : 0;
        } else {
            long nr = !strcmp(abi, "x32") ? (a[0] | 0x40000000L) : a[0];
            rc = syscall(nr, a[1], a[2], a[3], a[4], a[5], a[6]);
            err = rc < 0 ? errno : 0;
        }
        printf("call %ld: errno %d\n", a[0], err);
    }
    fflush(stdout);
    return 0;
}

static int attack_handle(const char *hex)
{
    struct { unsigned int bytes; int type; unsigned char data[128]; } h;
    size_t n = strlen(hex) / 2;
    if (n > sizeof h.data)
        return 2;
    for (size_t i = 0; i < n; i++)
        sscanf(hex + 2 * i, "%2hhx", &h.data[i]);
    h.bytes = n;
    h.type = 1;  /* FILEID_INO32_GEN */
    int root = open("/", O_RDONLY | O_DIRECTORY);
    long fd = syscall(SYS_open_by_handle_at, root, &h, O_RDONLY | O_DIRECTORY);
    outcome("open_by_handle_at", fd);
    if (fd >= 0) {
        DIR *dir = fdopendir(fd);
        struct dirent *d;
        while (dir && (d = readdir(dir)))
            printf("entry %s\n", d->d_name);
    }
    return holes ? 1 : 0;
}

static int attack_shm(long key)
{
    int id = shmget((key_t)key, 0, 0);
    outcome("shmget host segment", id);
    if (id >= 0) {
        char *p = shmat(id, NULL, SHM_RDONLY);
        if (p != (void *)-1)
            printf("read %.40s\n", p);
    }
    return holes ? 1 : 0;
}

static int attack_abstract(const char *name)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    if (n + 1 > sizeof a.sun_path)
        return 2;
    memcpy(a.sun_path + 1, name, n);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    outcome("connect to the host's abstract socket",
            connect(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n));
    return holes ? 1 : 0;
}

static int attack_hog(long mib)
{
    for (long i = 0; i < mib; i++) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            outcome("allocate", -1);
            return 0;
        }
        memset(p, 1, 1 << 20);
    }
    printf("survived %ld MiB\n", mib);
    return 1;
}

static int attack_exewatch(long seconds)
{
    static char seen[1 << 22];
    struct stat root, exe;
    long count = 0, reached = 0;
    time_t end = time(NULL) + seconds;
    stat("/", &root);
    seen[getpid()] = 1;
    while (time(NULL) < end) {
        DIR *proc = opendir("/proc");
        struct dirent *d;
        while (proc && (d = readdir(proc))) {
            long pid = strtol(d->d_name, NULL, 10);
            if (pid <= 0 || pid >= (long)sizeof seen || seen[pid])
                continue;
            seen[pid] = 1;
            count++;
            char path[64];
            snprintf(path, sizeof path, "/proc/%ld/exe", pid);
            int fd = open(path, O_RDONLY);
            if (fd < 0 || fstat(fd, &exe) < 0 || exe.st_dev == root.st_dev) {
                if (fd >= 0)
                    close(fd);
                continue;
            }
            reached++;
            printf("reached a host binary through %s\n", path);
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            for (int i = 0; i < 200; i++) {  /* ETXTBSY while it runs */
                int w = open(path, O_WRONLY);
                if (w >= 0 || errno != ETXTBSY) {
                    outcome("open the host binary for writing", w);
                    if (w >= 0)
                        close(w);
                    break;
                }
                usleep(5000);
            }
            close(fd);
        }
        if (proc)
            closedir(proc);
    }
    printf("seen %ld processes, reached %ld host binaries\ndone\n", count, reached);
    return holes ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "module") && argc == 2)
        return attack_module();
    if (!strcmp(cmd, "mknod") && argc == 5)
        return attack_mknod(argv[2], strtoul(argv[3], NULL, 0), strtoul(argv[4], NULL, 0));
    if (!strcmp(cmd, "ptrace") && argc == 3)
        return attack_ptrace(atoi(argv[2]));
    if (!strcmp(cmd, "keyctl") && argc == 3)
        return attack_keyctl(strtol(argv[2], NULL, 0));
    if (!strcmp(cmd, "cgroup") && argc == 5)
        return attack_cgroup(argv[2], argv[3], argv[4]);
    if (!strcmp(cmd, "sys") && argc >= 3)
        return attack_sys(argv[2], argc - 3, argv + 3);
    if (!strcmp(cmd, "handle") && argc == 3)
        return attack_handle(argv[2]);
    if (!strcmp(cmd, "shm") && argc == 3)
        return attack_shm(strtol(argv[2], NULL, 0));
    if (!strcmp(cmd, "abstract") && argc == 3)
        return attack_abstract(argv[2]);
    if (!strcmp(cmd, "exewatch") && argc == 3)
        return attack_exewatch(strtol(argv[2], NULL, 0));
    if (!strcmp(cmd, "hog") && argc == 3)
        return attack_hog(strtol(argv[2], NULL, 0));
    fprintf(stderr, "usage: probe module|mknod|ptrace|keyctl|cgroup|sys|handle|shm|abstract|hog|exewatch ...\n");
    return 2;
}
