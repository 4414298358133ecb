import { Match } from 'aws-cdk-lib/assertions';
import { DELAY_QUEUE_MAX_RECEIVES, DELAY_QUEUE_VISIBILITY, FUNCTION_TIMEOUT, PENDING_INDEX } from '../lib/task-scheduler-stack';
import { onlyResource, resourcesOfType, synth } from './helpers';

describe('task-scheduler stack: resources', () => {
  const { template, stack } = synth();
  const id = (c: { node: { defaultChild?: unknown } }) => stack.getLogicalId(c.node.defaultChild as never);
  const tableId = id(stack.table);
  const dlqId = id(stack.deadLetterQueue);
  const failedId = id(stack.failedTasksQueue);
  const delayId = id(stack.delayQueue);
  const fnId = id(stack.fn);

  test('the expected resource types and counts, and not one EventBridge rule', () => {
    const counts: Record<string, number> = {};
    for (const r of Object.values(template.toJSON().Resources) as any[]) counts[r.Type] = (counts[r.Type] ?? 0) + 1;
    expect(counts).toEqual({
      'AWS::DynamoDB::Table': 1,
      'AWS::SQS::Queue': 3,
      'AWS::SQS::QueuePolicy': 3,
      'AWS::SecretsManager::Secret': 1,
      'AWS::Scheduler::ScheduleGroup': 2,
      'AWS::Scheduler::Schedule': 1,
      'AWS::IAM::Role': 2,
      'AWS::IAM::Policy': 2,
      'AWS::Logs::LogGroup': 2,
      'AWS::Lambda::Function': 1,
      'AWS::Lambda::EventInvokeConfig': 1,
      'AWS::Lambda::EventSourceMapping': 1,
      'AWS::Lambda::Permission': 16,
      'AWS::ApiGatewayV2::Api': 1,
      'AWS::ApiGatewayV2::Integration': 1,
      'AWS::ApiGatewayV2::Route': 16,
      'AWS::ApiGatewayV2::Stage': 1,
      'AWS::CloudWatch::Alarm': 9,
      'AWS::CloudWatch::Dashboard': 1,
    });
    // (`cdk synth` adds one AWS::CDK::Metadata resource on top: 66 in the template.)
    template.resourceCountIs('AWS::Events::Rule', 0);
    // The one schedule CDK creates is the sweeper's; wake-ups are created at run time.
  });

  describe('table', () => {
    test('pk only, on-demand, PITR, AWS-managed KMS encryption, TTL on expires_at', () => {
      template.hasResourceProperties('AWS::DynamoDB::Table', {
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        // SSEEnabled without a key id = KMS with the AWS-managed key aws/dynamodb.
        SSESpecification: Match.objectEquals({ SSEEnabled: true }),
        TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
      });
    });

    test("the three GSIs the store lists with (by_schedule sparse), projection ALL, and the sweeper's sparse pending index, KEYS_ONLY", () => {
      const [, table] = onlyResource(template, 'AWS::DynamoDB::Table');
      expect(table.Properties.GlobalSecondaryIndexes).toEqual([
        {
          IndexName: 'by_owner',
          KeySchema: [
            { AttributeName: 'owner', KeyType: 'HASH' },
            { AttributeName: 'run_at_id', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'ALL' },
        },
        {
          IndexName: 'by_owner_status',
          KeySchema: [
            { AttributeName: 'owner_status', KeyType: 'HASH' },
            { AttributeName: 'run_at_id', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'ALL' },
        },
        {
          // Sparse: a schedule's occurrences only (GET /tasks?schedule_id=).
          IndexName: 'by_schedule',
          KeySchema: [
            { AttributeName: 'schedule_of', KeyType: 'HASH' },
            { AttributeName: 'run_at_id', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'ALL' },
        },
        {
          // The interface the Rust sweeper is built against: shard "00".."15", due time, keys only.
          IndexName: 'pending',
          KeySchema: [
            { AttributeName: 'pending_shard', KeyType: 'HASH' },
            { AttributeName: 'pending_at', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'KEYS_ONLY' },
        },
      ]);
      expect(PENDING_INDEX.shards).toBe(16);
      expect(table.Properties.AttributeDefinitions).toEqual(
        expect.arrayContaining([
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'owner', AttributeType: 'S' },
          { AttributeName: 'owner_status', AttributeType: 'S' },
          { AttributeName: 'schedule_of', AttributeType: 'S' },
          { AttributeName: 'run_at_id', AttributeType: 'S' },
          { AttributeName: 'pending_shard', AttributeType: 'S' },
          { AttributeName: 'pending_at', AttributeType: 'N' },
        ]),
      );
      expect(table.Properties.AttributeDefinitions).toHaveLength(7);
    });

    test('kept and deletion-protected by default', () => {
      template.hasResource('AWS::DynamoDB::Table', {
        DeletionPolicy: 'Retain',
        UpdateReplacePolicy: 'Retain',
        Properties: Match.objectLike({ DeletionProtectionEnabled: true }),
      });
    });

    test('deleted with the stack when destroyTable=true', () => {
      const { template: t } = synth({ destroyTable: 'true' });
      t.hasResource('AWS::DynamoDB::Table', {
        DeletionPolicy: 'Delete',
        Properties: Match.objectLike({ DeletionProtectionEnabled: false }),
      });
    });
  });

  describe('queues', () => {
    test('dead-letter queue: SSE, 14-day retention', () => {
      expect(template.findResources('AWS::SQS::Queue')[dlqId].Properties).toEqual({
        MessageRetentionPeriod: 14 * 24 * 3600,
        SqsManagedSseEnabled: true,
      });
    });

    test("failed-tasks queue: the customers' dead letters, apart from the infrastructure DLQ", () => {
      expect(failedId).not.toBe(dlqId);
      // FIFO without content-based deduplication: the function names each failure
      // (MessageDeduplicationId = task id + attempts), so repeated sends make one message.
      expect(template.findResources('AWS::SQS::Queue')[failedId].Properties).toEqual({
        FifoQueue: true,
        ContentBasedDeduplication: false,
        DeduplicationScope: 'messageGroup',
        FifoThroughputLimit: 'perMessageGroupId',
        MessageRetentionPeriod: 14 * 24 * 3600,
        SqsManagedSseEnabled: true,
      });
      // Nothing redrives into it: Scheduler, Lambda and the delay queue use the infrastructure DLQ.
      const target = JSON.stringify({ 'Fn::GetAtt': [failedId, 'Arn'] });
      for (const [, q] of resourcesOfType(template, 'AWS::SQS::Queue')) {
        expect(JSON.stringify(q.Properties.RedrivePolicy ?? {})).not.toContain(target);
      }
    });

    test('delay queue: SSE, visibility >= 6x the function timeout, redrive to the DLQ after 20 receives', () => {
      expect(DELAY_QUEUE_VISIBILITY.toSeconds()).toBeGreaterThanOrEqual(6 * FUNCTION_TIMEOUT.toSeconds());
      // Throttling alone must not dead-letter a wake-up: 20 receives x 6 min = 2 h of throttling.
      expect(DELAY_QUEUE_MAX_RECEIVES * DELAY_QUEUE_VISIBILITY.toSeconds()).toBeGreaterThanOrEqual(2 * 3600);
      expect(template.findResources('AWS::SQS::Queue')[delayId].Properties).toEqual({
        MessageRetentionPeriod: 4 * 24 * 3600,
        SqsManagedSseEnabled: true,
        VisibilityTimeout: 360,
        RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] }, maxReceiveCount: 20 },
      });
    });

    test.each([
      ['delay queue', () => delayId],
      ['dead-letter queue', () => dlqId],
      ['failed-tasks queue', () => failedId],
    ])('%s refuses requests without TLS', (_name, queueId) => {
      template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: queueId() }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Effect: 'Deny',
              Action: 'sqs:*',
              Principal: { AWS: '*' },
              Condition: { Bool: { 'aws:SecureTransport': 'false' } },
            }),
          ]),
        },
      });
    });

    test('the function consumes the delay queue with partial batch responses, at most 10 at once', () => {
      const [, esm] = onlyResource(template, 'AWS::Lambda::EventSourceMapping');
      expect(esm.Properties).toEqual({
        EventSourceArn: { 'Fn::GetAtt': [delayId, 'Arn'] },
        FunctionName: { Ref: fnId },
        BatchSize: 10,
        FunctionResponseTypes: ['ReportBatchItemFailures'],
        ScalingConfig: { MaximumConcurrency: 10 },
      });
    });
  });

  describe('concurrency', () => {
    test('no reserved concurrency by default (the account pool; the event source is capped)', () => {
      const [, fn] = onlyResource(template, 'AWS::Lambda::Function');
      expect(fn.Properties.ReservedConcurrentExecutions).toBeUndefined();
    });

    test('queueMaxConcurrency and reservedConcurrency reach the template', () => {
      const { template: t } = synth({ queueMaxConcurrency: '20', reservedConcurrency: '60' });
      t.hasResourceProperties('AWS::Lambda::EventSourceMapping', { ScalingConfig: { MaximumConcurrency: 20 } });
      t.hasResourceProperties('AWS::Lambda::Function', { ReservedConcurrentExecutions: 60 });
    });

    test('the API keeps headroom: reservedConcurrency below twice the queue maximum is refused', () => {
      expect(() => synth({ reservedConcurrency: '19' })).toThrow(/at least twice queueMaxConcurrency \(10\)/);
      expect(() => synth({ queueMaxConcurrency: '1' })).toThrow(/queueMaxConcurrency/);
      synth({ reservedConcurrency: '20' }).template.hasResourceProperties('AWS::Lambda::Function', {
        ReservedConcurrentExecutions: 20,
      });
    });
  });

  test('queueBatchSize=1: one delivery per invocation', () => {
    synth({ queueBatchSize: '1' }).template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      BatchSize: 1,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
  });

  describe('signing secret', () => {
    test('generated: 48 characters, no punctuation', () => {
      template.hasResourceProperties('AWS::SecretsManager::Secret', {
        GenerateSecretString: Match.objectEquals({ PasswordLength: 48, ExcludePunctuation: true, IncludeSpace: false }),
      });
    });
  });

  describe('schedule groups', () => {
    test("two groups: the wake-ups' (created at run time) and the sweeper's, both deleted with the stack", () => {
      const groups = template.findResources('AWS::Scheduler::ScheduleGroup');
      expect(groups[id(stack.scheduleGroup)].Properties.Name).toMatch(/^TaskScheduler-ScheduleGroup-[A-F0-9]{8}$/);
      expect(groups[id(stack.sweepScheduleGroup)].Properties.Name).toMatch(/^TaskScheduler-SweepScheduleGroup-[A-F0-9]{8}$/);
      for (const group of Object.values(groups)) expect(group.DeletionPolicy).toBe('Delete');
    });
  });

  describe('sweeper schedule', () => {
    const [scheduleId, schedule] = onlyResource(template, 'AWS::Scheduler::Schedule');

    test('every minute, exactly, in its own group, enabled', () => {
      expect(schedule.Properties.ScheduleExpression).toBe('rate(1 minute)');
      expect(schedule.Properties.FlexibleTimeWindow).toEqual({ Mode: 'OFF' });
      expect(schedule.Properties.State).toBe('ENABLED');
      // A Ref, so that CloudFormation creates the group before the schedule.
      expect(schedule.Properties.GroupName).toEqual({ Ref: id(stack.sweepScheduleGroup) });
      // Not among the one-time wake-ups, whose `schedule/<group>/*` the function may delete.
      expect(id(stack.sweepScheduleGroup)).not.toBe(id(stack.scheduleGroup));
      // Never ends, so nothing deletes it after completion (CloudFormation has no
      // ActionAfterCompletion; the API default is NONE).
      for (const absent of ['EndDate', 'StartDate', 'ActionAfterCompletion', 'ScheduleExpressionTimezone']) {
        expect(schedule.Properties).not.toHaveProperty(absent);
      }
    });

    test('target: the function (unqualified) with {"kind":"sweep"}, through the scheduler role, no retries, the infrastructure DLQ', () => {
      expect(schedule.Properties.Target).toEqual({
        Arn: { 'Fn::GetAtt': [fnId, 'Arn'] },
        RoleArn: { 'Fn::GetAtt': [id(stack.schedulerRole), 'Arn'] },
        Input: '{"kind":"sweep"}',
        RetryPolicy: { MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 },
        DeadLetterConfig: { Arn: { 'Fn::GetAtt': [dlqId, 'Arn'] } },
      });
      expect(JSON.parse(schedule.Properties.Target.Input)).toEqual({ kind: 'sweep' });
    });

    test("it waits for the scheduler role's policy, so the first sweep is not dead-lettered", () => {
      const [policyId] = resourcesOfType(template, 'AWS::IAM::Policy').find(([, p]) =>
        p.Properties.Roles.some((r: any) => r.Ref === id(stack.schedulerRole)),
      )!;
      expect(template.toJSON().Resources[scheduleId].DependsOn).toEqual([policyId]);
    });
  });

  describe('function', () => {
    test('the Rust bootstrap on provided.al2023, arm64, sized and timed as documented', () => {
      template.hasResourceProperties('AWS::Lambda::Function', {
        Runtime: 'provided.al2023',
        Handler: 'bootstrap',
        Architectures: ['arm64'],
        MemorySize: 256,
        Timeout: 60,
        RecursiveLoop: 'Allow',
        Role: { 'Fn::GetAtt': [id(stack.functionRole), 'Arn'] },
        LoggingConfig: { LogGroup: { Ref: id(stack.functionLogGroup) } },
      });
    });

    test('context arch=x86_64 builds for x86_64', () => {
      synth({ arch: 'x86_64' }).template.hasResourceProperties('AWS::Lambda::Function', { Architectures: ['x86_64'] });
    });

    test('the environment the binary reads, and nothing else', () => {
      const [, fn] = onlyResource(template, 'AWS::Lambda::Function');
      expect(fn.Properties.Environment.Variables).toEqual({
        TABLE_NAME: { Ref: tableId },
        SCHEDULE_GROUP: stack.scheduleGroup.scheduleGroupName,
        SCHEDULER_ROLE_ARN: { 'Fn::GetAtt': [id(stack.schedulerRole), 'Arn'] },
        DELAY_QUEUE_URL: { Ref: delayId },
        DLQ_ARN: { 'Fn::GetAtt': [dlqId, 'Arn'] },
        FAILED_TASKS_QUEUE_URL: { Ref: failedId },
        SIGNING_SECRET_ARN: { Ref: id(stack.signingSecret) },
        TASK_RETENTION_DAYS: '30',
        LOG_FORMAT: 'json',
        RUST_LOG: 'info',
      });
      expect(fn.Properties.Environment.Variables).not.toHaveProperty('SCHEDULER_ALLOWED_TARGETS');
      // Dead letters of failed tasks never go to the infrastructure DLQ (its URL is not given).
      expect(JSON.stringify(fn.Properties.Environment.Variables)).not.toContain(JSON.stringify({ Ref: dlqId }));
    });

    test('taskRetentionDays reaches the environment', () => {
      synth({ taskRetentionDays: '7' }).template.hasResourceProperties('AWS::Lambda::Function', {
        Environment: { Variables: Match.objectLike({ TASK_RETENTION_DAYS: '7' }) },
      });
    });

    test('the function waits for its policy, and not redundantly for its role', () => {
      const [, fn] = onlyResource(template, 'AWS::Lambda::Function');
      const [policyId] = resourcesOfType(template, 'AWS::IAM::Policy').find(([, p]) =>
        p.Properties.Roles.some((r: any) => r.Ref === id(stack.functionRole)),
      )!;
      expect(fn.DependsOn).toEqual([policyId]);
    });

    test('log groups with retention', () => {
      for (const [, lg] of resourcesOfType(template, 'AWS::Logs::LogGroup')) {
        expect(lg.Properties.RetentionInDays).toBe(30);
      }
      const t90 = synth({ logRetentionDays: '90' }).template;
      for (const [, lg] of resourcesOfType(t90, 'AWS::Logs::LogGroup')) expect(lg.Properties.RetentionInDays).toBe(90);
    });

    test('async invocations (Scheduler): bounded retries, failures to the DLQ', () => {
      template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
        FunctionName: { Ref: fnId },
        Qualifier: '$LATEST',
        MaximumRetryAttempts: 2,
        MaximumEventAgeInSeconds: 6 * 3600,
        DestinationConfig: { OnFailure: { Destination: { 'Fn::GetAtt': [dlqId, 'Arn'] } } },
      });
    });
  });

  describe('outputs', () => {
    test('API URL, table, queues, schedule group, dashboard', () => {
      const outputs = template.toJSON().Outputs;
      expect(Object.keys(outputs).sort()).toEqual(
        [
          'ApiUrl',
          'DashboardUrl',
          'DeadLetterQueueUrl',
          'DelayQueueUrl',
          'FailedTasksQueueUrl',
          'FunctionName',
          'ScheduleGroupName',
          'SigningSecretArn',
          'TableName',
        ].sort(),
      );
      expect(outputs.TableName.Value).toEqual({ Ref: tableId });
      expect(outputs.DelayQueueUrl.Value).toEqual({ Ref: delayId });
      expect(outputs.DeadLetterQueueUrl.Value).toEqual({ Ref: dlqId });
      expect(outputs.FailedTasksQueueUrl.Value).toEqual({ Ref: failedId });
      expect(outputs.ScheduleGroupName.Value).toEqual(stack.scheduleGroup.scheduleGroupName);
      expect(JSON.stringify(outputs.ApiUrl.Value)).toContain('.execute-api.');
      expect(JSON.stringify(outputs.DashboardUrl.Value)).toContain('#dashboards:name=');
    });
  });
});
