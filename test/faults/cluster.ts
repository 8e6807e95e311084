import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { DataFs } from './datafs.js';
import { createNetns, removeNetns, type Netns } from './netns.js';
import { FaultProxy, type WireFrame } from './proxy.js';
import { CLI, Proc, until, type ProcEvent } from './procs.js';

export interface AgentNode {
  name: string;
  ns: Netns;
  proxy: FaultProxy;
  proc: Proc;
  stateDir: string;
}

export interface FaultCluster {
  run: number;
  dir: string;
  base: string;
  data: DataFs;
  gateway: Proc;
  agents: AgentNode[];
  adminToken: string;
  gatewayLog: string;
  frames: WireFrame[];
  events: ProcEvent[];
  /** Mints a token with the CLI (`corral token`) on the gateway's secret. */
  token(args: string[]): string;
  admin(method: string, path: string, body?: unknown): Promise<Response>;
  /** Ids of the agents the gateway has connected now. */
  connected(): Promise<string[]>;
  /** Stops agents (each drains), then the gateway; the database can be read after. */
  stop(): Promise<void>;
  /** `stop()`, then removes proxies, namespaces and the data mount. */
  teardown(): Promise<void>;
}

export interface ClusterOptions {
  /** Where logs, state directories and the data mount live (made if missing). */
  dir: string;
  agents: number;
  slots: number;
  leaseMs: number;
  /** Size of the gateway's data filesystem; undefined: an ordinary directory on the host's disk. */
  dataBytes?: number;
  warm?: number;
}

/**
 * One gateway on loopback, its data on a filesystem of its own, and N agents, each in its own
 * network namespace, dialling the gateway through a fault proxy on the host end of its veth
 * pair: the gateway is reachable from a namespace only through that proxy, so every agent frame
 * passes the wire tap and every link can be delayed, stalled, cut or black-holed on its own.
 * Everything made is recorded as it is made, so `teardown` removes it even after a failure
 * half-way through.
 */
export async function startFaultCluster(o: ClusterOptions): Promise<FaultCluster> {
  const run = process.pid;
  mkdirSync(o.dir, { recursive: true });
  // Through the CLI, as an operator would: the image is built once per host (offline).
  const images = execFileSync(process.execPath, [CLI, 'image', 'ls'], { encoding: 'utf8' });
  if (!/^busybox\b/m.test(images)) execFileSync(process.execPath, [CLI, 'image', 'build', 'busybox'], { stdio: 'inherit' });
  const events: ProcEvent[] = [];
  const frames: WireFrame[] = [];
  const agents: AgentNode[] = [];
  const made: Netns[] = [];
  const data = new DataFs(join(o.dir, 'data'), o.dataBytes);
  const gatewayLog = join(o.dir, 'gateway.log');
  let gateway: Proc | undefined;
  const stop = async () => {
    await Promise.all(agents.map((a) => a.proc.stop(20_000)));
    await gateway?.stop(20_000);
  };
  const teardown = async () => {
    await stop();
    await Promise.all(agents.map((a) => a.proxy.close()));
    for (const ns of made) removeNetns(ns);
    data.unmount();
  };
  try {
    data.mount();
    const port = await freeLoopbackPort();
    const base = `http://127.0.0.1:${port}`;
    const gw = new Proc(
      'gateway',
      () => [process.execPath, CLI, 'gateway', '--data', data.dir, '--port', String(port), '--host', '127.0.0.1', '--lease-ms', String(o.leaseMs), '--drain-ms', '5000'],
      gatewayLog,
      events,
    );
    gateway = gw;
    gw.start();
    await until(async () => (await fetch(`${base}/healthz`)).ok, 30_000, 'the gateway to answer /healthz');
    const adminToken = readFileSync(join(data.dir, 'admin.token'), 'utf8').trim();
    const token = (args: string[]) => execFileSync(process.execPath, [CLI, 'token', '--data', data.dir, ...args], { encoding: 'utf8' }).trim();
    const admin = (method: string, path: string, body?: unknown) =>
      fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      });
    const connected = async () => ((await (await admin('GET', '/v1/agents')).json()) as { agents: Array<{ id: string }> }).agents.map((a) => a.id);

    for (let i = 1; i <= o.agents; i++) {
      const ns = createNetns(run, i);
      made.push(ns);
      const name = `flt${run}a${i}`;
      const proxy = new FaultProxy({ agent: name, listenHost: ns.hostIp, gatewayPort: port, onFrame: (f) => frames.push(f) });
      const proxyPort = await proxy.listen();
      const stateDir = join(o.dir, 'state', name);
      // An agent's name is bound to its token's subject.
      const agentToken = token(['--scope', 'agent', '--sub', `agent:${name}`, '--ttl', '1d']);
      const proc = new Proc(
        name,
        () => [
          'nsenter', `--net=/var/run/netns/${ns.name}`, process.execPath, CLI, 'agent',
          '--gateway', `ws://${ns.hostIp}:${proxyPort}`, '--token', agentToken, '--name', name, '--state-dir', stateDir,
          '--slots', String(o.slots), '--warm', String(o.warm ?? 2), '--kill-grace-ms', '500', '--images', 'busybox', '--drain-ms', '5000',
        ],
        join(o.dir, `${name}.log`),
        events,
      );
      agents.push({ name, ns, proxy, proc, stateDir });
    }
    // The first agent builds the container executor (gcc, ~10 s); the others start from a copy of it.
    const [first, ...rest] = agents;
    first!.proc.start();
    await until(async () => (await connected()).includes(first!.name), 120_000, `agent ${first!.name} to connect`);
    for (const a of rest) cpSync(join(first!.stateDir, 'bin'), join(a.stateDir, 'bin'), { recursive: true });
    for (const a of rest) a.proc.start();
    for (const a of rest) await until(async () => (await connected()).includes(a.name), 120_000, `agent ${a.name} to connect`);
    return { run, dir: o.dir, base, data, gateway: gw, agents, adminToken, gatewayLog, frames, events, token, admin, connected, stop, teardown };
  } catch (err) {
    await teardown().catch(() => undefined);
    throw err;
  }
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
    s.on('error', reject);
  });
}
