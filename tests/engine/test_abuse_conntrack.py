"""A VE cannot fill the host's connection-tracking table (issue 14).

The VE opens one ICMP "connection" per ping process (each has its own id) to
the host of the test's own network namespace (tests/engine/hostnet.py); the
host's table, counted in that namespace only, stops at the VE's limit.
"""

from ve import Limits, VEConfig
from ve.net import conntrack

from .hostnet import HOST_V4

VE = (411, ("198.18.7.41", "fd00:7::41"))
LIMIT = 40
FLOWS = 150


def make(engine, numconn):
    veid, ips = VE
    engine.create(VEConfig(veid, f"ct{veid}.example", "busybox",
                           Limits(numconn=numconn, numproc=1024), ips=ips))
    return veid


def flood(hostnet, veid, flows=FLOWS):
    """Ping the host from ``flows`` processes at once (one conntrack entry each)."""
    script = (f"i=0; while [ $i -lt {flows} ]; do ping -c 1 -W 1 {HOST_V4} >/dev/null & "
              "i=$((i+1)); done; wait")
    hostnet.engine("r = e.exec(v['veid'], ['sh', '-c', v['script']])\nprint(r.returncode)",
                   veid=veid, script=script)


def host_entries(hostnet):
    return int(hostnet.run("cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout)


def ruleset(hostnet):
    return hostnet.run("nft", "list", "ruleset").stdout


def sample_of(hostnet, veid):
    return hostnet.engine("print(json.dumps([r for r in e.sample()['ves'] "
                          "if r['veid'] == v['veid']][0]))", veid=veid)


def test_a_conntrack_flood_stops_at_the_ves_limit(engine, hostnet):
    veid = make(engine, LIMIT)
    hostnet.engine("e.start(v['veid'])\nprint('null')", veid=veid)
    flood(hostnet, veid)
    held = host_entries(hostnet)
    assert LIMIT // 2 <= held <= LIMIT, f"{held} entries for a limit of {LIMIT}"
    row = sample_of(hostnet, veid)
    assert LIMIT // 2 <= row["conntrack"] <= LIMIT
    assert row["conntrack_refused"] >= FLOWS - LIMIT  # each refused ping is one dropped packet


def test_the_limit_changes_live_and_goes_with_the_ve(engine, hostnet):
    veid = make(engine, LIMIT)
    # The first start prepares the host once (forwarding, the "local" rule moved).
    hostnet.engine("e.start(v['veid']); e.stop(v['veid'], fast=True)\nprint('null')", veid=veid)
    before = hostnet.snapshot()
    assert conntrack.chain_name(veid, "from") in before  # kept while it is stopped
    hostnet.engine("e.start(v['veid'])\nprint('null')", veid=veid)
    assert conntrack.chain_name(veid, "from") in ruleset(hostnet)
    hostnet.engine("e.set(v['veid'], numconn=2 * v['limit'])\nprint('null')",
                   veid=veid, limit=LIMIT)
    flood(hostnet, veid)
    held = host_entries(hostnet)
    assert LIMIT < held <= 2 * LIMIT
    assert hostnet.engine("print(e.config(v['veid']).limits.numconn)", veid=veid) == 2 * LIMIT
    hostnet.engine("e.set(v['veid'], numconn=0)\nprint('null')", veid=veid)
    assert conntrack.chain_name(veid, "from") not in ruleset(hostnet)
    assert sample_of(hostnet, veid)["conntrack"] is None  # no limit: not counted
    hostnet.engine("e.set(v['veid'], numconn=v['limit'])\nprint('null')", veid=veid,
                   limit=LIMIT)
    hostnet.engine("e.stop(v['veid'], fast=True)\nprint('null')", veid=veid)
    assert hostnet.snapshot() == before  # no table, rule, link or route left
    hostnet.engine("e.set(v['veid'], numconn=0)\nprint('null')", veid=veid)  # stopped
    assert conntrack.chain_name(veid, "from") not in ruleset(hostnet)
    hostnet.engine("e.set(v['veid'], numconn=v['limit']); e.start(v['veid'])\n"
                   "e.destroy(v['veid'])\nprint('null')", veid=veid, limit=LIMIT)
    assert conntrack.chain_name(veid, "from") not in ruleset(hostnet)


def test_a_limit_kept_across_a_stop_is_checked_and_changed_at_the_next_start(engine, hostnet):
    """A stop keeps the limit's chains (ve/net/links.py): the next start with the same
    limit only checks them, and still holds the VE to it; a limit changed while the
    VE was stopped, or chains gone with a flushed ruleset, are made anew."""
    veid = make(engine, LIMIT)
    hostnet.engine("e.start(v['veid']); e.stop(v['veid'], fast=True); e.start(v['veid'])\n"
                   "print('null')", veid=veid)
    flood(hostnet, veid)
    assert LIMIT // 2 <= host_entries(hostnet) <= LIMIT
    hostnet.engine("e.stop(v['veid'], fast=True); e.set(v['veid'], numconn=2 * v['limit'])\n"
                   "e.start(v['veid'])\nprint('null')", veid=veid, limit=LIMIT)
    assert f"ct count over {2 * LIMIT}" in ruleset(hostnet)
    hostnet.engine("e.stop(v['veid'], fast=True)\nprint('null')", veid=veid)
    hostnet.run("nft", "flush", "ruleset")  # a firewall reload on the node
    hostnet.engine("e.start(v['veid'])\nprint('null')", veid=veid)
    assert f"ct count over {2 * LIMIT}" in ruleset(hostnet)
    assert conntrack.chain_name(veid, "to") in ruleset(hostnet)


def test_vectl_takes_the_limit_and_the_conf_file_keeps_it(engine):
    from .conftest import vectl
    vectl(engine, "create", 412, "--template", "busybox", "--hostname", "c.example",
          "--numconn", "5000")
    assert engine.config(412).limits.numconn == 5000
    assert 'NUMCONN="5000"' in engine.layout.conf(412).read_text()
    vectl(engine, "set", 412, "--numconn", "0")
    assert engine.config(412).limits.numconn == 0
