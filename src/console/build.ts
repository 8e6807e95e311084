import { build } from 'esbuild';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';

/**
 * Bundles the browser console (src/console/app) into dist/console/app.js and app.css: Preact, htm
 * and uPlot are inlined so the page needs nothing from outside the gateway. Run by `npm run build`
 * after tsc (`node dist/src/console/build.js`); the app's types are checked by `tsc -p src/console/app` in the same script.
 */
export async function buildConsole(root = packageRoot()): Promise<void> {
  await build({
    entryPoints: { app: join(root, 'src/console/app/main.ts') },
    outdir: join(root, 'dist/console'),
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2022'],
    legalComments: 'none',
    logLevel: 'warning',
  });
}

await buildConsole();
