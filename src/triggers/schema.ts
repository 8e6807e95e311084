import { z } from '@hono/zod-openapi';

export const TRIGGER_KINDS = ['standard', 'github'] as const;
export type TriggerKind = (typeof TRIGGER_KINDS)[number];

/** A function may have this many triggers (one per sender, with room for a few). */
export const MAX_TRIGGERS_PER_FUNCTION = 20;
/** After a rotation the previous secret still verifies for this long. */
export const PREVIOUS_SECRET_MS = 24 * 3600 * 1000;

export const TriggerIdSchema = z
  .string()
  .regex(/^trg_[0-9A-Z]{26}$/, 'a trigger id is trg_ and 26 characters')
  .openapi({ example: 'trg_01J9Z8Q4W3X2V1T0S9R8Q7P6N5' });

export const TriggerRequestSchema = z
  .object({
    kind: z.enum(TRIGGER_KINDS).default('standard').openapi({
      description: '`standard`: Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature`). `github`: `X-Hub-Signature-256`.',
    }),
  })
  .strict()
  .openapi('TriggerRequest');

export const TriggerViewSchema = z
  .object({
    id: TriggerIdSchema,
    url: z.string().openapi({ description: 'Where the sender POSTs: `/hooks/:id` on the gateway', example: 'https://corral.example.com/hooks/trg_01J9Z8Q4W3X2V1T0S9R8Q7P6N5' }),
    kind: z.enum(TRIGGER_KINDS),
    function: z.string(),
    createdAt: z.string(),
    rotatedAt: z.string().nullable().openapi({ description: 'When the secret was last rotated' }),
    previousSecretExpiresAt: z.string().nullable().openapi({ description: 'Until when the secret before the last rotation still verifies' }),
  })
  .openapi('Trigger');
export type TriggerView = z.infer<typeof TriggerViewSchema>;

export const TriggerWithSecretSchema = TriggerViewSchema.extend({
  secret: z.string().openapi({
    description: 'Shown this once and never again: `whsec_…` (Standard Webhooks) or, for github, the text to paste as the webhook secret',
    example: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  }),
}).openapi('TriggerWithSecret');
export type TriggerWithSecret = z.infer<typeof TriggerWithSecretSchema>;
