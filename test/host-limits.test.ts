import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CONTAINER_USER_LIMITS, containerLimitsHook, ensureHostLimits } from '../agent/lxc/host-limits.js';

/** A stand-in for /proc/sys holding host root's inotify and fanotify limits. */
function fakeProcSys(values: Record<string, number>): string {
  const dir = mkdtempSync(join(tmpdir(), 'corral-procsys-'));
  for (const [path, v] of Object.entries(values)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), `${v}\n`);
  }
  return dir;
}

let dir = '';
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('host root’s share of every container’s inotify and fanotify use', () => {
  it('raises a limit below what the containers need to their shares plus the reserve, and reports it', () => {
    dir = fakeProcSys({ 'fs/inotify/max_user_instances': 128, 'fs/inotify/max_user_watches': 10_000_000 });
    const low = ensureHostLimits(100, dir);
    expect(low).toEqual([{ name: 'fs.inotify.max_user_instances', from: 128, to: 100 * 32 + 512 }]);
    expect(readFileSync(join(dir, 'fs/inotify/max_user_instances'), 'utf8')).toBe(`${100 * 32 + 512}\n`);
  });

  it('never lowers a limit, and skips one this kernel does not have', () => {
    dir = fakeProcSys({ 'fs/inotify/max_user_instances': 1_000_000 });
    expect(ensureHostLimits(100, dir)).toEqual([]);
    expect(readFileSync(join(dir, 'fs/inotify/max_user_instances'), 'utf8')).toBe('1000000\n');
  });

  it('each container sets its own limits in one mount hook, as one sh -c (LXC execs the line)', () => {
    const hook = containerLimitsHook();
    expect(hook).toMatch(/^lxc\.hook\.mount = \/bin\/sh -c '[^']+'$/);
    expect(hook).toContain(`echo ${CONTAINER_USER_LIMITS.max_inotify_instances} > /proc/sys/user/max_inotify_instances`);
  });
});
