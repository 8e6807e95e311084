import { sqliteTable, text, integer } from 'drizzle-orm/sqlite-core';

/**
 * A tenant's callback signing secret (`GET /v1/callback-secret`), encrypted at rest like trigger
 * secrets; after a rotation the previous one also signs until `prevExpiresAt`. Written by the
 * callbacks module, created on first use.
 */
export const tenantSecrets = sqliteTable('tenant_secrets', {
  tenant: text('tenant').primaryKey(),
  callbackSecretEnc: text('callback_secret_enc').notNull(),
  prevCallbackSecretEnc: text('prev_callback_secret_enc'),
  prevExpiresAt: integer('prev_expires_at'),
});
