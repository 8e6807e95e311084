import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { netnsLeftOf } from './netns.js';

/**
 * What a run left on the host once every agent and the gateway stopped and the harness tore its
 * namespaces and mounts down: containers, processes, cgroups, mounts, namespaces and links that
 * carry the run's agent names, its directory or its pid. Each entry is one leak.
 */
export function findLeaks(run: number, dir: string, lxcPath = '/var/lib/lxc'): string[] {
  const mark = `flt${run}a`;
  const leaks: string[] = [];
  const containers = execFileSync('lxc-ls', ['-P', lxcPath, '-1'], { encoding: 'utf8' }).split('\n').filter((n) => n.includes(mark));
  for (const c of containers) leaks.push(`container ${c}`);
  for (const d of existsSync(lxcPath) ? readdirSync(lxcPath) : []) if (d.includes(mark) && !containers.includes(d)) leaks.push(`container directory ${join(lxcPath, d)}`);
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      if (cmd.includes(mark) || cmd.includes(dir) || cg.includes(mark)) leaks.push(`process ${pid}: ${cmd.trim().slice(0, 160)}`);
    } catch {
      /* exited while we looked */
    }
  }
  for (const ctl of existsSync('/sys/fs/cgroup') ? readdirSync('/sys/fs/cgroup') : []) {
    const root = join('/sys/fs/cgroup', ctl);
    for (const sub of ['', 'lxc.payload', 'lxc.monitor', 'lxc']) {
      const d = join(root, sub);
      try {
        for (const e of readdirSync(d)) if (e.includes(mark)) leaks.push(`cgroup ${join(d, e)}`);
      } catch {
        /* not a directory here */
      }
    }
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (line.includes(mark) || line.includes(dir)) leaks.push(`mount ${line.split(' ').slice(3, 5).join(' ')}`);
  for (const n of netnsLeftOf(run)) leaks.push(`network ${n}`);
  for (const t of nftTables()) if (t.includes('corral_fault')) leaks.push(`nft table on the host: ${t}`);
  return leaks;
}

function nftTables(): string[] {
  try {
    return execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}
