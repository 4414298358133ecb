import { App, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { AwsSolutionsChecks } from 'cdk-nag';
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

  test('exactly three acknowledgements, each scoped to one construct and with a real reason', () => {
    const { stack } = synth();
    const acks = stack.nagAcknowledgements;
    expect(acks.map((a) => [a.id.replace(/\[.*\]$/, '[…]'), a.path])).toEqual([
      ['AwsSolutions-IAM5[…]', 'TaskScheduler/FunctionRole'],
      ['AwsSolutions-SMG4', 'TaskScheduler/SigningSecret'],
      ['AwsSolutions-APIG4', 'TaskScheduler/HttpApi/GET--health'],
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

  test('the pack is registered on the app the way cdk-nag 3 requires', () => {
    const app = newApp();
    buildApp(app, {});
    // A second registration through the public API still works (it is a plain validation plugin).
    expect(() => Validations.of(app).addPlugins(new AwsSolutionsChecks(app))).not.toThrow();
  });
});
