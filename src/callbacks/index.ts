import type { Logger } from 'pino';
import type { GatewayConfig } from '../config.js';
import type { Store } from '../db/open.js';
import type { JobService } from '../jobs/service.js';
import type { JobMachine } from '../queue/machine.js';
import type { SecretBox } from '../secrets/box.js';
import { CallbackDeliverer, type DelivererOptions } from './deliverer.js';
import { CallbackOutbox } from './outbox.js';
import { CallbackSecrets } from './secrets.js';

/** Signed, durable job-end callbacks: the outbox rows, the tenants' secrets, and the loop that delivers. */
export interface Callbacks {
  outbox: CallbackOutbox;
  secrets: CallbackSecrets;
  deliverer: CallbackDeliverer;
}

/** Overrides for the deliverer (tests: clock, jitter, timeouts, schedule). */
export type CallbackTuning = Partial<Omit<DelivererOptions, 'outbox' | 'secrets' | 'jobView' | 'durable' | 'allowPrivate' | 'machine'>>;

/**
 * Wires callbacks into a gateway: every final transition of a job with a callbackUrl writes an
 * outbox row in its own transaction, and the deliverer (started with the gateway) works them.
 */
export function buildCallbacks(d: { config: GatewayConfig; store: Store; machine: JobMachine; jobs: JobService; box: SecretBox; clock?: (() => number) | undefined; log?: Logger }, tuning: CallbackTuning = {}): Callbacks {
  const outbox = new CallbackOutbox(d.store.sqlite);
  outbox.recordJobEnds(d.machine);
  const clock = tuning.clock ?? d.clock ?? Date.now;
  const secrets = new CallbackSecrets(d.store, d.box, clock);
  const deliverer = newDeliverer({ store: d.store, machine: d.machine, jobs: d.jobs, outbox, secrets, allowPrivate: d.config.callbackPrivate }, { clock, ...tuning });
  // The loop goes on after any error; the log is where one is seen.
  deliverer.on('callback:error', ({ error }) => d.log?.warn({ err: error.message }, 'callback deliverer'));
  return { outbox, secrets, deliverer };
}

/** A deliverer over an existing outbox (tests build their own with other tuning). */
export function newDeliverer(
  d: { store: Store; machine: JobMachine; jobs: JobService; outbox: CallbackOutbox; secrets: CallbackSecrets; allowPrivate: boolean },
  tuning: CallbackTuning = {},
): CallbackDeliverer {
  return new CallbackDeliverer({
    outbox: d.outbox,
    secrets: d.secrets,
    durable: d.store.durable,
    allowPrivate: d.allowPrivate,
    machine: d.machine,
    jobView: (tenant, jobId) => (d.jobs.callbackUrlOf(tenant, jobId) === undefined ? undefined : d.jobs.get(tenant, jobId)),
    ...tuning,
  });
}
