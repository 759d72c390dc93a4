"""What a VE's mount tree holds besides its own files: the policy ``spawn_init.c`` builds.

The VE's init (PID 1 of its new PID namespace, root of its user namespace)
builds the tree before it execs, in its own mount namespace, then pivots into
it: the VE's root (a bind of its private area, nodev unless privileged), proc,
read-only sysfs, its own cgroup2 tree for a systemd VE, lxcfs's files over
/proc's (``lxcfs_mounts.start_binds``), a tmpfs /dev with the host's harmless
device nodes bound in, devpts/shm/mqueue, the masks below, and a boot id of its
own over /proc/sys/kernel/random/boot_id. Every mount lives only in the VE's
mount namespace: when its last process exits, the kernel drops them all, so the
host's mount table never changes.
"""

# Host device nodes a VE gets (bind-mounted: a user namespace cannot mknod).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
             "ptmx": "pts/ptmx", "core": "/proc/kcore"}

# In /dev when /dev/console is a terminal (not /dev/null): a getty may run there.
CONSOLE_MARK = ".console-tty"

# Paths that leak host information or control: hidden (masked) or read-only,
# the same lists runc and crun use.
MASKED = ("proc/acpi", "proc/kcore", "proc/keys", "proc/latency_stats",
          "proc/timer_list", "proc/timer_stats", "proc/sched_debug",
          "proc/scsi", "sys/firmware", "sys/devices/virtual/powercap",
          "sys/kernel/vmcoreinfo")
READ_ONLY = ("proc/asound", "proc/bus", "proc/fs", "proc/irq", "proc/sys",
             "proc/sysrq-trigger")
