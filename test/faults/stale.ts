import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { alive, removeStaleNetns } from './netns.js';

const quiet = (cmd: string, args: string[]) => {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 30_000 });
  } catch {
    /* already gone */
  }
};

/**
 * Kills what is left in a container's cgroups (its init, its jobs, its LXC monitor) and removes
 * them: lxc-stop cannot stop a container whose directory a half-finished destroy took away.
 */
function killCgroup(name: string): void {
  const root = '/sys/fs/cgroup';
  const dirs = readdirSync(root).flatMap((ctl) => [join(root, ctl, `lxc.payload.${name}`), join(root, ctl, `lxc.monitor.${name}`)]);
  for (const d of dirs) {
    try {
      for (const pid of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* no such cgroup here, or the process is gone */
    }
  }
  for (const d of dirs) {
    for (let i = 0; i < 20; i++) {
      try {
        rmdirSync(d);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
        execFileSync('sleep', ['0.1']);
      }
    }
  }
}

/**
 * What an earlier run whose harness died (kill -9, a crash, a CI timeout) left behind: its
 * agents' containers, its data mount, its namespaces and veth pairs. Runs still alive are left
 * alone: their pid is in every name.
 */
export function removeStale(lxcPath = '/var/lib/lxc'): string[] {
  const removed = removeStaleNetns();
  for (const name of readdirSync(lxcPath)) {
    const m = /^corral-run-flt(\d+)a\d+-/.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    quiet('lxc-stop', ['-P', lxcPath, '-n', name, '-k']);
    killCgroup(name);
    quiet('umount', ['-l', join(lxcPath, name, 'overlay')]);
    rmSync(join(lxcPath, name), { recursive: true, force: true });
    removed.push(name);
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const point = line.split(' ')[4] ?? '';
    const m = /\/corral-faults-(\d+)\//.exec(point + '/');
    if (!m || alive(Number(m[1]))) continue;
    quiet('umount', ['-l', point]);
    removed.push(point);
  }
  return removed;
}
