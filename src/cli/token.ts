import { hostname } from 'node:os';
import { loadGatewayConfig, GATEWAY_FLAGS } from '../config.js';
import { loadOrCreateSecret } from '../auth/secret.js';
import { mintToken, parseTtl } from '../auth/tokens.js';
import { parseScopes } from '../auth/principal.js';
import { type Args, UsageError, onlyFlags, str } from './args.js';

export const TOKEN_HELP = `corral token --tenant ID --scope "jobs:read jobs:write" [--sub NAME] [--ttl 30d]
corral token --scope admin | --scope agent [--name AGENT]

Mints a token signed with the gateway's secret (CORRAL_JWT_SECRET, or the one in CORRAL_DATA).
Scopes: jobs:read jobs:write functions:read functions:write admin agent.
An agent token lets one agent name connect (its sub is agent:AGENT): --name, by default this
host's name (what corral agent calls itself without --name).`;

export async function tokenCommand(args: Args): Promise<void> {
  onlyFlags(args.flags, ['tenant', 'scope', 'sub', 'name', 'ttl', ...GATEWAY_FLAGS]);
  const config = loadGatewayConfig(args.flags);
  const scopeText = str(args.flags, 'scope');
  if (!scopeText) throw new UsageError('--scope is required');
  const scopes = parseScopes(scopeText);
  if (!scopes) throw new UsageError(`unknown scope in "${scopeText}"`);
  const tenant = str(args.flags, 'tenant');
  const tenantScoped = scopes.some((s) => s.startsWith('jobs:') || s.startsWith('functions:'));
  if (tenantScoped && !tenant) throw new UsageError('--tenant is required for jobs and functions scopes');
  const ttl = parseTtl(str(args.flags, 'ttl') ?? '30d');
  if (ttl === undefined) throw new UsageError('--ttl must look like 3600, 15m, 12h or 30d');
  const token = await mintToken({
    secret: loadOrCreateSecret(config.dataDir, config.jwtSecret),
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
    sub: str(args.flags, 'sub') ?? (scopes.includes('agent') ? `agent:${str(args.flags, 'name') ?? (hostname().split('.')[0] || 'agent')}` : tenant ? `${tenant}-cli` : scopes.join('-')),
    ...(tenant && { tenant }),
    scopes,
    ttlSeconds: ttl,
  });
  process.stdout.write(token + '\n');
}
