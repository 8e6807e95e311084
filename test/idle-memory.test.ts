import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Agent } from '../agent/agent.js';
import { loadAgentConfig } from '../agent/config.js';
import { cgroupOfMonitor } from '../agent/lxc/cgroup.js';
import { startCluster, until, type Client, type Cluster } from './helpers/cluster.js';

const MiB = 1024 ** 2;
let cluster: Cluster;
let agent: Agent;

/** The memory a container holds now, read the way the pool reads it (its cgroup, found from its monitor). */
function held(container: string): number {
  const cg = cgroupOfMonitor(Number(readFileSync(join('/var/lib/lxc', container, 'init.pid'), 'utf8').trim()));
  try {
    return cg.heldMemoryBytes();
  } finally {
    cg.close();
  }
}

const idleOf = (a: Agent, tenant: string) => a.pool.summary().warm.filter((w) => w.tenant === tenant).reduce((n, w) => n + w.idle, 0);
const exists = (a: Agent, container: string) => a.pool.remaining().containers.includes(container);

/** test/idle-memory-shm.c built for this host, base64 (it reaches the container as stdin). */
function shmLeaver(): string {
  const dir = mkdtempSync(join(tmpdir(), 'corral-idle-shm-'));
  try {
    const bin = join(dir, 'leave-shm');
    execFileSync('gcc', ['-Os', '-static', '-nostdlib', '-fno-stack-protector', '-s', '-o', bin, join(import.meta.dirname, 'idle-memory-shm.c')]);
    return readFileSync(bin).toString('base64');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
/** The reproduced attack: a 600 MiB SysV shm segment left without IPC_RMID and 250 MB in /tmp, in a 1G job. */
const ATTACK = 'base64 -d > /tmp/leave-shm && chmod +x /tmp/leave-shm && /tmp/leave-shm && rm /tmp/leave-shm && dd if=/dev/zero of=/tmp/hoard bs=1M count=250 2>/dev/null && echo ok';

async function run(t: Client, command: string, memory = '1G', stdin?: string) {
  const { job } = await t.submit({ command, memory, ...(stdin !== undefined && { stdin }) }, 60);
  expect(job.state, `${command}: ${JSON.stringify(job)}`).toBe('succeeded');
  return { job, container: job.attempts.at(-1)!.container!, output: await t.output(job.id) };
}

beforeAll(async () => {
  cluster = await startCluster({ agents: ['im1'] });
  agent = cluster.agents.get('im1')!;
});
afterAll(async () => {
  await cluster?.stop();
});

describe('an idle warm container holds no memory a job left behind', () => {
  it('keeps the container of an echo job warm (it holds under 4 MiB, the bound is 32) and runs the next job in it', async () => {
    const t = await cluster.tenant('quiet');
    const first = await run(t, 'echo hi');
    const bytes = held(first.container);
    console.log(`a used busybox container holds ${bytes} bytes`);
    expect(bytes).toBeLessThan(4 * MiB);
    expect(idleOf(agent, 'quiet')).toBe(1);
    const second = await run(t, 'echo again');
    expect(second.container).toBe(first.container);
  });

  it('keeps a container whose job left a small file in /tmp (1 MiB) warm, file and all', async () => {
    const t = await cluster.tenant('small');
    const first = await run(t, 'dd if=/dev/zero of=/tmp/small bs=1M count=1 2>/dev/null; echo ok');
    const second = await run(t, 'wc -c < /tmp/small');
    expect(second.container).toBe(first.container);
    expect(second.output.trim()).toBe(String(MiB));
  });

  it('recycles the container of a job that left 200 MB on its tmpfs /tmp: destroyed, not idle, and the next job runs elsewhere', async () => {
    const t = await cluster.tenant('hoard');
    const warm = await run(t, 'echo warm');
    expect(idleOf(agent, 'hoard')).toBe(1);
    // /tmp is the container's tmpfs layer: its pages are shmem, charged to the container and
    // unreclaimable without swap, like a SysV shm segment left without IPC_RMID (busybox has no ipcmk).
    const hoard = await run(t, 'dd if=/dev/zero of=/tmp/hoard bs=1M count=200 2>/dev/null && echo ok');
    expect(hoard.container).toBe(warm.container);
    expect(hoard.output).toBe('ok\n');
    // release() decides synchronously, before the job's end reaches the gateway.
    expect(idleOf(agent, 'hoard')).toBe(0);
    await until(() => !exists(agent, hoard.container), 30_000);
    const next = await run(t, 'ls /tmp/hoard 2>/dev/null || echo gone');
    expect(next.container).not.toBe(hoard.container);
    expect(next.output).toBe('gone\n');
    expect(held(next.container)).toBeLessThan(4 * MiB);
  });

  it.runIf(process.arch === 'x64')('recycles the container of a job that left a 600 MiB SysV shm segment and 250 MB in /tmp (the reproduced attack)', async () => {
    const t = await cluster.tenant('shm');
    const warm = await run(t, 'echo warm');
    const attack = await run(t, ATTACK, '1G', shmLeaver());
    expect(attack.container).toBe(warm.container);
    expect(attack.output).toBe('ok\n');
    expect(idleOf(agent, 'shm')).toBe(0);
    await until(() => !exists(agent, attack.container), 30_000);
    const next = await run(t, 'echo next');
    expect(next.container).not.toBe(attack.container);
    expect(held(next.container)).toBeLessThan(4 * MiB);
  });

  it('reads --idle-memory-max and CORRAL_IDLE_MEMORY_MAX (the flag wins), defaulting to 32 MiB with a 1 MiB floor', () => {
    const base = { gateway: 'ws://127.0.0.1:1', token: 'x' };
    expect(loadAgentConfig(base, {}).idleMemoryMax).toBe(32 * MiB);
    expect(loadAgentConfig(base, { CORRAL_IDLE_MEMORY_MAX: String(64 * MiB) }).idleMemoryMax).toBe(64 * MiB);
    expect(loadAgentConfig({ ...base, 'idle-memory-max': String(8 * MiB) }, { CORRAL_IDLE_MEMORY_MAX: String(64 * MiB) }).idleMemoryMax).toBe(8 * MiB);
    expect(() => loadAgentConfig({ ...base, 'idle-memory-max': '4096' }, {})).toThrow(/idle-memory-max|CORRAL_IDLE_MEMORY_MAX/);
  });

  it.runIf(process.arch === 'x64')('keeps the attacking container warm, holding what it left, on an agent whose --idle-memory-max is above that', async () => {
    await agent.stop();
    cluster.agents.delete('im1');
    await until(() => !cluster.gateway.services.hub.agents().some((a) => a.id === 'im1'), 10_000);
    const roomy = await cluster.addAgent('im2', { 'idle-memory-max': String(2048 * MiB) });
    const t = await cluster.tenant('roomy');
    const attack = await run(t, ATTACK, '1G', shmLeaver());
    const bytes = held(attack.container);
    console.log(`after the attack its container holds ${bytes} bytes`);
    // What the old pool kept idle and the scheduler promised again: 600 MiB of shm, 250 MiB of /tmp.
    expect(bytes).toBeGreaterThan(850 * MiB);
    expect(idleOf(roomy, 'roomy')).toBe(1);
    const next = await run(t, 'wc -c < /tmp/hoard');
    expect(next.container).toBe(attack.container);
    expect(next.output.trim()).toBe(String(250 * MiB));
  });
});
