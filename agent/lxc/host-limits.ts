import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/**
 * Per-user notification limits of each container's own user namespace (its /proc/sys/user/*).
 *
 * Every container's user namespace is owned by host root (lxc-start runs as root), and the kernel
 * charges what a user takes in a namespace to the namespace's owner in the parent as well: every
 * container's inotify instances land on one counter of root in the initial namespace, whose
 * default limit (fs.inotify.max_user_instances, 128) one job could take whole, and then
 * inotify_init failed with EMFILE in every other tenant's container and on the host. A container's
 * own limit bounds what it can take; the host's limit must then hold every container's share
 * (ensureHostLimits). Marks are charged to the container's memory cgroup, so the watch caps bound
 * a count, not the kernel memory behind it.
 *
 * A watcher (a test runner in watch mode, tail -f, a dev server) usually opens one instance and
 * a watch per directory: 32 and 8192 leave room for several in one job over a large tree.
 * fanotify (unprivileged since 5.13) is the same kind of counter, 128 groups for the whole host
 * by default; jobs hardly use it, hence 4.
 */
export const CONTAINER_USER_LIMITS: Readonly<Record<string, number>> = {
  max_inotify_instances: 32,
  max_inotify_watches: 8192,
  max_fanotify_groups: 4,
  max_fanotify_marks: 8192,
};

/**
 * The same limits of the initial namespace, host root's, under their fs.* names: writing them
 * there needs root only, while /proc/sys/user/* also wants CAP_SYS_RESOURCE.
 */
const HOST_SYSCTL: Readonly<Record<string, string>> = {
  max_inotify_instances: 'fs/inotify/max_user_instances',
  max_inotify_watches: 'fs/inotify/max_user_watches',
  max_fanotify_groups: 'fs/fanotify/max_user_groups',
  max_fanotify_marks: 'fs/fanotify/max_user_marks',
};

/** What the host keeps for itself beyond the containers' shares (systemd, editors, the agent). */
const HOST_RESERVE: Readonly<Record<string, number>> = {
  max_inotify_instances: 512,
  max_inotify_watches: 65536,
  max_fanotify_groups: 128,
  max_fanotify_marks: 65536,
};

/**
 * The LXC config line that sets the container's own limits, for the limits this kernel has
 * (fanotify's exist from Linux 5.13). Not `lxc.sysctl.user.*`: LXC writes those after
 * `lxc.mount.auto = proc:mixed` has made /proc/sys read-only, and the container fails to start
 * ("Read-only file system"). A mount hook runs earlier, in the container's user namespace as its
 * root, before pivot_root and so with the host's writable /proc mounted: the kernel picks the
 * user.* sysctls of the writer's user namespace, the container's. LXC runs a hook as
 * `exec <line> NAME lxc mount`, hence one `sh -c`; a failed write fails the container's start.
 */
export function containerLimitsHook(): string {
  const writes = Object.entries(CONTAINER_USER_LIMITS)
    .filter(([name]) => existsSync(`/proc/sys/user/${name}`))
    .map(([name, max]) => `echo ${max} > /proc/sys/user/${name}`);
  return `lxc.hook.mount = /bin/sh -c '${writes.join(' && ')}'`;
}

/** One host limit below what the containers need: raised, or (`error`) left as it was. */
export interface HostLimitChange {
  name: string;
  from: number;
  to: number;
  error?: string;
}

/**
 * Raises host root's limits to hold `containers` containers' shares plus the host's reserve,
 * where they are lower, and returns each one it found low, for the log. scripts/install-host.sh
 * persists values that cover the defaults; this covers an agent configured for more containers,
 * or a host set up by hand. Never lowers a limit. A limit it cannot write (/proc/sys read-only,
 * as in a container) is reported, not fatal: each container still holds its own share, and the
 * host's limit then only bounds how many containers can use theirs at once. Agents sharing a
 * host each count only their own containers: give such a host limits for all of them
 * (install-host.sh's cover ~500 containers).
 */
export function ensureHostLimits(containers: number, procSys = '/proc/sys'): HostLimitChange[] {
  const low: HostLimitChange[] = [];
  for (const [name, share] of Object.entries(CONTAINER_USER_LIMITS)) {
    const file = `${procSys}/${HOST_SYSCTL[name]}`;
    if (!existsSync(file)) continue;
    const from = Number(readFileSync(file, 'utf8').trim());
    const to = containers * share + HOST_RESERVE[name]!;
    if (from >= to) continue;
    const change: HostLimitChange = { name: HOST_SYSCTL[name]!.replaceAll('/', '.'), from, to };
    try {
      writeFileSync(file, `${to}\n`);
    } catch (e) {
      change.error = (e as Error).message;
    }
    low.push(change);
  }
  return low;
}
