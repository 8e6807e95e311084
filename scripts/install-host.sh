#!/usr/bin/env bash
# Installs what corral needs on a Debian 12 host (as root): LXC, a static busybox for the
# busybox image, debootstrap for the debian image, and subordinate ids so root can run
# unprivileged (user-namespaced) containers. Safe to run again.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "install-host.sh: run as root" >&2; exit 1; fi
need=()
command -v lxc-start >/dev/null || need+=(lxc)
[ -x /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' || need+=(busybox-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v newuidmap >/dev/null || need+=(uidmap)
# The container executor is a static C binary built on the node: gcc and a static libc.
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Root-owned unprivileged containers map container ids 0..65535 onto host ids from 1000000 up.
grep -q '^root:1000000:' /etc/subuid 2>/dev/null || echo 'root:1000000:1000000' >> /etc/subuid
grep -q '^root:1000000:' /etc/subgid 2>/dev/null || echo 'root:1000000:1000000' >> /etc/subgid
mkdir -p /var/lib/lxc
