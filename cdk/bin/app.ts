#!/usr/bin/env node
// Entry point of the CDK app (cdk.json: "npx tsx bin/app.ts"). Context flags: see README.md.
import { App } from 'aws-cdk-lib';
import { buildApp } from '../lib/app';

try {
  buildApp(new App());
} catch (err) {
  // Configuration mistakes (no binary, a bad flag) deserve one clear line, not a stack trace.
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
