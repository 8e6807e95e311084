import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lxcLs } from '../agent/lxc/lxc.js';
import { ensureBusybox, until } from './helpers/cluster.js';
import { CLI, freePort, runCli, startCli } from './helpers/process.js';

const WARM = 8;
/** Agent names unique to this run: containers, mounts and cgroups are named after them. */
const unique = (what: string) => `${what}${process.pid % 100_000}`;

const read = (file: string) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return ''; // the process went away while we looked
  }
};

/** Live processes: pid → parent pid and command line. */
function processes(): Map<number, { ppid: number; cmd: string }> {
  const found = new Map<number, { ppid: number; cmd: string }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = read(`/proc/${entry}/stat`);
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (!state || state === 'Z') continue;
    found.set(Number(entry), { ppid: Number(ppid), cmd: read(`/proc/${entry}/cmdline`).split('\0').join(' ') });
  }
  return found;
}

/** `root` and every process below it, in the snapshot `all`. */
function tree(root: number, all: ReturnType<typeof processes>): number[] {
  const out = [root];
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, p] of all) if (!out.includes(pid) && out.includes(p.ppid)) (out.push(pid), (grew = true));
  }
  return out.filter((p) => all.has(p));
}

/** Directories under `dir` (down to `depth`) whose name contains `text`. */
function dirsNamed(dir: string, text: string, depth: number): string[] {
  if (depth === 0) return [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.filter((e) => e.isDirectory()).flatMap((e) => [...(e.name.includes(text) ? [join(dir, e.name)] : []), ...dirsNamed(join(dir, e.name), text, depth - 1)]);
}

/** Everything an agent named `agent` can leave on this host: containers, mounts, cgroups, processes. */
async function leftovers(agent: string) {
  const prefix = `corral-run-${agent}-`;
  return {
    containers: (await lxcLs('/var/lib/lxc')).filter((n) => n.startsWith(prefix)),
    mounts: read('/proc/self/mountinfo').split('\n').filter((l) => l.includes(prefix)),
    cgroups: dirsNamed('/sys/fs/cgroup', prefix, 6),
    processes: [...processes()].filter(([, p]) => p.cmd.includes(prefix) || p.cmd.includes(`--name ${agent}`)).map(([pid, p]) => `${pid} ${p.cmd}`),
  };
}
const nothing = { containers: [], mounts: [], cgroups: [], processes: [] };

/** Starts the built CLI in a process group of its own, as a shell starts a foreground job. */
function startInGroup(args: string[]) {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, CORRAL_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, output: () => out };
}

/** Waits until the agent `name` reports `WARM` blank containers to the gateway at `port`. */
async function warmPool(port: number, data: string, name: string) {
  const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
  await until(async () => {
    const r = (await (await fetch(`http://127.0.0.1:${port}/v1/agents`, { headers: { authorization: `Bearer ${admin}` } })).json()) as { agents: Array<{ id: string; pool: { blank: Record<string, number> } }> };
    return (r.agents.find((a) => a.id === name)?.pool.blank.busybox ?? 0) >= WARM;
  }, 120_000, 100);
}

/** `corral up --warm WARM` for `name`, detached in its own process group, started and serving. */
async function up(name: string) {
  await ensureBusybox();
  const data = mkdtempSync(join(tmpdir(), 'corral-stop-'));
  const port = await freePort();
  const p = startInGroup(['up', '--data', data, '--port', String(port), '--warm', String(WARM), '--images', 'busybox', '--name', name, '--drain-ms', '5000']);
  await until(() => /API reference/.test(p.output()) || p.child.exitCode !== null, 120_000, 50);
  expect(p.child.exitCode, p.output()).toBeNull();
  return { ...p, port, data };
}

/** Runs `body`, and on failure prints the process's log and makes sure nothing of it keeps running. */
async function guarded(p: { child: ChildProcess; output: () => string }, body: () => Promise<void>) {
  try {
    await body();
  } catch (err) {
    console.error('OUTPUT:\n' + p.output());
    throw err;
  } finally {
    if (p.child.exitCode === null) process.kill(-p.child.pid!, 'SIGKILL');
  }
}

describe('stopping leaves nothing behind (real LXC)', () => {
  it(`SIGTERM to corral up's process group: up exits 0 after its agent destroyed all ${WARM} warm containers`, async () => {
    const name = unique('stopgrp');
    const p = await up(name);
    await guarded(p, async () => {
      await warmPool(p.port, p.data, name);
      expect((await leftovers(name)).containers).toHaveLength(WARM);
      process.kill(-p.child.pid!, 'SIGTERM');
      expect(await p.exited).toBe(0);
      expect(await leftovers(name)).toEqual(nothing);
    });
  }, 180_000);

  it('a second SIGINT (a double Ctrl-C) ends the drain but not the cleanup: up exits 1 once every container is gone', async () => {
    const name = unique('stopint');
    const p = await up(name);
    await guarded(p, async () => {
      await warmPool(p.port, p.data, name);
      process.kill(-p.child.pid!, 'SIGINT');
      // The second once the first has been taken (two at the same instant are one to the kernel).
      await until(() => p.output().includes('no new runs; waiting for running attempts'), 10_000, 10);
      process.kill(-p.child.pid!, 'SIGINT');
      expect(await p.exited).toBe(1);
      expect(await leftovers(name)).toEqual(nothing);
      expect(p.output()).toMatch(/stopping without waiting for running work; cleaning up/);
    });
  }, 180_000);

  it("SIGTERM to every process of up's tree at once (systemd's control-group kill), while lxc-start runs: up exits 0 and nothing is left", async () => {
    const name = unique('stoptree');
    const data = mkdtempSync(join(tmpdir(), 'corral-stop-'));
    const port = await freePort();
    await ensureBusybox();
    const p = startInGroup(['up', '--data', data, '--port', String(port), '--warm', String(WARM), '--images', 'busybox', '--name', name, '--drain-ms', '5000']);
    await guarded(p, async () => {
      // The moment the pool is being warmed: the agent's host tools are part of the tree then.
      let hit: string[] = [];
      await until(() => {
        const all = processes();
        const pids = tree(p.child.pid!, all);
        if (!pids.some((pid) => all.get(pid)?.cmd.startsWith('lxc-start'))) return false;
        hit = pids.map((pid) => all.get(pid)!.cmd.split(' ')[0]!);
        for (const pid of pids) process.kill(pid, 'SIGTERM');
        return true;
      }, 120_000, 5);
      expect(hit).toContain('lxc-start');
      // up and its agent; a third shows when the agent was caught between fork and exec of a tool.
      expect(hit.filter((c) => c === process.execPath).length).toBeGreaterThanOrEqual(2);
      expect(await p.exited).toBe(0);
      expect(await leftovers(name)).toEqual(nothing);
    });
  }, 180_000);

  it('a double Ctrl-C to a standalone corral agent (its process group) still destroys every container before it exits 1; a third names what it leaves', async () => {
    const name = unique('stopagent');
    const data = mkdtempSync(join(tmpdir(), 'corral-stop-'));
    const port = await freePort();
    await ensureBusybox();
    const gw = await startCli(['gateway', '--data', data, '--port', String(port)], {}, /gateway listening/);
    try {
      const token = (await runCli(['token', '--scope', 'agent', '--name', name], { CORRAL_DATA: data })).stdout.trim();
      const agentArgs = ['agent', '--gateway', `ws://127.0.0.1:${port}`, '--token', token, '--name', name, '--warm', String(WARM), '--images', 'busybox'];
      const twice = startInGroup(agentArgs);
      await guarded(twice, async () => {
        await warmPool(port, data, name);
        process.kill(-twice.child.pid!, 'SIGINT');
        await until(() => twice.output().includes('no new runs; waiting for running attempts'), 10_000, 10);
        process.kill(-twice.child.pid!, 'SIGINT');
        expect(await twice.exited).toBe(1);
        expect(await leftovers(name)).toEqual(nothing);
      });

      const thrice = startInGroup(agentArgs);
      await guarded(thrice, async () => {
        await warmPool(port, data, name);
        process.kill(-thrice.child.pid!, 'SIGINT');
        await until(() => thrice.output().includes('no new runs; waiting for running attempts'), 10_000, 10);
        process.kill(-thrice.child.pid!, 'SIGINT');
        await until(() => thrice.output().includes('cleaning up (a third signal exits at once)'), 10_000, 10);
        process.kill(-thrice.child.pid!, 'SIGINT');
        expect(await thrice.exited).toBe(1);
        const said = /exiting at once: left (\d+) container\(s\)(?: and \d+ still starting)? \(([^)]*)\); the next start of agent (\S+) destroys them/.exec(thrice.output());
        expect(said, thrice.output()).not.toBeNull();
        expect(said![3]).toBe(name);
        // What it said it left is what is there (some may have gone before the third signal).
        const named = said![2]!.split(', ').filter(Boolean);
        expect(named).toHaveLength(Number(said![1]));
        for (const c of (await leftovers(name)).containers) expect(named).toContain(c);
      });
      // The next start destroys them; a polite stop then leaves nothing.
      const again = startInGroup(agentArgs);
      await guarded(again, async () => {
        await warmPool(port, data, name);
        process.kill(-again.child.pid!, 'SIGTERM');
        expect(await again.exited).toBe(0);
        expect(await leftovers(name)).toEqual(nothing);
      });
    } finally {
      gw.child.kill('SIGKILL');
    }
  }, 300_000);
});
