import type { App } from 'aws-cdk-lib';
import type { AwsSolutionsChecks } from 'cdk-nag';
import { readConfig, TaskSchedulerConfig } from './config';
import { addNagChecks } from './nag';
import { TaskSchedulerStack } from './task-scheduler-stack';

export interface BuiltApp {
  readonly config: TaskSchedulerConfig;
  readonly stack: TaskSchedulerStack;
  readonly nag: AwsSolutionsChecks;
}

/**
 * Builds the whole app from CDK context and the environment: the one stack and the cdk-nag
 * AwsSolutions checks (synthesis fails on any unacknowledged finding). bin/app.ts and the
 * tests go through this same function.
 */
export function buildApp(app: App, env: NodeJS.ProcessEnv = process.env): BuiltApp {
  const config = readConfig(app.node, env);
  // Environment-agnostic on purpose: `cdk synth` needs no credentials and no network, and
  // `cdk deploy` targets the account and region of the caller (AWS_PROFILE / AWS_REGION).
  const stack = new TaskSchedulerStack(app, config.stackName, {
    stackName: config.stackName,
    bootstrapDir: config.bootstrapDir,
    architecture: config.architecture,
    destroyTable: config.destroyTable,
    alarmEmail: config.alarmEmail,
    taskRetentionDays: config.taskRetentionDays,
    logRetentionDays: config.logRetentionDays,
    apiRateLimit: config.apiRateLimit,
    apiBurstLimit: config.apiBurstLimit,
    latenessAlarmMs: config.latenessAlarmMs,
    queueBatchSize: config.queueBatchSize,
    queueMaxConcurrency: config.queueMaxConcurrency,
    reservedConcurrency: config.reservedConcurrency,
  });
  const nag = addNagChecks(app);
  return { config, stack, nag };
}
