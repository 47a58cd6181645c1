#!/usr/bin/env bash
# Install Prometheus + promtool (Debian's `prometheus` package) for the monitoring tests,
# without leaving a Prometheus daemon running: the tests start their own on loopback.
# Idempotent; needs root or passwordless sudo, otherwise it says so and exits 1.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "prometheus/promtool are not installed and this user cannot install packages;" \
       "run as root: apt-get install -y --no-install-recommends prometheus" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "prometheus/promtool are not installed and apt-get is not available" >&2
  exit 1
fi
# policy-rc.d (exit 101) tells the package scripts not to start the service; ours is
# removed afterwards only if we created it.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
echo "installing prometheus (Debian package) ..."
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
       --no-install-recommends prometheus >/tmp/streams-prometheus-install.log 2>&1; then
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
       >>/tmp/streams-prometheus-install.log 2>&1 || true
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         --no-install-recommends prometheus >>/tmp/streams-prometheus-install.log 2>&1; then
    tail -20 /tmp/streams-prometheus-install.log >&2
    echo "error: installing prometheus failed (see /tmp/streams-prometheus-install.log)" >&2
    exit 1
  fi
fi
# Where systemd runs, the package enables and may start its service: stop it, so nothing
# listens on :9090 behind the tests' back.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') installed"
