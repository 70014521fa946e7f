import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'sqlite',
  schema: './aggregator/store/schema.ts',
  out: './aggregator/store/migrations',
});
