export const SCOPES = ['jobs:read', 'jobs:write', 'functions:read', 'functions:write', 'admin', 'agent'] as const;
export type Scope = (typeof SCOPES)[number];

/** Who is calling, from a verified token. Admin and agent tokens carry no tenant. */
export interface Principal {
  sub: string;
  tenant?: string;
  scopes: ReadonlySet<string>;
  expiresAt: number;
}

export function parseScopes(scope: string): Scope[] | undefined {
  const parts = scope.split(/\s+/).filter(Boolean);
  if (parts.length === 0) return undefined;
  return parts.every((p): p is Scope => (SCOPES as readonly string[]).includes(p)) ? (parts as Scope[]) : undefined;
}
