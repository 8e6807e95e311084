import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { mintToken } from './auth/tokens.js';
import type { GatewayConfig } from './config.js';
import { writePrivateFile } from './datadir.js';
import { createApp } from './http/app.js';
import { answerClientError } from './http/client-error.js';
import { buildServices, type BuildOptions, type Services } from './services.js';

export interface Gateway {
  services: Services;
  server: Server;
  url: string;
  /** Set on the first start only: the admin token that was just written. */
  adminToken?: string;
  /** Starts a graceful shutdown: new submits, invokes and fires get 503; nothing new is placed. */
  refuseNewWork(): void;
  /**
   * `refuseNewWork()`, then waits until no attempt runs on any agent (each has ended and
   * reported) or `ms` (default: the drainMs setting) has passed. Reads are served meanwhile.
   */
  drain(ms?: number): Promise<void>;
  close(): Promise<void>;
}

/** How often a drain looks whether the last attempt has ended. */
/** How long requests under way may take to finish once the gateway closes. */
const CLOSE_GRACE_MS = 2000;
const DRAIN_POLL_MS = 50;

const ADMIN_TTL_SECONDS = 365 * 86400;

/** Mints the admin token on first start and writes it to $CORRAL_DATA/admin.token (0600). */
async function firstStartToken(s: Services): Promise<string | undefined> {
  const file = join(s.config.dataDir, 'admin.token');
  if (existsSync(file)) return undefined;
  const token = await mintToken({
    secret: s.secret,
    issuer: s.config.jwtIssuer,
    audience: s.config.jwtAudience,
    sub: 'admin',
    scopes: ['admin'],
    ttlSeconds: ADMIN_TTL_SECONDS,
  });
  writePrivateFile(file, token + '\n');
  return token;
}

/** Starts the gateway: HTTP API, agent hub and scheduler on one port. */
export async function startGateway(config: GatewayConfig, o: BuildOptions = {}): Promise<Gateway> {
  const services = buildServices(config, o);
  const adminToken = await firstStartToken(services);
  let draining = false;
  const app = createApp(services, { draining: () => draining });
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s as Server));
  });
  server.keepAliveTimeout = 65_000;
  server.on('clientError', answerClientError);
  services.machine.renewAll();
  services.hub.attach(server);
  services.scheduler.start();
  services.callbacks.deliverer.start();
  services.retention.start();
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  services.log.info({ url }, 'gateway listening');
  const running = () => services.hub.agents().reduce((n, a) => n + a.running.size, 0);
  const refuseNewWork = () => {
    if (draining) return;
    draining = true;
    // Queued jobs stay queued for the next start instead of starting now and making the drain longer.
    services.scheduler.stop();
    services.log.info({ running: running() }, 'draining: new work is refused');
  };
  return {
    services,
    server,
    url,
    ...(adminToken && { adminToken }),
    refuseNewWork,
    async drain(ms = config.drainMs) {
      refuseNewWork();
      const deadline = Date.now() + ms;
      while (running() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
      const left = running();
      if (left > 0) services.log.warn({ running: left, drainMs: ms }, 'drain timed out: attempts still running are re-run after the next start');
      else services.log.info('drained: no attempt is running');
    },
    async close() {
      services.scheduler.stop();
      // Before the store closes: tries under way are cut short and left pending for the next start.
      await services.callbacks.deliverer.stop();
      await services.retention.stop();
      await services.hub.close();
      // Requests under way get a moment to finish: a ?wait about the job that just ended is
      // answered once its end is on disk, which can be after the drain saw its slot come free.
      // Idle keep-alive connections close now; whatever still runs after the grace is cut.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      await closed;
      clearTimeout(grace);
      await services.store.close();
    },
  };
}
