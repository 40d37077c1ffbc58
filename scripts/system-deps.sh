#!/usr/bin/env bash
# Debian packages the tests use and pip cannot provide: Chromium and its driver for the browser test.
# Installed only as root with apt-get and only when missing; otherwise say what is missing (those tests skip).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "note: ${need[*]} not installed (needs root and apt-get); the browser test will be skipped" >&2
fi
