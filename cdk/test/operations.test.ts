import { Match } from 'aws-cdk-lib/assertions';
import functionMetrics from '../../shared/metrics.json';
import { onlyResource, resourcesOfType, synth } from './helpers';

// The function's metrics, as shared/metrics.json lists them (shared/src/metrics.rs is tested
// against the same file).
const NAMESPACE = functionMetrics.namespace;
const metricNamed = (name: string) => {
  const metric = functionMetrics.metrics.find((m) => m.name === name);
  if (!metric) throw new Error(`${name} is not in shared/metrics.json`);
  return metric.name;
};

/** The dashboard body with its CloudFormation intrinsics flattened into one string. */
function dashboardBody(template: any): string {
  const [, dashboard] = onlyResource(template, 'AWS::CloudWatch::Dashboard');
  const body = dashboard.Properties.DashboardBody;
  return typeof body === 'string'
    ? body
    : (body['Fn::Join'][1] as unknown[]).map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join('');
}

describe('task-scheduler stack: operations', () => {
  const { template, stack } = synth();
  const id = (c: { node: { defaultChild?: unknown } }) => stack.getLogicalId(c.node.defaultChild as never);

  test('dashboard: tasks, lateness p50/p99, DLQ depth, function errors/throttles/duration, Scheduler errors', () => {
    const body = dashboardBody(template);
    // Every metric of the list is on the dashboard, and no other name from the function's namespace.
    const shown = [...body.matchAll(new RegExp(`\\["${NAMESPACE}","([A-Za-z]+)"`, 'g'))].map((m) => m[1]);
    expect([...new Set(shown)].sort()).toEqual(functionMetrics.metrics.map((m) => m.name).sort());
    for (const metric of functionMetrics.metrics.filter((m) => m.unit === 'Count')) {
      expect(body).toContain(`["${NAMESPACE}","${metric.name}",{"label":"${metric.label}","stat":"Sum"}]`);
    }
    expect(body).toContain('"stat":"p50"');
    expect(body).toContain('"stat":"p99"');
    expect(body).toContain('"ApproximateNumberOfMessagesVisible"');
    for (const metric of ['Errors', 'Throttles', 'Duration', 'Invocations']) {
      expect(body).toContain(`["AWS/Lambda","${metric}"`);
    }
    expect(body).toContain('["AWS/Scheduler","TargetErrorCount","ScheduleGroup"');
    expect(body).toContain('["AWS/Scheduler","InvocationsSentToDeadLetterCount","ScheduleGroup"');
    expect(body).toContain('["AWS/Scheduler","InvocationsFailedToBeSentToDeadLetterCount","ScheduleGroup"');
    // Both dead-letter queues: the infrastructure DLQ and the customers' failed tasks.
    for (const queue of [stack.deadLetterQueue, stack.failedTasksQueue]) {
      const queueName = JSON.stringify({ 'Fn::GetAtt': [id(queue), 'QueueName'] });
      expect(body).toContain(`["AWS/SQS","ApproximateNumberOfMessagesVisible","QueueName","${queueName}"`);
    }
    // The function's own metrics carry no dimensions.
    expect(body).not.toMatch(new RegExp(`\\["${NAMESPACE}","[A-Za-z]+","`));
  });

  test('the dashboard name carries the region (dashboards are global to an account)', () => {
    const [, dashboard] = onlyResource(template, 'AWS::CloudWatch::Dashboard');
    expect(dashboard.Properties.DashboardName).toEqual({ 'Fn::Join': ['', ['TaskScheduler-', { Ref: 'AWS::Region' }]] });
    // The console link in the outputs points at that name.
    const [dashboardId] = onlyResource(template, 'AWS::CloudWatch::Dashboard');
    expect(JSON.stringify(template.toJSON().Outputs.DashboardUrl.Value)).toContain(`"#dashboards:name=",{"Ref":"${dashboardId}"}`);
  });

  const alarmOf = (namespace: string, metricName: string) => {
    const found = resourcesOfType(template, 'AWS::CloudWatch::Alarm').filter(
      ([, a]) => a.Properties.Namespace === namespace && a.Properties.MetricName === metricName,
    );
    expect(found).toHaveLength(1);
    return found[0][1].Properties;
  };
  const groupDimension = () => [{ Name: 'ScheduleGroup', Value: stack.scheduleGroup.scheduleGroupName }];

  test.each(['InvocationDroppedCount', 'InvocationsFailedToBeSentToDeadLetterCount'])(
    'alarm: Scheduler %s, any one (a wake-up gone without a trace)',
    (metricName) => {
      expect(alarmOf('AWS/Scheduler', metricName)).toMatchObject({
        Dimensions: groupDimension(),
        Statistic: 'Sum',
        Period: 300,
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        EvaluationPeriods: 1,
        TreatMissingData: 'notBreaching',
      });
    },
  );

  test('alarm: function throttles in 3 consecutive 5-minute periods', () => {
    expect(alarmOf('AWS/Lambda', 'Throttles')).toMatchObject({
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: id(stack.fn) } }],
      Statistic: 'Sum',
      Period: 300,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      EvaluationPeriods: 3,
      DatapointsToAlarm: 3,
      TreatMissingData: 'notBreaching',
    });
  });

  test("alarm: the delay queue's oldest message is over 30 minutes old", () => {
    expect(alarmOf('AWS/SQS', 'ApproximateAgeOfOldestMessage')).toMatchObject({
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [id(stack.delayQueue), 'QueueName'] } }],
      Statistic: 'Maximum',
      Threshold: 1800,
      ComparisonOperator: 'GreaterThanThreshold',
      EvaluationPeriods: 1,
    });
  });

  test('alarm: the sweeper re-armed any task (> 0 in 5 minutes: a wake-up was lost)', () => {
    expect(alarmOf(NAMESPACE, metricNamed('TasksRecovered'))).toEqual({
      AlarmDescription: expect.stringContaining('sweeper re-armed'),
      Namespace: NAMESPACE,
      MetricName: 'TasksRecovered',
      Statistic: 'Sum',
      Period: 300,
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
      EvaluationPeriods: 1,
      TreatMissingData: 'notBreaching',
    });
  });

  test("alarm: the sweeper's schedule made no invocation attempt in 10 minutes (missing data breaches)", () => {
    expect(alarmOf('AWS/Scheduler', 'InvocationAttemptCount')).toMatchObject({
      Dimensions: [{ Name: 'ScheduleGroup', Value: stack.sweepScheduleGroup.scheduleGroupName }],
      Statistic: 'Sum',
      Period: 300,
      Threshold: 1,
      ComparisonOperator: 'LessThanThreshold',
      EvaluationPeriods: 2,
      DatapointsToAlarm: 2,
      TreatMissingData: 'breaching',
    });
  });

  test('dashboard: the sweeper, re-arms and sweeps, and both its alarms in the status widget', () => {
    const body = dashboardBody(template);
    expect(body).toContain(`["${NAMESPACE}","TasksRecovered",{"label":"re-armed by the sweeper","stat":"Sum"}]`);
    expect(body).toContain(`["AWS/Scheduler","InvocationAttemptCount","ScheduleGroup","${stack.sweepScheduleGroup.scheduleGroupName}"`);
    for (const alarm of [stack.operations.tasksRecoveredAlarm, stack.operations.sweeperNotRunningAlarm]) {
      expect(body).toContain(JSON.stringify({ 'Fn::GetAtt': [id(alarm), 'Arn'] }));
    }
  });

  test("no alarm on the failed-tasks queue: a customer's failing webhook does not page", () => {
    const failed = JSON.stringify({ 'Fn::GetAtt': [id(stack.failedTasksQueue), 'QueueName'] });
    for (const [, alarm] of resourcesOfType(template, 'AWS::CloudWatch::Alarm')) {
      expect(JSON.stringify(alarm.Properties.Dimensions ?? [])).not.toContain(failed);
    }
  });

  test('alarm: the DLQ holds any message', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [id(stack.deadLetterQueue), 'QueueName'] } }],
      Statistic: 'Maximum',
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      EvaluationPeriods: 1,
    });
  });

  test('alarm: function errors', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/Lambda',
      MetricName: 'Errors',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: id(stack.fn) } }],
      Statistic: 'Sum',
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  });

  test('alarm: p99 delivery lateness, from the function metric without dimensions', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: NAMESPACE,
      MetricName: metricNamed('DeliveryLatenessMs'),
      ExtendedStatistic: 'p99',
      Dimensions: Match.absent(),
      Threshold: 5000,
      ComparisonOperator: 'GreaterThanThreshold',
      EvaluationPeriods: 3,
      DatapointsToAlarm: 3,
      TreatMissingData: 'notBreaching',
    });
    synth({ latenessAlarmMs: '2000' }).template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: metricNamed('DeliveryLatenessMs'),
      Threshold: 2000,
    });
  });

  test('without alarmEmail: no topic, alarms without actions', () => {
    template.resourceCountIs('AWS::SNS::Topic', 0);
    template.resourceCountIs('AWS::KMS::Key', 0);
    for (const [, alarm] of resourcesOfType(template, 'AWS::CloudWatch::Alarm')) {
      expect(alarm.Properties.AlarmActions).toBeUndefined();
    }
  });

  describe('with alarmEmail', () => {
    const { template: t, stack: s } = synth({ alarmEmail: 'ops@example.com' });
    const topicId = s.getLogicalId(s.operations.alarmTopic!.node.defaultChild as never);
    const keyId = s.getLogicalId(s.operations.alarmTopicKey!.node.defaultChild as never);

    test('an encrypted topic (customer key, rotated) with the e-mail subscriber, TLS only', () => {
      t.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: { 'Fn::GetAtt': [keyId, 'Arn'] } });
      t.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
      t.hasResourceProperties('AWS::SNS::Subscription', {
        Protocol: 'email',
        Endpoint: 'ops@example.com',
        TopicArn: { Ref: topicId },
      });
      t.hasResourceProperties('AWS::SNS::TopicPolicy', {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    });

    test('the key lets CloudWatch (this account) publish encrypted alarms', () => {
      t.hasResourceProperties('AWS::KMS::Key', {
        KeyPolicy: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Principal: { Service: 'cloudwatch.amazonaws.com' },
              Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
              Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
            }),
          ]),
        },
      });
    });

    test('the topic policy lets CloudWatch (this account) publish, since it replaces the default policy', () => {
      const [, policy] = onlyResource(t, 'AWS::SNS::TopicPolicy');
      expect(policy.Properties.Topics).toEqual([{ Ref: topicId }]);
      expect(policy.Properties.PolicyDocument.Statement).toContainEqual({
        Sid: 'AllowCloudWatchAlarmsToPublish',
        Effect: 'Allow',
        Principal: { Service: 'cloudwatch.amazonaws.com' },
        Action: 'sns:Publish',
        Resource: { Ref: topicId },
        Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
      });
    });

    test('every alarm notifies the topic on ALARM and OK', () => {
      const alarms = resourcesOfType(t, 'AWS::CloudWatch::Alarm');
      expect(alarms).toHaveLength(9);
      for (const [, alarm] of alarms) {
        expect(alarm.Properties.AlarmActions).toEqual([{ Ref: topicId }]);
        expect(alarm.Properties.OKActions).toEqual([{ Ref: topicId }]);
      }
    });
  });
});
