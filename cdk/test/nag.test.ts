import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { buildApp } from '../lib/app';
import { cdkJsonContext, stubAssetDir, synth } from './helpers';

function newApp(context: Record<string, unknown> = {}): App {
  return new App({ context: { ...cdkJsonContext(), bootstrapDir: stubAssetDir(), ...context } });
}

describe('cdk-nag AwsSolutions', () => {
  for (const [variant, context] of [
    ['default', {}],
    ['alarm e-mail, destroyTable, x86_64', { alarmEmail: 'ops@example.com', destroyTable: 'true', arch: 'x86_64' }],
  ] as const) {
    test(`${variant}: zero unacknowledged findings`, () => {
      const app = newApp(context);
      const { nag } = buildApp(app, {});
      const report = nag.validateScope(app);
      expect(report.violations.map((v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath)}`)).toEqual([]);
      expect(report.success).toBe(true);
      // And synthesis (which runs the same plugin) goes through.
      expect(() => app.synth()).not.toThrow();
    });
  }

  test('exactly four acknowledgements, each scoped to one construct and with a real reason', () => {
    const { stack } = synth();
    const acks = stack.nagAcknowledgements;
    expect(acks.map((a) => [a.id.replace(/\[.*\]$/, '[…]'), a.path])).toEqual([
      ['AwsSolutions-IAM5[…]', 'TaskScheduler/FunctionRole'],
      ['AwsSolutions-SMG4', 'TaskScheduler/SigningSecret'],
      ['AwsSolutions-APIG4', 'TaskScheduler/HttpApi/GET--health'],
      ['AwsSolutions-SQS3', 'TaskScheduler/FailedTasksQueue'],
    ]);
    expect(acks[0].id).toBe(
      'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:' +
        `schedule/${stack.scheduleGroup.scheduleGroupName}/*]`,
    );
    for (const ack of acks) expect(ack.reason.length).toBeGreaterThan(150);
  });

  test('the checks are live: a new wildcard permission is reported and fails synthesis', () => {
    const app = newApp();
    const { stack, nag } = buildApp(app, {});
    stack.functionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['dynamodb:*'], resources: [stack.table.tableArn] }),
    );
    const report = nag.validateScope(app);
    expect(report.success).toBe(false);
    expect(report.violations.map((v) => v.ruleName)).toContain('AwsSolutions-IAM5[Action::dynamodb:*]');
    expect(() => app.synth()).toThrow();
  });

  test('the pack is registered once, as a validation plugin: synthesis reports a finding once', () => {
    const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'task-scheduler-nag-'));
    const app = new App({ outdir, context: { ...cdkJsonContext(), bootstrapDir: stubAssetDir() } });
    const { stack } = buildApp(app, {});
    // Deliberately non-compliant: a queue that accepts plain HTTP (AwsSolutions-SQS4).
    new sqs.Queue(stack, 'PlainHttpQueue', { enforceSSL: false });
    // Synthesis itself runs the pack (cdk-nag 3 is a policy-validation plugin, not an aspect)...
    expect(() => app.synth()).toThrow(/AwsSolutions-SQS4/);
    // ...and the validation report it writes holds one AwsSolutions report, naming the queue once.
    const report = JSON.parse(fs.readFileSync(path.join(outdir, 'validation-report.json'), 'utf8'));
    const packs = report.pluginReports as { pluginName: string; violations: any[] }[];
    expect(packs.map((p) => p.pluginName)).toEqual(['AwsSolutions']);
    const sqs4 = packs[0].violations.filter((v) => v.ruleName === 'AwsSolutions-SQS4');
    expect(sqs4.flatMap((v) => v.violatingConstructs.map((c: any) => c.constructPath))).toEqual([
      'TaskScheduler/PlainHttpQueue/Resource',
    ]);
  });
});
