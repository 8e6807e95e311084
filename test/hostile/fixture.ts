import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { importImage, listImages, removeImage } from '../../agent/lxc/images.js';
import type { AgentConn } from '../../src/agents/conn.js';
import type { JobView } from '../../src/jobs/view.js';
import { ensureBusybox, startCluster, until, type Client, type Cluster } from '../helpers/cluster.js';

export const LXC = '/var/lib/lxc';
const HOST = { lxcPath: LXC, idmapBase: 1_000_000 };
export const AGENT = 'hostile';
/** The attack binary's image, and the same image offered as one whose jobs run as root. */
export const IMAGE = 'hostile-test';
export const ROOT_IMAGE = 'hostile-root-test';

/**
 * Builds the test images: busybox plus /usr/bin/corral-attack, a static binary compiled on this
 * host from test/hostile/attack.c. Rebuilt on every run so the image always holds today's attacks.
 */
export async function buildAttackImages(): Promise<void> {
  await ensureBusybox();
  const work = mkdtempSync(join(tmpdir(), 'corral-attack-'));
  try {
    mkdirSync(join(work, 'add', 'usr', 'bin'), { recursive: true });
    const bin = join(work, 'add', 'usr', 'bin', 'corral-attack');
    execFileSync('gcc', ['-static', '-O2', '-o', bin, join(import.meta.dirname, 'attack.c')]);
    chmodSync(bin, 0o755);
    const tar = join(work, 'image.tar');
    execFileSync('tar', ['-C', join(LXC, 'corral-img-busybox', 'rootfs'), '--numeric-owner', '-cf', tar, '.']);
    execFileSync('tar', ['-C', join(work, 'add'), '--numeric-owner', '-rf', tar, './usr/bin/corral-attack']);
    for (const name of [IMAGE, ROOT_IMAGE]) {
      if ((await listImages(HOST)).includes(name)) await removeImage(HOST, name);
      await importImage(HOST, name, tar);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export interface Arena {
  cluster: Cluster;
  mallory: Client;
  victim: Client;
  /** The agent's connection as first seen: a reconnect would replace it. */
  link: AgentConn;
}

/** A gateway and one agent offering the attack images, a hostile tenant and a victim tenant. */
export async function startArena(quota: Record<string, number> = {}): Promise<Arena> {
  await buildAttackImages();
  const cluster = await startCluster({ agents: [] });
  // An executor of its own, built from this checkout: the default /var/lib/corral/bin is shared
  // with every other agent on the host, and one started from another checkout (another branch's
  // executor) replaces that binary under the containers this agent starts next.
  const state = mkdtempSync(join(tmpdir(), 'corral-hostile-state-'));
  chmodSync(state, 0o755); // containers bind-mount the executor from under it
  const stop = cluster.stop.bind(cluster);
  cluster.stop = async () => {
    await stop();
    rmSync(state, { recursive: true, force: true });
  };
  await cluster.addAgent(AGENT, { images: `busybox,${IMAGE},${ROOT_IMAGE}`, 'root-images': ROOT_IMAGE, slots: '6', 'max-idle-per-tenant': '2', 'state-dir': state });
  const mallory = await cluster.tenant('mallory', quota);
  const victim = await cluster.tenant('victim');
  const link = cluster.gateway.services.hub.agents().find((a) => a.id === AGENT)!;
  return { cluster, mallory, victim, link };
}

/** Runs `corral-attack MODE` as mallory and returns the job and its report: try → result. */
export async function attack(a: Arena, mode: string, extra: Record<string, unknown> = {}): Promise<{ job: JobView; results: Map<string, string>; text: string }> {
  const r = await a.mallory.submit({ command: ['/usr/bin/corral-attack', mode], image: IMAGE, timeout: 20, ...extra }, 30);
  const job = r.status === 200 ? r.job : await a.mallory.until(r.job.id);
  const text = await a.mallory.output(job.id, 'stdout');
  return { job, results: reportOf(text), text };
}

/** An attack's report lines, "try: result", as try → result. */
export function reportOf(text: string): Map<string, string> {
  const results = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([\w-]+): (.*)$/.exec(line);
    if (m) results.set(m[1]!, m[2]!);
  }
  return results;
}

/**
 * Starts `corral-attack MODE` (a "-fill" attack) as mallory in a fresh container and returns once
 * the job says it holds what it took, with its report so far. The job holds for a minute; the
 * caller cancels it when done.
 */
export async function holding(a: Arena, mode: string): Promise<{ id: string; results: Map<string, string> }> {
  const { job } = await a.mallory.submit({ command: ['/usr/bin/corral-attack', mode, '60'], image: IMAGE, timeout: 90, fresh: true });
  let text = '';
  await until(async () => /^holding: yes$/m.test((text = await a.mallory.output(job.id, 'stdout'))), 30_000, 50);
  return { id: job.id, results: reportOf(text) };
}

/** Runs a probe attack (`inotify-probe` …) as another tenant, in its own container: its report. */
export async function probeAs(client: Client, mode: string): Promise<Map<string, string>> {
  const r = await client.submit({ command: ['/usr/bin/corral-attack', mode], image: IMAGE, timeout: 20 }, 30);
  expect(r.job.state).toBe('succeeded');
  return reportOf(await client.output(r.job.id, 'stdout'));
}

/** Runs a probe attack as host root (the attack binary is static: the image's copy runs here too). */
export function probeOnHost(mode: string): Map<string, string> {
  return reportOf(execFileSync(join(LXC, `corral-img-${IMAGE}`, 'rootfs', 'usr', 'bin', 'corral-attack'), [mode]).toString());
}

/**
 * What every hostile case ends with: the agent is still connected on the same link (it never
 * crashed nor reconnected), and another tenant's job still runs to success on it.
 */
export async function expectPlatformHealthy(a: Arena): Promise<void> {
  const now = a.cluster.gateway.services.hub.agents().find((c) => c.id === AGENT);
  expect(now, 'agent still connected').toBe(a.link);
  expect(a.link.ws.readyState).toBe(a.link.ws.OPEN);
  const r = await a.victim.submit({ command: 'echo victim-ok' }, 30);
  expect(r.job.state).toBe('succeeded');
  expect(await a.victim.output(r.job.id)).toBe('victim-ok\n');
}

/** The host id range a tenant's containers map onto, from a job's own uid_map. */
export async function rangeOf(client: Client): Promise<number> {
  const r = await client.submit({ command: 'cat /proc/self/uid_map' }, 30);
  return Number(/^\s*0\s+(\d+)/.exec(await client.output(r.job.id))![1]);
}

/** Host pids of live processes in the range at `base` other than its root (a container's executor): a job's processes. */
export function processesIn(base: number): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const uid = statSync(`/proc/${p}`).uid;
      if (uid > base && uid < base + 65536 && readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z') out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** The host pid of a container's init (its executor). */
export function executorPid(container: string): number {
  return Number(execFileSync('lxc-info', ['-P', LXC, '-n', container, '-p', '-H']).toString().trim());
}

/** Whether a container still exists on the host. */
export function containerExists(container: string): boolean {
  try {
    statSync(join(LXC, container));
    return true;
  } catch {
    return false;
  }
}

/** The v1 freezer state file of a container (the agent's cgroup layout: lxc.payload.NAME). */
export function freezerOf(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.split(':')[1] === 'freezer')!;
  return join('/sys/fs/cgroup/freezer', line.split(':')[2]!, 'freezer.state');
}

export function writeFile(path: string, text: string): void {
  writeFileSync(path, text);
}
