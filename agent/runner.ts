import { constants } from 'node:os';
import type { Logger } from 'pino';
import { MAX_OUTPUT_CHUNK_BYTES, type AgentMessage, type GatewayMessage } from '../src/protocol/messages.js';
import type { Container } from './pool/container.js';
import type { Pool } from './pool/pool.js';

type Run = Extract<GatewayMessage, { type: 'run' }>;
type Result = Extract<AgentMessage, { type: 'ended' }>['result'];

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));
/** How long a run may go before its start is reported on its own (see Runner.attempt). */
const STARTED_AFTER_MS = 20;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface RunnerOptions {
  pool: Pool;
  send: (msg: AgentMessage) => void;
  log: Logger;
  pids: number;
  killGraceMs: number;
}

interface Active {
  jobId: string;
  fence: number;
  container?: Container;
  /** Why the attempt is being stopped, once it is. */
  stopping?: 'timeout' | 'cancelled';
  kill?: (reason: 'timeout' | 'cancelled') => void;
  /** The container of an attempt that ended before its `started` frame went out. */
  unreported?: string;
}

/**
 * Runs attempts: takes a container from the pool, applies the job's limits to its cgroup, hands
 * the command to the container's executor, streams output, enforces the timeout (TERM, then KILL
 * after a grace), and reports the exit with CPU time and peak memory from the cgroup.
 */
export class Runner {
  private readonly active = new Map<string, Active>();

  constructor(private readonly o: RunnerOptions) {}

  running(): Array<{ jobId: string; fence: number }> {
    return [...this.active.values()].map((a) => ({ jobId: a.jobId, fence: a.fence }));
  }

  get size(): number {
    return this.active.size;
  }

  cancel(jobId: string, fence: number): void {
    const a = this.active.get(jobId);
    if (a && a.fence === fence) {
      if (a.kill) a.kill('cancelled');
      else a.stopping = 'cancelled';
    }
  }

  async run(m: Run): Promise<void> {
    if (this.active.has(m.jobId)) return;
    const a: Active = { jobId: m.jobId, fence: m.fence };
    this.active.set(m.jobId, a);
    let result: Result;
    try {
      result = await this.attempt(m, a);
    } catch (err) {
      this.o.log.error({ err, jobId: m.jobId }, 'attempt failed on the agent');
      result = { exitCode: null, signal: null, reason: 'agent_error', detail: String((err as Error).message ?? err).slice(0, 1000) };
      if (a.container) this.o.pool.release(a.container, true);
    }
    this.active.delete(m.jobId);
    this.o.send({ type: 'ended', jobId: m.jobId, fence: m.fence, result, ...(a.unreported !== undefined && { container: a.unreported }) });
  }

  private async attempt(m: Run, a: Active): Promise<Result> {
    const { spec } = m;
    const lease = await this.o.pool.acquire(m.tenant, spec.image, spec.fresh);
    const c = lease.container;
    a.container = c;
    if (a.stopping) {
      this.o.pool.release(c, false);
      return { exitCode: null, signal: null, reason: 'cancelled' };
    }
    const limits = { memoryBytes: spec.memory, cpu: spec.cpu, cpuset: spec.cpuset, pids: this.o.pids };
    const key = JSON.stringify(limits);
    // cgroup writes cost ~0.2 ms per attempt here (bench/invoke.ts); skip them when nothing changed.
    if (c.applied !== key) {
      c.applied = undefined;
      c.cgroup.apply(limits);
      c.applied = key;
    }
    c.cgroup.resetPeak();
    const before = c.cgroup.usage();
    const started = performance.now();

    const argv = typeof spec.command === 'string' ? ['/bin/sh', '-c', spec.command] : spec.command;
    const env = { PATH: DEFAULT_PATH, HOME: '/root', CORRAL_JOB_ID: m.jobId, CORRAL_ATTEMPT: String(m.attempt), ...spec.env };
    let outputLeft = spec.maxOutputBytes ?? Infinity;
    const forward = (stream: 'stdout' | 'stderr') => (data: Buffer) => {
      // Past the job's cap the bytes are drained but not sent; the gateway records the truncation.
      const keep = data.subarray(0, Math.max(0, Math.min(data.length, outputLeft + 1)));
      outputLeft -= keep.length;
      for (let i = 0; i < keep.length; i += MAX_OUTPUT_CHUNK_BYTES) {
        this.o.send({ type: 'output', jobId: m.jobId, fence: m.fence, stream, data: keep.subarray(i, i + MAX_OUTPUT_CHUNK_BYTES).toString('base64') });
      }
    };
    const onOut = forward('stdout');
    const onErr = forward('stderr');

    let startedTimer: NodeJS.Timeout | undefined;
    const status = await new Promise<{ code: number | null; signal: number | null } | 'lost'>((resolve) => {
      let grace: NodeJS.Timeout | undefined;
      const kill = (reason: 'timeout' | 'cancelled') => {
        if (a.stopping && grace) return;
        a.stopping = reason;
        c.exec.kill(constants.signals.SIGTERM);
        grace = setTimeout(() => c.exec.kill(constants.signals.SIGKILL), this.o.killGraceMs);
      };
      a.kill = kill;
      const timer = setTimeout(() => kill('timeout'), spec.timeout * 1000);
      const done = (s: { code: number | null; signal: number | null } | 'lost') => {
        clearTimeout(timer);
        if (startedTimer) {
          clearTimeout(startedTimer);
          startedTimer = undefined;
          a.unreported = c.name;
        }
        clearTimeout(grace);
        c.exec.off('stdout', onOut);
        c.exec.off('stderr', onErr);
        c.exec.off('exit', done);
        c.exec.off('close', onClose);
        resolve(s);
      };
      const onClose = () => done('lost');
      c.exec.on('stdout', onOut);
      c.exec.on('stderr', onErr);
      c.exec.once('exit', done);
      c.exec.once('close', onClose);
      c.exec.run({ argv, env, ...(spec.stdin !== undefined && { stdin: Buffer.from(spec.stdin) }) });
      // A job that ends within STARTED_AFTER_MS reports its start with its end, in one frame.
      startedTimer = setTimeout(() => {
        startedTimer = undefined;
        this.o.send({ type: 'started', jobId: m.jobId, fence: m.fence, container: c.name });
      }, STARTED_AFTER_MS);
      if (a.stopping) kill(a.stopping);
    });

    const wallMs = performance.now() - started;
    const after = c.cgroup.usage();
    const usage = { cpuSeconds: Math.max(0, after.cpuNs - before.cpuNs) / 1e9, peakMemoryBytes: c.cgroup.peakMemoryBytes(), wallMs };
    if (status === 'lost') {
      this.o.pool.release(c, true);
      return { exitCode: null, signal: null, reason: 'agent_error', detail: 'the container executor went away', ...usage };
    }
    const oom = after.oomKills > before.oomKills;
    const signal = status.signal === null ? null : (SIGNAL_NAMES.get(status.signal) ?? `SIG${status.signal}`);
    const reason: Result['reason'] = a.stopping ?? (oom ? 'oom' : 'exit');
    // Processes that escaped the job's process group would outlive it: such a container is not reused.
    const stragglers = c.cgroup.procs().length > 1;
    this.o.pool.release(c, reason !== 'exit' || stragglers);
    return { exitCode: status.code, signal, reason, ...usage };
  }
}
