#!/bin/sh
# Configure pmcd for the llmd-bench PCP node agent (docker/pcp-node.Dockerfile): enable the nvidia PMDA
# the way its own Install script does, without a running pmcd.
#   1. pmcd.conf: the PMDA's line goes with the other agents, BEFORE the [access] section (after it pmcd
#      expects only allow/disallow statements and refuses to start).
#   2. PMNS: the PMDA's names (its pmns file, NVML: replaced by its domain from domain.h) added to the root
#      namespace with pmnsadd, as pmdaproc.sh's pmdaInstall does; otherwise nvidia.* is unknown to clients.
#   3. its help text compiled with newhelp, also as pmdaInstall does.
# Idempotent. Paths are parameters so the tests can run it on copies:
#   pcp-node-setup.sh [PMCD_CONF [PMNS_DIR]]
#   defaults /etc/pcp/pmcd/pmcd.conf and /var/lib/pcp/pmns; PCP_NVIDIA_PMDA_DIR (default
#   /var/lib/pcp/pmdas/nvidia) is where the PMDA lives.
set -eu
conf=${1:-/etc/pcp/pmcd/pmcd.conf}
pmns_dir=${2:-/var/lib/pcp/pmns}
pmda=${PCP_NVIDIA_PMDA_DIR:-/var/lib/pcp/pmdas/nvidia}
bin=/usr/lib/pcp/bin

domain=$(sed -n 's/^#define[ 	]*NVML[ 	]*\([0-9][0-9]*\).*/\1/p' "$pmda/domain.h")
[ -n "$domain" ] || { echo "pcp-node-setup: no NVML domain in $pmda/domain.h" >&2; exit 1; }
[ -f "$pmda/pmda_nvidia.so" ] || { echo "pcp-node-setup: $pmda/pmda_nvidia.so is missing" >&2; exit 1; }

# 1. pmcd.conf
if ! grep -q '^nvidia[ 	]' "$conf"; then
  line="nvidia	$domain	dso	nvidia_init	$pmda/pmda_nvidia.so"
  awk -v line="$line" '
    !done && /^\[access\]/ { print line; print ""; done = 1 }
    { print }
    END { if (!done) print line }' "$conf" > "$conf.new"
  chmod --reference="$conf" "$conf.new"
  mv "$conf.new" "$conf"
fi
"$bin/pmcd" -v -c "$conf" >/dev/null 2>&1 || { "$bin/pmcd" -v -c "$conf"; exit 1; }  # grammar check only

# 2. PMNS
cd "$pmns_dir"
if [ ! -s root ]; then
  # normally done by pmcd's start script; -u merges the root_* files of the PMDAs in pmcd.conf
  PCP_PMCDCONF_PATH="$conf" ./Rebuild -s -u
fi
if ! pminfo -n root nvidia >/dev/null 2>&1; then
  sed -e "s/NVML:/$domain:/" "$pmda/pmns" > nvidia
  "$bin/pmnsadd" -n root nvidia
fi
pminfo -n root nvidia.gpuactive nvidia.memused nvidia.power >/dev/null

# 3. help text (pminfo -T), built next to the PMDA as its Install does
if [ -f "$pmda/help" ] && [ ! -f "$pmda/help.dir" ]; then
  cd "$pmda"
  sed -e "/^@ NVML\./s/NVML\./$domain./" help | "$bin/newhelp" -n root -o help
fi
