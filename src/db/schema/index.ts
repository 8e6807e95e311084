export { tenants } from './tenants.js';
export { jobs } from './jobs.js';
export { attempts } from './attempts.js';
export { output } from './output.js';
export { idempotencyKeys } from './idempotency.js';
