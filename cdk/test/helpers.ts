import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp, BuiltApp } from '../lib/app';

/** A stub Lambda asset (a directory with a dummy `bootstrap`): the tests never build Rust. */
export function stubAssetDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'task-scheduler-stub-'));
  fs.writeFileSync(path.join(dir, 'bootstrap'), '#!/bin/sh\necho "stub bootstrap for CDK tests" >&2\nexit 1\n', {
    mode: 0o755,
  });
  return dir;
}

/** The feature flags of cdk.json, so that the tests synthesize exactly what `cdk synth` does. */
export function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8'));
  return cdkJson.context ?? {};
}

export interface Synthesized extends BuiltApp {
  readonly app: App;
  readonly template: Template;
}

/** Builds the app as bin/app.ts does, with a stub asset and extra context, and synthesizes it. */
export function synth(context: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = {}): Synthesized {
  const app = new App({
    context: { ...cdkJsonContext(), bootstrapDir: stubAssetDir(), ...context },
    outdir: fs.mkdtempSync(path.join(os.tmpdir(), 'task-scheduler-cdkout-')),
  });
  const built = buildApp(app, env);
  const template = Template.fromStack(built.stack);
  return { app, template, ...built };
}

/** All resources of a type, as [logicalId, resource] pairs. */
export function resourcesOfType(template: Template, type: string): [string, any][] {
  return Object.entries(template.findResources(type));
}

/** The one resource of a type. */
export function onlyResource(template: Template, type: string): [string, any] {
  const all = resourcesOfType(template, type);
  if (all.length !== 1) throw new Error(`expected one ${type}, found ${all.length}`);
  return all[0];
}

export interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: unknown;
}

/** The statements of every AWS::IAM::Policy attached to the role with this logical id. */
export function statementsOfRole(template: Template, roleLogicalId: string): Statement[] {
  return resourcesOfType(template, 'AWS::IAM::Policy')
    .filter(([, p]) => (p.Properties.Roles as any[]).some((r) => r.Ref === roleLogicalId))
    .flatMap(([, p]) => p.Properties.PolicyDocument.Statement as Statement[]);
}

export const asArray = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);
