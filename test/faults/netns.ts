import { execFileSync } from 'node:child_process';

/**
 * One network namespace per agent, joined to the host by a veth pair on a /30 of its own: the
 * host end is where the agent's proxy listens, so a link can be cut (nft drop inside the
 * namespace) without touching any other agent. Names carry the harness's pid, so a later run can
 * tell a crashed run's leftovers (pid gone) from a run still going.
 */
export interface Netns {
  name: string;
  /** Host end of the veth pair. */
  hostIf: string;
  hostIp: string;
  nsIp: string;
}

/** Every netns and veth the harness makes starts with this. */
export const NETNS_PREFIX = 'cflt-';
const LINK_PREFIX = 'cflt';

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** `nft` run inside the namespace (`nsenter`, not `ip netns exec`: nothing needs /sys remounted here). */
function nft(ns: string, script: string): void {
  execFileSync('nsenter', [`--net=/var/run/netns/${ns}`, 'nft', '-f', '-'], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Creates namespace `i` of this run: 10.213.X.(4i+1) on the host, .(4i+2) inside. */
export function createNetns(run: number, i: number): Netns {
  const name = `${NETNS_PREFIX}${run}-a${i}`;
  const hostIf = `${LINK_PREFIX}${run}h${i}`;
  const nsIf = `${LINK_PREFIX}${run}n${i}`;
  const x = run % 256;
  const hostIp = `10.213.${x}.${4 * i + 1}`;
  const nsIp = `10.213.${x}.${4 * i + 2}`;
  ip(['netns', 'add', name]);
  ip(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
  ip(['link', 'set', nsIf, 'netns', name]);
  ip(['addr', 'add', `${hostIp}/30`, 'dev', hostIf]);
  ip(['link', 'set', hostIf, 'up']);
  ip(['-n', name, 'addr', 'add', `${nsIp}/30`, 'dev', nsIf]);
  ip(['-n', name, 'link', 'set', nsIf, 'up']);
  ip(['-n', name, 'link', 'set', 'lo', 'up']);
  return { name, hostIf, hostIp, nsIp };
}

/** Black-holes the namespace's link: every packet in and out is dropped silently (no RST, no ICMP). */
export function blackhole(ns: Netns): void {
  nft(
    ns.name,
    `table inet corral_fault {
  chain in { type filter hook input priority 0; policy accept; ip saddr ${ns.hostIp} drop; }
  chain out { type filter hook output priority 0; policy accept; ip daddr ${ns.hostIp} drop; }
}\n`,
  );
}

export function heal(ns: Netns): void {
  nft(ns.name, 'delete table inet corral_fault\n');
}

/** Removes a namespace and its veth pair (deleting either end removes both). */
export function removeNetns(ns: Pick<Netns, 'name' | 'hostIf'>): void {
  try {
    ip(['link', 'del', ns.hostIf]);
  } catch {
    /* gone with its namespace already */
  }
  try {
    ip(['netns', 'del', ns.name]);
  } catch {
    /* already gone */
  }
}

/** Whether process `pid` still exists (a harness run that owns leftovers). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Namespaces and veth ends of runs whose harness is gone (a crash, a kill -9): removed. */
export function removeStaleNetns(): string[] {
  const removed: string[] = [];
  for (const line of ip(['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${NETNS_PREFIX}(\\d+)-a\\d+$`).exec(name);
    if (!m || alive(Number(m[1]))) continue;
    ip(['netns', 'del', name]);
    removed.push(name);
  }
  for (const line of ip(['-o', 'link', 'show']).split('\n')) {
    const m = new RegExp(`^\\d+: (${LINK_PREFIX}(\\d+)[hn]\\d+)[@:]`).exec(line);
    if (!m || alive(Number(m[2]))) continue;
    try {
      ip(['link', 'del', m[1]!]);
      removed.push(m[1]!);
    } catch {
      /* went with its peer */
    }
  }
  return removed;
}

/** What this run still has on the host: namespaces and links with its pid in the name. */
export function netnsLeftOf(run: number): string[] {
  const names = ip(['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${NETNS_PREFIX}${run}-`));
  const links = ip(['-o', 'link', 'show'])
    .split('\n')
    .map((l) => /^\d+: ([^@:]+)/.exec(l)?.[1] ?? '')
    .filter((n) => new RegExp(`^${LINK_PREFIX}${run}[hn]\\d+$`).test(n));
  return [...names, ...links];
}
