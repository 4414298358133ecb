import * as fs from 'fs';
import * as path from 'path';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type { Node } from 'constructs';

/** Directory of the CDK app (cdk/); relative paths in context are resolved against it. */
export const CDK_DIR = path.resolve(__dirname, '..');

/** Where `make build-lambda` leaves the Rust binary, relative to cdk/. */
export const DEFAULT_BOOTSTRAP_DIR = '../target/lambda/task-scheduler';

export const DEFAULT_STACK_NAME = 'TaskScheduler';

/** Everything the stack can be told from the outside (CDK context, a few env vars). */
export interface TaskSchedulerConfig {
  /** CloudFormation stack name: context `stackName`, else env `STACK_NAME`, else `TaskScheduler`. */
  readonly stackName: string;
  /** Absolute path of a directory holding the `bootstrap` executable. */
  readonly bootstrapDir: string;
  /** Lambda architecture: context `arch` = `arm64` (default) | `x86_64`. */
  readonly architecture: lambda.Architecture;
  /** Context `destroyTable=true`: delete the table (and drop deletion protection) with the stack. */
  readonly destroyTable: boolean;
  /** Context `alarmEmail`: when set, alarms notify an (encrypted) SNS topic with this subscriber. */
  readonly alarmEmail?: string;
  /** Context `taskRetentionDays` (default 30): TTL of finished tasks, passed to the function. */
  readonly taskRetentionDays: number;
  /** Context `logRetentionDays` (default 30): retention of the function's and the API's logs. */
  readonly logRetentionDays: number;
  /** Context `apiRateLimit` / `apiBurstLimit` (defaults 50 / 100): stage throttling. */
  readonly apiRateLimit: number;
  readonly apiBurstLimit: number;
  /** Context `latenessAlarmMs` (default 5000): p99 delivery lateness that raises the alarm. */
  readonly latenessAlarmMs: number;
  /** Context `queueBatchSize` (default 10, 1..10): delay-queue records per invocation. */
  readonly queueBatchSize: number;
  /** Context `queueMaxConcurrency` (default 10, 2..1000): the delay-queue event source's maximum concurrency. */
  readonly queueMaxConcurrency: number;
  /** Context `reservedConcurrency` (default none, 1..10000): the function's reserved concurrency. */
  readonly reservedConcurrency?: number;
}

type ContextReader = Pick<Node, 'tryGetContext'>;

function str(node: ContextReader, key: string): string | undefined {
  const v: unknown = node.tryGetContext(key);
  if (v === undefined || v === null || v === '') return undefined;
  return String(v);
}

function bool(node: ContextReader, key: string): boolean {
  const v = str(node, key);
  if (v === undefined) return false;
  if (['true', '1', 'yes'].includes(v.toLowerCase())) return true;
  if (['false', '0', 'no'].includes(v.toLowerCase())) return false;
  throw new Error(`context ${key}: expected true or false, got '${v}'`);
}

function int(node: ContextReader, key: string, dflt: number, min: number, max: number): number {
  const v = str(node, key);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`context ${key}: expected an integer in ${min}..${max}, got '${v}'`);
  }
  return n;
}

export function parseArchitecture(v: string | undefined): lambda.Architecture {
  switch (v ?? 'arm64') {
    case 'arm64':
    case 'aarch64':
      return lambda.Architecture.ARM_64;
    case 'x86_64':
    case 'amd64':
      return lambda.Architecture.X86_64;
    default:
      throw new Error(`context arch: expected arm64 or x86_64, got '${v}'`);
  }
}

/**
 * Resolves the asset directory and checks that it holds the binary, so that a missing
 * `make build-lambda` is a clear message rather than an opaque asset error.
 */
export function resolveBootstrapDir(dir: string | undefined): string {
  const abs = path.resolve(CDK_DIR, dir ?? DEFAULT_BOOTSTRAP_DIR);
  const bin = path.join(abs, 'bootstrap');
  if (!fs.existsSync(bin) || !fs.statSync(bin).isFile()) {
    throw new Error(
      `no Lambda binary at ${bin}: run 'make build-lambda' (or pass -c bootstrapDir=DIR ` +
        'pointing at a directory that contains a file named bootstrap)',
    );
  }
  return abs;
}

/** Reads the configuration from CDK context (`-c key=value` or cdk.json) and the environment. */
export function readConfig(node: ContextReader, env: NodeJS.ProcessEnv = process.env): TaskSchedulerConfig {
  const stackName = str(node, 'stackName') ?? (env.STACK_NAME || undefined) ?? DEFAULT_STACK_NAME;
  if (!/^[A-Za-z][A-Za-z0-9-]{0,127}$/.test(stackName)) {
    throw new Error(`stack name '${stackName}' is not a valid CloudFormation stack name`);
  }
  const alarmEmail = str(node, 'alarmEmail');
  if (alarmEmail !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(alarmEmail)) {
    throw new Error(`context alarmEmail: '${alarmEmail}' is not an e-mail address`);
  }
  return {
    stackName,
    bootstrapDir: resolveBootstrapDir(str(node, 'bootstrapDir')),
    architecture: parseArchitecture(str(node, 'arch')),
    destroyTable: bool(node, 'destroyTable'),
    alarmEmail,
    taskRetentionDays: int(node, 'taskRetentionDays', 30, 1, 3650),
    logRetentionDays: int(node, 'logRetentionDays', 30, 1, 3653),
    apiRateLimit: int(node, 'apiRateLimit', 50, 1, 10000),
    apiBurstLimit: int(node, 'apiBurstLimit', 100, 1, 5000),
    latenessAlarmMs: int(node, 'latenessAlarmMs', 5000, 100, 3600000),
    queueBatchSize: int(node, 'queueBatchSize', 10, 1, 10),
    queueMaxConcurrency: int(node, 'queueMaxConcurrency', 10, 2, 1000),
    reservedConcurrency: str(node, 'reservedConcurrency') === undefined ? undefined : int(node, 'reservedConcurrency', 0, 1, 10000),
  };
}
