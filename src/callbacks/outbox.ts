import type Database from 'better-sqlite3';
import type { CallbackState } from '../db/schema/callbacks.js';
import { ulid } from '../ids.js';
import type { JobMachine } from '../queue/machine.js';

/** A delivery the deliverer is about to try. */
export interface DueDelivery {
  id: string;
  jobId: string;
  tenant: string;
  url: string;
  tries: number;
  createdAt: number;
}

/** One try as `GET /v1/jobs/:id/deliveries` shows it. */
export interface TryRow {
  n: number;
  at: number;
  status: number | null;
  error: string | null;
  durationMs: number;
}

export interface DeliveryRow {
  id: string;
  url: string;
  state: CallbackState;
  tries: number;
  nextAt: number;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: number;
  updatedAt: number;
}

/** How a try ended, as the deliverer decided. */
export interface TryOutcome {
  at: number;
  durationMs: number;
  status: number | null;
  error: string | null;
  /** The delivery's state after this try; `pending` with `nextAt` for another try. */
  state: CallbackState;
  nextAt: number;
}

/**
 * The callback outbox's SQL, one statement per operation. A row is written in the transaction of
 * the job's end (`recordJobEnds`), so a job never ends without its delivery nor gets a delivery
 * for an end that rolled back.
 */
export class CallbackOutbox {
  private readonly q;

  constructor(private readonly db: Database.Database) {
    const p = (s: string) => db.prepare(s);
    this.q = {
      callbackUrl: p(`SELECT CASE WHEN memory IS NULL THEN json_extract(spec, '$.callbackUrl') ELSE callback_url END AS url FROM jobs WHERE id = ?`).pluck(),
      insert: p(
        `INSERT INTO callback_deliveries (id, job_id, tenant, url, state, tries, next_at, created_at, updated_at)
         VALUES (@id, @jobId, @tenant, @url, 'pending', 0, @now, @now, @now)`,
      ),
      due: p(
        // At most @perTenant of each tenant's due rows: one tenant's backlog (say to a receiver that
        // never answers) cannot fill the window and hide every other tenant's deliveries.
        `SELECT id, jobId, tenant, url, tries, createdAt FROM (
           SELECT id, job_id AS jobId, tenant, url, tries, created_at AS createdAt, next_at,
                  row_number() OVER (PARTITION BY tenant ORDER BY next_at) AS r
           FROM callback_deliveries WHERE state = 'pending' AND next_at <= @now)
         WHERE r <= @perTenant ORDER BY next_at LIMIT @limit`,
      ),
      lease: p(`UPDATE callback_deliveries SET next_at = @until WHERE id = @id AND state = 'pending'`),
      insertTry: p(
        `INSERT INTO callback_tries (delivery_id, n, at, status, error, duration_ms) VALUES (@id, @n, @at, @status, @error, @durationMs)`,
      ),
      update: p(
        `UPDATE callback_deliveries SET state = @state, tries = @n, next_at = @nextAt, last_status = @status, last_error = @error, updated_at = @at
         WHERE id = @id AND state = 'pending'`,
      ),
      ofJob: p(
        `SELECT id, url, state, tries, next_at AS nextAt, last_status AS lastStatus, last_error AS lastError, created_at AS createdAt, updated_at AS updatedAt
         FROM callback_deliveries WHERE job_id = ? ORDER BY created_at, id`,
      ),
      triesOf: p(`SELECT n, at, status, error, duration_ms AS durationMs FROM callback_tries WHERE delivery_id = ? ORDER BY n`),
    };
  }

  /** Adds a delivery in every final transition of a job that has a callbackUrl. */
  recordJobEnds(machine: JobMachine): void {
    machine.onJobEnd(({ jobId, tenant, now }) => {
      const url = this.q.callbackUrl.get(jobId) as string | null | undefined;
      if (!url) return;
      this.q.insert.run({ id: `cbd_${ulid(now)}`, jobId, tenant, url, now });
    });
  }

  /** Pending deliveries due at `now`, oldest due first. */
  due(now: number, limit: number, perTenant = limit): DueDelivery[] {
    return this.q.due.all({ now, limit, perTenant }) as DueDelivery[];
  }

  /**
   * Pushes a delivery's next try to `until` while one is under way, so that a gateway that dies
   * mid-try tries again after that, not at once and not never.
   */
  lease(id: string, until: number): void {
    this.q.lease.run({ id, until });
  }

  /** Records try `n` and the delivery's new state, in one transaction. */
  recordTry(id: string, n: number, o: TryOutcome): void {
    this.db.transaction(() => {
      this.q.insertTry.run({ id, n, at: o.at, status: o.status, error: o.error, durationMs: o.durationMs });
      this.q.update.run({ id, n, state: o.state, nextAt: o.nextAt, status: o.status, error: o.error, at: o.at });
    })();
  }

  /** A job's deliveries with their tries. */
  ofJob(jobId: string): Array<DeliveryRow & { triesList: TryRow[] }> {
    return (this.q.ofJob.all(jobId) as DeliveryRow[]).map((d) => ({ ...d, triesList: this.q.triesOf.all(d.id) as TryRow[] }));
  }
}
