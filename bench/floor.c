/* Kernel floor for "start a detached container": the fewest steps the kernel
 * needs to give busybox init the same isolation as a VE, from C.
 *
 *   floor [--tasks] ROOTFS IDMAP_BASE CGROUP_DIR...
 *
 * Times, in one process: make one cgroup per given v1 hierarchy directory
 * (memory/pids/cpu limits as a VE gets), fork a setup child that joins them,
 * unshares mount/uts/ipc/net/pid/cgroup/user namespaces (uid/gid maps written
 * by the parent), forks PID 1, which bind-mounts ROOTFS, mounts /proc,
 * pivot_roots and execs /sbin/init. The parent returns when init has exec'd
 * (close-on-exec pipe reaches EOF) and prints "<init pid> <elapsed ns>".
 * The setup child joins with "PID > cgroup.procs" (what crun and LXC do; on
 * cgroup v1 each such write takes cgroup_threadgroup_rwsem for writing, which
 * waits for an RCU grace period when the host was quiet) or, with --tasks,
 * with "0 > tasks" (moves only the calling single-threaded process, which
 * the kernel does without that lock).
 * No /dev, /sys, masking, capability or fd hygiene: those are what every
 * runtime adds on top. The caller kills init and removes the cgroups.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    _exit(1);
}

static void write_file(const char *dir, const char *name, const char *value)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return; /* a controller without this file: fine for a floor */
    if (write(fd, value, strlen(value)) < 0)
        die(path);
    close(fd);
}

/* A new v1 cpuset group starts empty and refuses tasks: copy the parent's. */
static void inherit_cpuset(const char *dir)
{
    char parent[4096], path[4200], value[256];
    const char *names[] = {"cpuset.cpus", "cpuset.mems"};
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (!slash)
        return;
    *slash = 0;
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", parent, names[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return; /* not a cpuset hierarchy */
        ssize_t n = read(fd, value, sizeof value - 1);
        close(fd);
        if (n <= 0)
            return;
        value[n] = 0;
        write_file(dir, names[i], value);
    }
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int tasks = argc > 1 && strcmp(argv[1], "--tasks") == 0;
    if (tasks) {
        argv++;
        argc--;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: floor [--tasks] ROOTFS IDMAP_BASE CGROUP_DIR...\n");
        return 2;
    }
    const char *rootfs = argv[1];
    long base = atol(argv[2]);
    int up[2], down[2], exec_pipe[2];
    char buf[64];

    long long t0 = now_ns();
    for (int i = 3; i < argc; i++) {
        if (mkdir(argv[i], 0755) < 0 && errno != EEXIST)
            die(argv[i]);
        inherit_cpuset(argv[i]);
        write_file(argv[i], "memory.limit_in_bytes", "268435456");
        write_file(argv[i], "memory.memsw.limit_in_bytes", "268435456");
        write_file(argv[i], "pids.max", "256");
        write_file(argv[i], "cpu.shares", "1024");
    }
    if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC) || pipe2(exec_pipe, O_CLOEXEC))
        die("pipe");
    pid_t setup = fork();
    if (setup < 0)
        die("fork");
    if (setup == 0) {
        snprintf(buf, sizeof buf, "%d", tasks ? 0 : getpid());
        for (int i = 3; i < argc; i++)
            write_file(argv[i], tasks ? "tasks" : "cgroup.procs", buf);
        if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID
                    | CLONE_NEWCGROUP | CLONE_NEWUSER))
            die("unshare");
        if (write(up[1], "u", 1) != 1 || read(down[0], buf, 1) != 1)
            die("sync");
        if (setresgid(0, 0, 0) || setresuid(0, 0, 0))
            die("setresuid");
        pid_t init = fork();
        if (init < 0)
            die("fork init");
        if (init == 0) {
            int null = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (null < 0)
                die("open /dev/null");
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
                die("make private");
            if (mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL) || chdir(rootfs))
                die("bind rootfs");
            if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
                die("mount proc");
            if (syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
                die("pivot_root");
            setsid();
            char *init_argv[] = {"/sbin/init", NULL};
            char *envp[] = {"PATH=/sbin:/bin:/usr/sbin:/usr/bin", NULL};
            execve(init_argv[0], init_argv, envp);
            die("exec");
        }
        snprintf(buf, sizeof buf, "%d\n", init);
        if (write(up[1], buf, strlen(buf)) < 0)
            die("report");
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    close(exec_pipe[1]);
    if (read(up[0], buf, 1) != 1)
        die("setup child died");
    char map[64], path[64];
    snprintf(map, sizeof map, "0 %ld 65536\n", base);
    snprintf(path, sizeof path, "/proc/%d", setup);
    write_file(path, "uid_map", map);
    write_file(path, "gid_map", map);
    if (write(down[1], "m", 1) != 1)
        die("sync");
    ssize_t n = read(up[0], buf, sizeof buf - 1);
    if (n <= 0)
        die("no init pid");
    buf[n] = 0;
    waitpid(setup, NULL, 0);
    /* The exec pipe is held only by init (the setup child closed its copy
     * on exit): EOF means init exec'd. */
    while (read(exec_pipe[0], path, sizeof path) > 0)
        ;
    long long t1 = now_ns();
    printf("%ld %lld\n", atol(buf), t1 - t0);
    return 0;
}
