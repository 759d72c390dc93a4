"""The plan fields staff set: one list for the staff form and the API.

In the order both show them; the API adds the read-only ``id`` in front. A new
plan field goes here once and appears in both (its model field still needs a
migration).
"""

EDITABLE = ("name", "ram_mb", "swap_mb", "cpu_units", "cpu_limit_pct", "cpus", "processes",
            "disk_gib", "inodes", "io_weight", "disk_read_mbps", "disk_write_mbps",
            "disk_read_iops", "disk_write_iops", "connections", "interfaces", "seccomp_allow",
            "hibernation", "snapshots", "snapshot_gib", "backups_daily", "backups_weekly",
            "bandwidth_gib", "port_speed_mbit",
            "ipv4_count", "ipv6_count", "monthly_price", "over_quota", "throttled_speed_mbit",
            "templates", "active")
