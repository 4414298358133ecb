import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { CDK_DIR, DEFAULT_BOOTSTRAP_DIR, readConfig, resolveBootstrapDir } from '../lib/config';
import { stubAssetDir, synth } from './helpers';

const ctx = (values: Record<string, unknown>) => ({ tryGetContext: (k: string) => values[k] });

describe('configuration', () => {
  const bootstrapDir = stubAssetDir();

  test('defaults', () => {
    const c = readConfig(ctx({ bootstrapDir }), {});
    expect(c).toMatchObject({
      stackName: 'TaskScheduler',
      bootstrapDir,
      architecture: lambda.Architecture.ARM_64,
      destroyTable: false,
      alarmEmail: undefined,
      taskRetentionDays: 30,
      logRetentionDays: 30,
      apiRateLimit: 50,
      apiBurstLimit: 100,
      latenessAlarmMs: 5000,
      queueBatchSize: 10,
    });
  });

  test('the default asset is the output of make build-lambda, relative to cdk/', () => {
    expect(path.resolve(CDK_DIR, DEFAULT_BOOTSTRAP_DIR)).toBe(
      path.resolve(__dirname, '..', '..', 'target', 'lambda', 'task-scheduler'),
    );
  });

  test('stack name: context stackName, else env STACK_NAME, else TaskScheduler', () => {
    expect(readConfig(ctx({ bootstrapDir, stackName: 'FromContext' }), { STACK_NAME: 'FromEnv' }).stackName).toBe('FromContext');
    expect(readConfig(ctx({ bootstrapDir }), { STACK_NAME: 'FromEnv' }).stackName).toBe('FromEnv');
    expect(() => readConfig(ctx({ bootstrapDir, stackName: 'no_underscores' }), {})).toThrow(/stack name/);
  });

  test('the stack is named after it', () => {
    const { stack, template } = synth({ stackName: 'Staging-Tasks' });
    expect(stack.stackName).toBe('Staging-Tasks');
    template.resourceCountIs('AWS::Lambda::Function', 1);
  });

  test('arch', () => {
    expect(readConfig(ctx({ bootstrapDir, arch: 'x86_64' }), {}).architecture).toBe(lambda.Architecture.X86_64);
    expect(readConfig(ctx({ bootstrapDir, arch: 'arm64' }), {}).architecture).toBe(lambda.Architecture.ARM_64);
    expect(() => readConfig(ctx({ bootstrapDir, arch: 'sparc' }), {})).toThrow(/arm64 or x86_64/);
  });

  test('flags and numbers are validated', () => {
    expect(readConfig(ctx({ bootstrapDir, destroyTable: 'true' }), {}).destroyTable).toBe(true);
    expect(readConfig(ctx({ bootstrapDir, destroyTable: true }), {}).destroyTable).toBe(true);
    expect(readConfig(ctx({ bootstrapDir, destroyTable: 'false' }), {}).destroyTable).toBe(false);
    expect(() => readConfig(ctx({ bootstrapDir, destroyTable: 'maybe' }), {})).toThrow(/destroyTable/);
    expect(() => readConfig(ctx({ bootstrapDir, taskRetentionDays: '0' }), {})).toThrow(/taskRetentionDays/);
    expect(() => readConfig(ctx({ bootstrapDir, alarmEmail: 'not-an-address' }), {})).toThrow(/alarmEmail/);
    expect(() => readConfig(ctx({ bootstrapDir, queueBatchSize: '11' }), {})).toThrow(/queueBatchSize/);
    expect(() => synth({ logRetentionDays: '31' })).toThrow(/logRetentionDays/);
  });

  test('a missing binary is a clear message that names make build-lambda', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'no-bootstrap-'));
    expect(() => resolveBootstrapDir(empty)).toThrow(/make build-lambda/);
    expect(() => readConfig(ctx({ bootstrapDir: empty }), {})).toThrow(/bootstrap/);
  });
});
