import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Container tests share one LXC host; files run one at a time so limits and timings hold.
    fileParallelism: false,
  },
});
