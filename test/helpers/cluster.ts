import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startAgent, type Agent } from '../../agent/agent.js';
import { loadAgentConfig } from '../../agent/config.js';
import { buildBusybox, listImages } from '../../agent/lxc/images.js';
import { mintToken } from '../../src/auth/tokens.js';
import { loadGatewayConfig } from '../../src/config.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import type { JobView } from '../../src/jobs/view.js';

export interface Cluster {
  gateway: Gateway;
  url: string;
  agents: Map<string, Agent>;
  /** A token for the agent named `name` (agent tokens are bound to one name). */
  agentToken(name: string): Promise<string>;
  addAgent(name: string, flags?: Record<string, string>): Promise<Agent>;
  tenant(id: string, quota?: Record<string, number>): Promise<Client>;
  /** Mints a token on the gateway's secret (functions or admin scopes, for example). */
  token(o: { sub?: string; tenant?: string; scopes: Scope[] }): Promise<string>;
  stop(): Promise<void>;
}

export interface Client {
  token: string;
  submit(body: Record<string, unknown>, wait?: number): Promise<{ status: number; job: JobView }>;
  get(id: string): Promise<JobView>;
  output(id: string, stream?: 'stdout' | 'stderr'): Promise<string>;
  /** Polls until the job is in a final state (or `ms` pass). */
  until(id: string, ms?: number): Promise<JobView>;
  request(method: string, path: string, body?: unknown): Promise<Response>;
}

type Scope = 'agent' | 'admin' | 'jobs:read' | 'jobs:write' | 'functions:read' | 'functions:write';

const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);
const quiet = pino({ level: process.env.CORRAL_TEST_LOG ?? 'silent' });

/** Makes sure the busybox image exists on this host (built offline, once). */
export async function ensureBusybox(): Promise<void> {
  const host = { lxcPath: '/var/lib/lxc', idmapBase: 1_000_000 };
  if (!(await listImages(host)).includes('busybox')) await buildBusybox(host);
}

/** A real gateway on a loopback port with real agents (real LXC) dialling it over WebSocket. */
export async function startCluster(o: { agents?: string[]; agentFlags?: Record<string, string>; leaseMs?: number } = {}): Promise<Cluster> {
  await ensureBusybox();
  const dir = mkdtempSync(join(tmpdir(), 'corral-cluster-'));
  const config = loadGatewayConfig({}, { CORRAL_DATA: dir, CORRAL_PORT: '0', CORRAL_LEASE_MS: String(o.leaseMs ?? 3000), CORRAL_LOG_LEVEL: 'silent' });
  const gateway = await startGateway(config, { backoffBaseMs: 100, log: quiet });
  const url = gateway.url;
  const sign = (t: { sub: string; tenant?: string; scopes: Scope[] }) =>
    mintToken({ secret: gateway.services.secret, issuer: 'corral', audience: 'corral', ttlSeconds: 3600, ...t });
  const agentToken = (name: string) => sign({ sub: `agent:${name}`, scopes: ['agent'] });
  const agents = new Map<string, Agent>();

  const cluster: Cluster = {
    gateway,
    url,
    agents,
    agentToken,
    async addAgent(name, flags = {}) {
      const agent = await startAgent(
        loadAgentConfig({ gateway: url.replace('http', 'ws'), token: await agentToken(name), name, slots: '4', warm: '1', 'kill-grace-ms': '500', images: 'busybox', ...o.agentFlags, ...flags }, {}),
        quiet,
      );
      agents.set(name, agent);
      await until(() => gateway.services.hub.agents().some((a) => a.id === name), 10_000);
      return agent;
    },
    token: (t) => sign({ sub: 'test', ...t }),
    async tenant(id, quota) {
      await gateway.services.tenants.create(id, quota ?? {});
      const token = await sign({ sub: `${id}-test`, tenant: id, scopes: ['jobs:read', 'jobs:write'] });
      const request = (method: string, path: string, body?: unknown) =>
        fetch(url + path, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
          ...(body !== undefined && { body: JSON.stringify(body) }),
        });
      const client: Client = {
        token,
        request,
        async submit(body, wait) {
          const res = await request('POST', `/v1/jobs${wait ? `?wait=${wait}` : ''}`, body);
          return { status: res.status, job: (await res.json()) as JobView };
        },
        async get(id) {
          return (await (await request('GET', `/v1/jobs/${id}`)).json()) as JobView;
        },
        async output(id, stream) {
          return (await request('GET', `/v1/jobs/${id}/output${stream ? `?stream=${stream}` : ''}`)).text();
        },
        async until(id, ms = 60_000) {
          let job = await client.get(id);
          const deadline = Date.now() + ms;
          while (!FINAL.has(job.state) && Date.now() < deadline) {
            const res = await request('GET', `/v1/jobs/${id}?wait=${Math.min(10, Math.ceil((deadline - Date.now()) / 1000))}`);
            job = (await res.json()) as JobView;
          }
          return job;
        },
      };
      return client;
    },
    async stop() {
      await Promise.all([...agents.values()].map((a) => a.stop()));
      await gateway.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  for (const name of o.agents ?? ['t1']) await cluster.addAgent(name);
  return cluster;
}

export async function until(check: () => boolean | Promise<boolean>, ms: number, stepMs = 20): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
