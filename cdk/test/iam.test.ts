import { asArray, onlyResource, resourcesOfType, Statement, statementsOfRole, synth } from './helpers';

/** A statement reduced to what matters, with order-independent actions and resources. */
function norm(s: Statement) {
  return {
    effect: s.Effect,
    actions: asArray(s.Action).slice().sort(),
    resources: asArray(s.Resource)
      .map((r) => JSON.stringify(r))
      .sort(),
    condition: s.Condition ?? null,
  };
}

const getAtt = (logicalId: string, attr = 'Arn') => ({ 'Fn::GetAtt': [logicalId, attr] });

describe('task-scheduler stack: IAM', () => {
  for (const [variant, context] of [
    ['default', {}],
    ['with alarm e-mail', { alarmEmail: 'ops@example.com' }],
  ] as const) {
    test(`${variant}: no '*' action, no service-wide action, no '*' resource in any policy`, () => {
      const { template } = synth(context);
      const docs: any[] = [
        ...resourcesOfType(template, 'AWS::IAM::Policy').map(([, p]) => p.Properties.PolicyDocument),
        ...resourcesOfType(template, 'AWS::IAM::Role').flatMap(([, r]) =>
          (r.Properties.Policies ?? []).map((p: any) => p.PolicyDocument),
        ),
      ];
      expect(docs.length).toBeGreaterThan(0);
      for (const doc of docs) {
        for (const s of doc.Statement as Statement[]) {
          for (const a of asArray(s.Action)) {
            expect(a).not.toBe('*');
            expect(a).not.toMatch(/:\*$/);
          }
          for (const r of asArray(s.Resource)) expect(r).not.toBe('*');
        }
      }
      // No AWS managed policies either: every permission is listed in this stack.
      for (const [, role] of resourcesOfType(template, 'AWS::IAM::Role')) {
        expect(role.Properties.ManagedPolicyArns).toBeUndefined();
      }
    });
  }

  const { template, stack } = synth();
  const id = (c: { node: { defaultChild?: unknown } }) => stack.getLogicalId(c.node.defaultChild as never);
  const tableId = id(stack.table);
  const dlqId = id(stack.deadLetterQueue);
  const failedId = id(stack.failedTasksQueue);
  const delayId = id(stack.delayQueue);
  const fnId = id(stack.fn);
  const schedulerRoleId = id(stack.schedulerRole);
  const functionRoleId = id(stack.functionRole);
  const groupName = stack.scheduleGroup.scheduleGroupName;

  test('function role: trusted by Lambda only', () => {
    const role = template.findResources('AWS::IAM::Role')[functionRoleId];
    expect(role.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } },
    ]);
  });

  test('function role: exactly these statements (least privilege)', () => {
    const actual = statementsOfRole(template, functionRoleId).map(norm);
    const scheduleArn = {
      'Fn::Join': [
        '',
        [
          'arn:',
          { Ref: 'AWS::Partition' },
          ':scheduler:',
          { Ref: 'AWS::Region' },
          ':',
          { Ref: 'AWS::AccountId' },
          `:schedule/${groupName}/*`,
        ],
      ],
    };
    const index = (name: string) => ({ 'Fn::Join': ['', [getAtt(tableId), `/index/${name}`]] });
    const expected = [
      // its own log group
      { Effect: 'Allow', Action: ['logs:CreateLogStream', 'logs:PutLogEvents'], Resource: getAtt(id(stack.functionLogGroup)) },
      // the table (TransactWriteItems is authorized per item as PutItem, UpdateItem, DeleteItem) and its three listing indexes
      // (the table itself is never queried); no Scan, no ConditionCheckItem, no table management
      {
        Effect: 'Allow',
        Action: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
        Resource: getAtt(tableId),
      },
      { Effect: 'Allow', Action: ['dynamodb:Query'], Resource: [index('by_owner'), index('by_owner_status'), index('by_schedule')] },
      // the sweeper: Query on the pending index (one per shard), nothing else on it
      { Effect: 'Allow', Action: 'dynamodb:Query', Resource: index('pending') },
      // the schedules of its own group: create and delete, never read
      { Effect: 'Allow', Action: ['scheduler:CreateSchedule', 'scheduler:DeleteSchedule'], Resource: scheduleArn },
      // the scheduler role, to Scheduler only
      {
        Effect: 'Allow',
        Action: 'iam:PassRole',
        Resource: getAtt(schedulerRoleId),
        Condition: { StringEquals: { 'iam:PassedToService': 'scheduler.amazonaws.com' } },
      },
      // wake-ups to the delay queue, customers' dead letters to the failed-tasks queue
      { Effect: 'Allow', Action: 'sqs:SendMessage', Resource: [getAtt(delayId), getAtt(failedId)] },
      // the async-invoke failure destination (Lambda needs SendMessage only)
      { Effect: 'Allow', Action: 'sqs:SendMessage', Resource: getAtt(dlqId) },
      // the event source mapping on the delay queue
      {
        Effect: 'Allow',
        Action: ['sqs:ReceiveMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueUrl', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes'],
        Resource: getAtt(delayId),
      },
      // the signing secret, read only, nothing else of Secrets Manager
      { Effect: 'Allow', Action: 'secretsmanager:GetSecretValue', Resource: { Ref: id(stack.signingSecret) } },
    ].map((s) => norm(s as Statement));
    const key = (s: ReturnType<typeof norm>) => JSON.stringify(s);
    expect(actual.map(key).sort()).toEqual(expected.map(key).sort());
  });

  test('function role: no grant the code does not use', () => {
    const statements = statementsOfRole(template, functionRoleId);
    const actions = statements.flatMap((s) => asArray(s.Action));
    // Neither the store (shared/src/store/dynamodb.rs) nor the waker (shared/src/wake/aws.rs)
    // calls these.
    for (const unused of ['dynamodb:ConditionCheckItem', 'dynamodb:Scan', 'dynamodb:BatchWriteItem', 'scheduler:GetSchedule']) {
      expect(actions).not.toContain(unused);
    }
    // The table is queried through its indexes only: the two listing indexes and the sweeper's.
    const query = statements.filter((s) => asArray(s.Action).includes('dynamodb:Query'));
    expect(query.flatMap((s) => asArray(s.Resource))).not.toContainEqual(getAtt(tableId));
    const indexName = (r: unknown) => JSON.stringify(r).match(/\/index\/([a-z_]+)"/)?.[1];
    expect(query.flatMap((s) => asArray(s.Resource)).map(indexName).sort()).toEqual(['by_owner', 'by_owner_status', 'by_schedule', 'pending']);
    // The pending index is only queried (no other action names it, and no index wildcard).
    const onPending = statements.filter((s) => asArray(s.Resource).some((r) => indexName(r) === 'pending'));
    expect([...new Set(onPending.flatMap((s) => asArray(s.Action)))]).toEqual(['dynamodb:Query']);
    expect(JSON.stringify(statements)).not.toContain('/index/*');
    // The dead-letter queues take SendMessage and nothing else from the function.
    for (const queue of [dlqId, failedId]) {
      const onQueue = statements.filter((s) => asArray(s.Resource).some((r) => JSON.stringify(r) === JSON.stringify(getAtt(queue))));
      expect([...new Set(onQueue.flatMap((s) => asArray(s.Action)))]).toEqual(['sqs:SendMessage']);
    }
  });

  test('function role: no Scan, no wildcard DynamoDB action', () => {
    const actions = statementsOfRole(template, functionRoleId).flatMap((s) => asArray(s.Action));
    expect(actions).not.toContain('dynamodb:Scan');
    expect(actions.filter((a) => a.startsWith('dynamodb:')).every((a) => !a.includes('*'))).toBe(true);
  });

  test('the only wildcard in any resource is "this group\'s schedules"', () => {
    const wildcards = resourcesOfType(template, 'AWS::IAM::Policy')
      .flatMap(([, p]) => p.Properties.PolicyDocument.Statement as Statement[])
      .flatMap((s) => asArray(s.Resource))
      .map((r) => JSON.stringify(r))
      .filter((r) => r.includes('*'));
    expect(wildcards).toEqual([expect.stringContaining(`:schedule/${groupName}/*`)]);
  });

  test("scheduler role: trusted by scheduler.amazonaws.com for this account's two schedule groups only", () => {
    const role = template.findResources('AWS::IAM::Role')[schedulerRoleId];
    expect(role.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      {
        Action: 'sts:AssumeRole',
        Effect: 'Allow',
        Principal: { Service: 'scheduler.amazonaws.com' },
        Condition: {
          StringEquals: {
            'aws:SourceAccount': { Ref: 'AWS::AccountId' },
            // the wake-ups' group and the sweeper's: the sweep schedule uses this role too
            'aws:SourceArn': [getAtt(id(stack.scheduleGroup)), getAtt(id(stack.sweepScheduleGroup))],
          },
        },
      },
    ]);
  });

  test('scheduler role: invoke this one function, send to the DLQ, nothing else', () => {
    const actual = statementsOfRole(template, schedulerRoleId).map(norm);
    expect(actual).toEqual([
      norm({ Effect: 'Allow', Action: 'lambda:InvokeFunction', Resource: getAtt(fnId) }),
      norm({ Effect: 'Allow', Action: 'sqs:SendMessage', Resource: getAtt(dlqId) }),
    ]);
  });

  test('the signing secret is readable by the function role only', () => {
    const secretRef = JSON.stringify({ Ref: id(stack.signingSecret) });
    const readers = resourcesOfType(template, 'AWS::IAM::Policy')
      .filter(([, p]) => JSON.stringify(p.Properties.PolicyDocument).includes(secretRef))
      .flatMap(([, p]) => p.Properties.Roles.map((r: any) => r.Ref));
    expect(readers).toEqual([functionRoleId]);
    template.resourceCountIs('AWS::SecretsManager::ResourcePolicy', 0);
  });

  test('API Gateway may invoke the function on the routes of this API only', () => {
    const permissions = resourcesOfType(template, 'AWS::Lambda::Permission').map(([, p]) => p.Properties);
    expect(permissions).toHaveLength(16);
    for (const p of permissions) {
      expect(p.Action).toBe('lambda:InvokeFunction');
      expect(p.Principal).toBe('apigateway.amazonaws.com');
      expect(p.FunctionName).toEqual(getAtt(fnId));
      expect(JSON.stringify(p.SourceArn)).toContain(JSON.stringify({ Ref: id(stack.api) }));
    }
  });

  test('the function is the only Lambda function (no CDK helper functions)', () => {
    onlyResource(template, 'AWS::Lambda::Function');
  });
});
