import { sqliteTable, text, integer } from 'drizzle-orm/sqlite-core';

/** An isolated account; its quota is stored as the admin set it (unset fields take defaults). */
export const tenants = sqliteTable('tenants', {
  id: text('id').primaryKey(),
  quota: text('quota', { mode: 'json' }).$type<Record<string, number | null>>().notNull().default({}),
  createdAt: integer('created_at').notNull(),
});
