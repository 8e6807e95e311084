import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lxcLs } from '../agent/lxc/lxc.js';
import { type Clock, type ExitStatus, restartDelay, type Supervised, Supervisor } from '../src/cli/supervise.js';
import { until } from './helpers/cluster.js';
import { freePort, killed, startCli } from './helpers/process.js';

async function api(base: string, token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

const read = (file: string) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return ''; // the process went away while we looked
  }
};

/** Pids of live processes whose command line contains `text`, with their parent pids. */
function processes(text: string): Array<{ pid: number; ppid: number }> {
  const found: Array<{ pid: number; ppid: number }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (!read(`/proc/${entry}/cmdline`).split('\0').join(' ').includes(text)) continue;
    // The command name in /proc/PID/stat may hold spaces and parentheses: fields start after the last ')'.
    const stat = read(`/proc/${entry}/stat`);
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state && state !== 'Z') found.push({ pid: Number(entry), ppid: Number(ppid) });
  }
  return found;
}

const NAME = 'uprestart';
/** The agent children `corral up` forks for this test's agent name. */
const agentsOf = (upPid: number) => processes(` agent --name ${NAME}`).filter((p) => p.ppid === upPid).map((p) => p.pid);

describe('corral up when its local agent dies', () => {
  it('restarts the agent while the gateway keeps serving, re-runs the job the dead agent held, and stops cleanly on SIGTERM', async () => {
    const data = mkdtempSync(join(tmpdir(), 'corral-uprestart-'));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const flags = ['--data', data, '--port', String(port), '--warm', '1', '--name', NAME, '--kill-grace-ms', '500', '--lease-ms', '3000'];
    const up = await startCli(['up', ...flags], { CORRAL_LOG_LEVEL: 'warn' }, /API reference/, 120_000);
    const upPid = up.child.pid!;
    try {
      const token = readFileSync(join(data, 'default.token'), 'utf8').trim();
      const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
      expect((await api(base, token, 'POST', '/v1/jobs?wait=30', { command: 'echo before' })).body.state).toBe('succeeded');
      const [first, ...more] = agentsOf(upPid);
      expect(first).toBeDefined();
      expect(more).toEqual([]);

      const held = await api(base, token, 'POST', '/v1/jobs', { command: 'sleep 5', timeout: 30 });
      expect(held.status).toBe(202);
      await until(async () => (await api(base, token, 'GET', `/v1/jobs/${held.body.id}`)).body.state === 'running', 20_000, 100);
      const killedAt = Date.now();
      process.kill(first!, 'SIGKILL');

      await until(() => agentsOf(upPid).some((p) => p !== first), 20_000, 50);
      const now = agentsOf(upPid);
      expect(now).toHaveLength(1);
      expect(now[0]).not.toBe(first);
      expect(up.child.exitCode).toBeNull();
      expect(up.child.signalCode).toBeNull();
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect(up.output()).toMatch(/the local agent \(pid \d+\) was killed by SIGKILL; restarting it in \d+\.\d s/);

      // The new agent has dialled in (a fresh connection, not the dead one's).
      await until(async () => {
        const r = await api(base, admin, 'GET', '/v1/agents');
        const a = (r.body?.agents ?? []).find((x: { id: string }) => x.id === NAME);
        return !!a && Date.parse(a.connectedAt) >= killedAt;
      }, 60_000, 100);
      const after = await api(base, token, 'POST', '/v1/jobs?wait=30', { command: 'echo after' });
      expect(after.body.state).toBe('succeeded');

      // The attempt the dead agent held ends with its lease and runs again, on the new agent.
      const deadline = Date.now() + 60_000;
      let job = (await api(base, token, 'GET', `/v1/jobs/${held.body.id}`)).body;
      while (!['succeeded', 'failed', 'timed_out', 'cancelled'].includes(job.state) && Date.now() < deadline) {
        job = (await api(base, token, 'GET', `/v1/jobs/${held.body.id}?wait=10`)).body;
      }
      expect(job.state).toBe('succeeded');
      expect(job.attempts.length).toBe(2);
      expect(job.attempts[0].reason).toBe('agent_error');
      expect(up.child.exitCode).toBeNull();
    } finally {
      await killed(up.child, 'SIGTERM');
    }
    expect(up.child.exitCode).toBe(0);
    expect(processes(` agent --name ${NAME}`)).toEqual([]);
    expect((await lxcLs('/var/lib/lxc')).filter((n) => n.startsWith(`corral-run-${NAME}-`))).toEqual([]);
  }, 180_000);
});

/** A child that exits when told to by the test, or when stopped. */
class FakeChild implements Supervised {
  static next = 100;
  readonly pid = FakeChild.next++;
  stopped = false;
  exit!: (s: ExitStatus) => void;
  readonly exited = new Promise<ExitStatus>((resolve) => (this.exit = resolve));
  stop() {
    this.stopped = true;
    this.exit({ code: 0, signal: null });
  }
}

/** Time moves only when the test says so. */
class FakeClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void }> = [];
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const timer = { at: this.t + ms, fn };
    this.timers.push(timer);
    return timer;
  };
  clearTimeout = (h: unknown) => {
    this.timers = this.timers.filter((t) => t !== h);
  };
  pending = () => this.timers.map((t) => t.at - this.t);
  advance(ms: number) {
    this.t += ms;
    const due = this.timers.filter((t) => t.at <= this.t);
    this.timers = this.timers.filter((t) => t.at > this.t);
    for (const t of due) t.fn();
  }
}

const settle = () => new Promise((r) => setImmediate(r));

function supervised(o: { random?: number } = {}) {
  const clock = new FakeClock();
  const children: FakeChild[] = [];
  const lines: string[] = [];
  const sup = new Supervisor({
    name: 'the child',
    spawn: () => {
      const c = new FakeChild();
      children.push(c);
      return c;
    },
    log: (l) => lines.push(l),
    backoff: { initialMs: 500, maxMs: 30_000, resetAfterMs: 60_000 },
    clock,
    random: () => o.random ?? 0.999,
  });
  return { sup, clock, children, lines };
}

describe('the supervisor', () => {
  it('waits 0.5 s, then twice as long after each quick death, up to 30 s', () => {
    const b = { initialMs: 500, maxMs: 30_000, resetAfterMs: 60_000 };
    expect([0, 1, 2, 3, 6, 7, 50].map((n) => restartDelay(b, n, 1))).toEqual([500, 1000, 2000, 4000, 30_000, 30_000, 30_000]);
    // Jitter takes off at most half the step.
    expect(restartDelay(b, 3, 0)).toBe(2000);
  });

  it('restarts a child that died, after the backoff, and logs how it ended', async () => {
    const { sup, clock, children, lines } = supervised();
    sup.start();
    children[0]!.exit({ code: null, signal: 'SIGKILL' });
    await settle();
    expect(lines).toEqual([`the child (pid ${children[0]!.pid}) was killed by SIGKILL; restarting it in 0.5 s`]);
    expect(sup.child).toBeUndefined();
    clock.advance(499);
    expect(children).toHaveLength(1);
    clock.advance(1);
    expect(children).toHaveLength(2);
    expect(sup.child).toBe(children[1]);

    children[1]!.exit({ code: 1, signal: null });
    await settle();
    expect(clock.pending()).toEqual([1000]);
  });

  it('starts from the shortest delay again after a child stayed up for a while', async () => {
    const { sup, clock, children } = supervised();
    sup.start();
    for (let i = 0; i < 3; i++) {
      children.at(-1)!.exit({ code: 1, signal: null });
      await settle();
      clock.advance(clock.pending()[0]!);
    }
    clock.advance(60_000);
    children.at(-1)!.exit({ code: 1, signal: null });
    await settle();
    expect(clock.pending()).toEqual([500]);
  });

  it('stop() ends the child and restarts nothing, even with a restart pending', async () => {
    const { sup, clock, children } = supervised();
    const first = new FakeChild();
    sup.start(first);
    await sup.stop();
    expect(first.stopped).toBe(true);
    clock.advance(60_000);
    expect(children).toHaveLength(0);

    const other = supervised();
    other.sup.start();
    other.children[0]!.exit({ code: 1, signal: null });
    await settle();
    await other.sup.stop();
    expect(other.clock.pending()).toEqual([]);
    other.clock.advance(60_000);
    expect(other.children).toHaveLength(1);
  });

  it('a spawn that throws is retried like a death, not thrown at the caller', async () => {
    const clock = new FakeClock();
    const lines: string[] = [];
    let calls = 0;
    const sup = new Supervisor({
      name: 'the child',
      spawn: () => {
        if (++calls === 1) throw new Error('EAGAIN');
        return new FakeChild();
      },
      log: (l) => lines.push(l),
      clock,
      random: () => 0.999,
    });
    sup.start();
    expect(lines).toEqual(['the child could not be started (EAGAIN); restarting it in 0.5 s']);
    clock.advance(500);
    expect(calls).toBe(2);
    expect(sup.child).toBeDefined();
  });
});
