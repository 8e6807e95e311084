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
# The fault harness (npm run test:faults) puts agents in network namespaces joined by veth pairs
# (ip), black-holes their links (nft) and starts them inside with nsenter.
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v nsenter >/dev/null || need+=(util-linux)
# The console's browser test drives Debian's chromium (playwright-core downloads no browser).
command -v chromium >/dev/null || need+=(chromium)
# The durability test traces a gateway's fsyncs and socket writes with strace.
command -v strace >/dev/null || need+=(strace)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Root-owned unprivileged containers map container ids 0..65535 onto host ranges of 65536 ids:
# the first range (1000000) owns image files, every tenant gets a range of its own after it.
# 1000 ranges: 1000000 .. 66535999. An older, shorter entry is widened.
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  sed -i '/^root:1000000:/d' "$f"
  echo 'root:1000000:65536000' >> "$f"
done
mkdir -p /var/lib/lxc
# Every container's user namespace belongs to root, so the kernel also charges each container's
# inotify and fanotify use to root's own per-user limits, one counter for all tenants and the
# host. Each container gets its own small limits (agent/lxc/host-limits.ts: 32 inotify instances,
# 8192 watches, 4 fanotify groups, 8192 marks); root's must hold every container's share plus the
# host's own: here ~500 containers' (an agent raises them at start if its slots + max-idle need
# more). Never lowers a value that is already higher.
conf=/etc/sysctl.d/60-corral.conf
: > "$conf.tmp"
for kv in fs.inotify.max_user_instances=16512 fs.inotify.max_user_watches=4161536 \
          fs.fanotify.max_user_groups=2128 fs.fanotify.max_user_marks=4161536; do
  key=${kv%=*} want=${kv#*=}
  [ -e "/proc/sys/${key//.//}" ] || continue
  have=$(sysctl -n "$key")
  [ "$have" -gt "$want" ] && want=$have
  echo "$key = $want" >> "$conf.tmp"
done
mv "$conf.tmp" "$conf"
sysctl -q -p "$conf"
