import { createHash, randomBytes } from 'node:crypto';
import { and, asc, count, eq, sql } from 'drizzle-orm';
import type { Store } from '../db/open.js';
import { triggerDeliveries, triggers } from '../db/schema/index.js';
import { DomainError, LimitExceeded, NotFound, QuotaExceeded } from '../errors/domain.js';
import type { FunctionService } from '../functions/service.js';
import { ulid } from '../ids.js';
import type { Clock } from '../queue/machine.js';
import type { SecretBox } from '../secrets/box.js';
import { RateLimiter } from '../tenants/rate.js';
import type { TenantService } from '../tenants/service.js';
import { newSecret, secretBytes } from '../webhooks/signature.js';
import { MAX_TRIGGERS_PER_FUNCTION, PREVIOUS_SECRET_MS, type TriggerKind, type TriggerView, type TriggerWithSecret } from './schema.js';
import { fillerKey, githubOk, standardOk, validDeliveryId, type KeyPair } from './verify.js';

export type TriggerRow = typeof triggers.$inferSelect;

/** The answer to every fire that is not let in: unknown trigger, bad or missing signature, stale timestamp. */
export class BadSignature extends DomainError {
  constructor() {
    super('the signature is missing or not valid');
  }
}

/** A signed request to `POST /hooks/:id`, as received. */
export interface Fire {
  /** A request header by lower-case name. */
  header(name: string): string | undefined;
  /** The raw body bytes, exactly as signed. */
  body: Buffer;
}

/** Longest CORRAL_EVENT; longer event names are cut. */
const MAX_EVENT_LENGTH = 128;
const MAX_CONTENT_TYPE_BYTES = 1024;
/**
 * Delivery records are kept at least this long: senders retry a delivery for hours to days
 * (Standard Webhooks: ~1.5 days). The retention sweep (src/retention) removes older ones.
 */
export const DELIVERY_RETENTION_MS = 30 * 24 * 3600 * 1000;
/** Longest id looked up; a longer one cannot be a trigger's and is looked up as '' (same work, no row). */
const MAX_ID_LENGTH = 64;

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** An event name as a function may safely see it in its env: printable, no spaces, bounded. */
export function sanitizeEvent(raw: string): string {
  return raw.replace(/[^A-Za-z0-9._:/-]/g, '_').slice(0, MAX_EVENT_LENGTH);
}

/** A standard delivery's event: the JSON body's string `type`, if it is a JSON object that has one. */
function eventOfBody(body: Buffer): string {
  let i = 0;
  while (i < body.length && (body[i] === 0x20 || body[i] === 0x09 || body[i] === 0x0a || body[i] === 0x0d)) i++;
  if (body[i] !== 0x7b /* { */) return '';
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v) && typeof (v as { type?: unknown }).type === 'string') return sanitizeEvent((v as { type: string }).type);
  } catch {
    /* not JSON: no event */
  }
  return '';
}

function isConstraint(err: unknown, code: string): boolean {
  return (err as { code?: unknown } | null)?.code === code;
}

/**
 * A function's webhook triggers: creating, listing, rotating and deleting them, and turning a
 * signed request into a job. Secrets are sealed at rest (SecretBox, bound to `trigger:<id>`) and
 * shown only when created or rotated.
 */
export class TriggerService {
  private readonly q;
  private readonly fires = new RateLimiter();
  /** A sealed secret opened for unknown triggers and missing previous secrets, so every fire opens two. */
  private readonly filler: { sealed: string; context: string };

  constructor(
    private readonly store: Store,
    private readonly box: SecretBox,
    private readonly functions: FunctionService,
    private readonly tenants: TenantService,
    private readonly clock: Clock = Date.now,
  ) {
    const db = store.db;
    const p = (name: string) => sql.placeholder(name);
    this.q = {
      byId: db.select().from(triggers).where(eq(triggers.id, p('id'))).prepare(),
      mine: db
        .select()
        .from(triggers)
        .where(and(eq(triggers.id, p('id')), eq(triggers.tenant, p('tenant')), eq(triggers.function, p('fn'))))
        .prepare(),
      countOf: db.select({ n: count() }).from(triggers).where(and(eq(triggers.tenant, p('tenant')), eq(triggers.function, p('fn')))).prepare(),
      delivery: db
        .select({ jobId: triggerDeliveries.jobId })
        .from(triggerDeliveries)
        .where(and(eq(triggerDeliveries.triggerId, p('trigger')), eq(triggerDeliveries.deliveryId, p('delivery'))))
        .prepare(),
    };
    const context = 'trigger:filler';
    this.filler = { sealed: box.seal(newSecret(), context), context };
  }

  /** A new trigger on function `fn`; its secret is in this answer and nowhere else. */
  async create(tenant: string, fn: string, kind: TriggerKind, baseUrl: string): Promise<TriggerWithSecret> {
    this.functions.row(tenant, fn);
    const now = this.clock();
    const id = `trg_${ulid(now)}`;
    // GitHub uses the secret's text as the HMAC key: 32 random bytes as hex paste cleanly into its form.
    const secret = kind === 'github' ? randomBytes(32).toString('hex') : newSecret();
    const row: TriggerRow = { id, tenant, function: fn, kind, secretEnc: this.box.seal(secret, `trigger:${id}`), prevSecretEnc: null, prevExpiresAt: null, createdAt: now };
    await this.store.commit(() => {
      // Again inside the write: the function may have been deleted while this request waited.
      this.functions.row(tenant, fn);
      if (this.q.countOf.get({ tenant, fn })!.n >= MAX_TRIGGERS_PER_FUNCTION) {
        throw new LimitExceeded(`function ${fn} already has ${MAX_TRIGGERS_PER_FUNCTION} triggers`, 'function', 'triggers');
      }
      this.store.db.insert(triggers).values(row).run();
    });
    return { ...this.view(row, baseUrl), secret };
  }

  list(tenant: string, fn: string, baseUrl: string): TriggerView[] {
    this.functions.row(tenant, fn);
    const rows = this.store.db
      .select()
      .from(triggers)
      .where(and(eq(triggers.tenant, tenant), eq(triggers.function, fn)))
      .orderBy(asc(triggers.id))
      .all();
    return rows.map((r) => this.view(r, baseUrl));
  }

  get(tenant: string, fn: string, id: string, baseUrl: string): TriggerView {
    return this.view(this.row(tenant, fn, id), baseUrl);
  }

  async remove(tenant: string, fn: string, id: string): Promise<void> {
    this.row(tenant, fn, id);
    await this.store.commit(() => {
      const gone = this.store.db
        .delete(triggers)
        .where(and(eq(triggers.id, id), eq(triggers.tenant, tenant), eq(triggers.function, fn)))
        .run();
      if (gone.changes === 0) throw new NotFound(`trigger ${id} not found`, 'id');
    });
  }

  /**
   * A new secret for the trigger; the one it replaces still verifies for 24 hours, so a sender
   * can be switched over without dropping deliveries. Rotating again within those 24 hours ends
   * the oldest secret at once: only the current and the one before verify.
   */
  async rotate(tenant: string, fn: string, id: string, baseUrl: string): Promise<TriggerWithSecret> {
    const now = this.clock();
    let row!: TriggerRow;
    let secret!: string;
    await this.store.commit(() => {
      const was = this.row(tenant, fn, id);
      secret = was.kind === 'github' ? randomBytes(32).toString('hex') : newSecret();
      // The same context: a sealed value is bound to its trigger, and this one stays with it.
      row = { ...was, secretEnc: this.box.seal(secret, `trigger:${id}`), prevSecretEnc: was.secretEnc, prevExpiresAt: now + PREVIOUS_SECRET_MS };
      this.store.db.update(triggers).set({ secretEnc: row.secretEnc, prevSecretEnc: row.prevSecretEnc, prevExpiresAt: row.prevExpiresAt }).where(eq(triggers.id, id)).run();
    });
    return { ...this.view(row, baseUrl), secret };
  }

  /**
   * Verifies a fire and queues its job, or answers the job an earlier fire with the same delivery
   * id made. Throws BadSignature for an unknown trigger and for any signature failure alike,
   * after the same work in both cases: one lookup, two secrets opened, two HMACs over the body.
   */
  async fire(triggerId: string, req: Fire): Promise<{ jobId: string; replayed: boolean }> {
    const now = this.clock();
    const row = this.q.byId.get({ id: triggerId.length <= MAX_ID_LENGTH ? triggerId : '' });
    const githubHeader = req.header('x-hub-signature-256');
    const kind: TriggerKind = row?.kind ?? (githubHeader !== undefined && req.header('webhook-signature') === undefined ? 'github' : 'standard');
    const current = this.openOrFiller(row?.secretEnc, row?.id);
    const previous = this.openOrFiller(row?.prevSecretEnc ?? undefined, row?.id);
    const prevLive = row?.prevExpiresAt != null && now < row.prevExpiresAt;
    const keyOf = (secret: string) => (kind === 'github' ? Buffer.from(secret, 'utf8') : secretBytes(secret));
    const keys: KeyPair = [keyOf(current.secret), prevLive ? keyOf(previous.secret) : fillerKey()];
    const ok =
      kind === 'github'
        ? githubOk(keys, githubHeader, req.body)
        : standardOk(keys, { id: req.header('webhook-id'), timestamp: req.header('webhook-timestamp'), signature: req.header('webhook-signature') }, req.body, Math.floor(now / 1000));
    if (!row || !current.real || !ok) throw new BadSignature();

    const deliveryId = kind === 'github' ? req.header('x-github-delivery') : req.header('webhook-id');
    if (!validDeliveryId(deliveryId)) throw new DomainError('X-GitHub-Delivery must be 1 to 256 printable characters', 'x-github-delivery');
    // GitHub signs the body only: X-GitHub-Delivery is the sender's word, and a captured request
    // resent with fresh delivery ids would make new jobs. Such deliveries are told apart by what
    // is signed — the body's hash — so a replay answers the first job whatever id it carries.
    const dedupeKey = kind === 'github' ? `sha256:${createHash('sha256').update(req.body).digest('hex')}` : deliveryId;
    const prior = this.q.delivery.get({ trigger: row.id, delivery: dedupeKey });
    if (prior) return { jobId: prior.jobId, replayed: true };

    const quota = this.tenants.quota(row.tenant);
    if (quota.firesPerMinute !== null) {
      const r = this.fires.take(row.tenant, quota.firesPerMinute, now);
      if (!r.ok) throw new QuotaExceeded(`more than ${quota.firesPerMinute} trigger fires a minute`, 'firesPerMinute', r.retryAfter);
    }
    const event = kind === 'github' ? sanitizeEvent(req.header('x-github-event') ?? '') : eventOfBody(req.body);
    const type = req.header('content-type') ?? '';
    const contentType = Buffer.byteLength(type) <= MAX_CONTENT_TYPE_BYTES && /^[\x20-\x7e]*$/.test(type) ? type : '';
    try {
      const { job } = await this.functions.invoke(
        row.tenant,
        row.function,
        { stdin: req.body, contentType, query: '', env: { CORRAL_EVENT: event, CORRAL_DELIVERY_ID: deliveryId, CORRAL_TRIGGER_ID: row.id } },
        // In the job's own transaction: two fires of one delivery cannot both commit a job.
        { alsoWrite: (jobId, at) => this.store.db.insert(triggerDeliveries).values({ triggerId: row.id, deliveryId: dedupeKey, jobId, createdAt: at }).run() },
      );
      return { jobId: job.id, replayed: false };
    } catch (err) {
      if (isConstraint(err, 'SQLITE_CONSTRAINT_PRIMARYKEY')) {
        // The same delivery committed first from another request: answer its job.
        const won = this.q.delivery.get({ trigger: row.id, delivery: dedupeKey });
        if (won) return { jobId: won.jobId, replayed: true };
      }
      // The function (and so the trigger) was deleted while this fire was on its way.
      if (err instanceof NotFound || isConstraint(err, 'SQLITE_CONSTRAINT_FOREIGNKEY')) throw new BadSignature();
      throw err;
    }
  }

  /** Trigger `id` of `tenant`'s function `fn`; anything else (another tenant's too) is NotFound. */
  private row(tenant: string, fn: string, id: string): TriggerRow {
    this.functions.row(tenant, fn);
    const row = this.q.mine.get({ id, tenant, fn });
    if (!row) throw new NotFound(`trigger ${id} not found`, 'id');
    return row;
  }

  /** Opens a sealed secret, or the filler (same cost) when there is none or it does not open. */
  private openOrFiller(sealed: string | undefined, id: string | undefined): { secret: string; real: boolean } {
    try {
      if (sealed !== undefined && id !== undefined) return { secret: this.box.open(sealed, `trigger:${id}`), real: true };
    } catch {
      /* sealed under another key (a data directory restored without secrets.key): refused like a bad signature */
    }
    return { secret: this.box.open(this.filler.sealed, this.filler.context), real: false };
  }

  private view(r: TriggerRow, baseUrl: string): TriggerView {
    return {
      id: r.id,
      url: `${baseUrl}/hooks/${r.id}`,
      kind: r.kind,
      function: r.function,
      createdAt: iso(r.createdAt)!,
      rotatedAt: iso(r.prevExpiresAt === null ? null : r.prevExpiresAt - PREVIOUS_SECRET_MS),
      previousSecretExpiresAt: iso(r.prevExpiresAt),
    };
  }
}
