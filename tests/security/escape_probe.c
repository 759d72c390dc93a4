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
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
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
    fprintf(stderr, "usage: probe module|mknod|ptrace|keyctl|cgroup ...\n");
    return 2;
}
