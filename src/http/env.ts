import type { Logger } from 'pino';
import type { Principal } from '../auth/principal.js';
import type { Services } from '../services.js';

/** The one typed Hono environment every route and middleware shares. */
export interface AppEnv {
  Variables: {
    requestId: string;
    log: Logger;
    principal: Principal;
    services: Services;
  };
}
