#!/usr/bin/env bash
# Debian packages pip cannot provide: Performance Co-Pilot (host archives) and Chromium with its driver
# (the browser test). Installed only as root with apt-get and only when missing; otherwise the script
# says what is missing, the local runtime records PCP as `not measured` and the browser test skips.
set -euo pipefail
need=()
[ "$(dpkg-query -W -f='${Status}' pcp 2>/dev/null)" = "install ok installed" ] || need+=(pcp)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not installed (needs root and apt-get): ${need[*]}" >&2
    exit 0
  fi
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  # pcp's post-install calls systemctl, which fails where systemd is not PID 1; the packages work
  # once configured without starting services, so configure them with a no-op systemctl first on PATH.
  shim=$(mktemp -d)
  printf '#!/bin/sh\nexit 0\n' > "$shim/systemctl"
  chmod +x "$shim/systemctl"
  PATH="$shim:$PATH" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || true
  PATH="$shim:$PATH" DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null
  rm -rf "$shim"
fi
# pmcd needs its namespace built (normally done by the service's start script).
if [ -x /usr/lib/pcp/bin/pmcd ] && [ ! -s /var/lib/pcp/pmns/root ] && [ "$(id -u)" = 0 ]; then
  (cd /var/lib/pcp/pmns && ./Rebuild -u >/dev/null 2>&1)
fi
