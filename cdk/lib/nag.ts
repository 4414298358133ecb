import { App, CfnElement, Stack, Token, Validations } from 'aws-cdk-lib';
import type * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type * as scheduler from 'aws-cdk-lib/aws-scheduler';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';

/** Registers the cdk-nag AwsSolutions pack: synthesis fails on any unacknowledged finding. */
export function addNagChecks(app: App): AwsSolutionsChecks {
  // writeSuppressionsToCloudFormation: each acknowledgement and its reason also lands in the
  // Metadata (cdk_nag.rules_to_suppress) of the resource it concerns, for template reviewers.
  const pack = new AwsSolutionsChecks(app, { writeSuppressionsToCloudFormation: true });
  Validations.of(app).addPlugins(pack);
  return pack;
}

/** One acknowledged cdk-nag finding: the rule, the construct it is scoped to, and why. */
export interface NagAcknowledgement {
  readonly id: string;
  readonly path: string;
  readonly reason: string;
}

/**
 * The constructs of the stack that carry an acknowledged finding. The stack passes itself; this
 * module imports nothing from it, so the two do not import each other.
 */
export interface NagSubjects {
  readonly functionRole: iam.IRole;
  readonly signingSecret: secretsmanager.ISecret;
  readonly healthRoute: apigwv2.IHttpRoute;
  readonly scheduleGroup: scheduler.IScheduleGroup;
  readonly failedTasksQueue: sqs.IQueue;
}

/**
 * Every cdk-nag finding this stack accepts, each scoped to the one construct it concerns (never
 * stack-wide, so a new resource with the same problem is still reported). Returned so that the
 * tests and the README can list them.
 */
export function acknowledgeNagFindings(stack: NagSubjects): NagAcknowledgement[] {
  const acks: NagAcknowledgement[] = [];
  const ack = (scope: IConstruct, id: string, reason: string) => {
    Validations.of(scope).acknowledge({ id, reason });
    acks.push({ id, path: scope.node.path, reason });
  };

  // How cdk-nag renders the group name inside the schedule ARN of the IAM5 finding.
  const group = stack.scheduleGroup;
  const groupName = Token.isUnresolved(group.scheduleGroupName)
    ? `<${Stack.of(group).getLogicalId(group.node.defaultChild as CfnElement)}>`
    : group.scheduleGroupName;

  ack(
    stack.functionRole,
    `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:schedule/${groupName}/*]`,
    'The function creates one one-time schedule per task attempt and names it after the task id ' +
      'and attempt number, which exist only at run time, so no fixed schedule ARN can be listed. ' +
      "The wildcard is confined to this stack's own schedule group in this account and region, " +
      'and to scheduler:CreateSchedule and DeleteSchedule (no read, group or tag actions).',
  );

  ack(
    stack.signingSecret,
    'AwsSolutions-SMG4',
    'This is the HMAC key that webhook receivers hold to verify deliveries; it is shared with them ' +
      'out of band. A scheduled rotation Lambda would change it without telling any receiver and ' +
      'break every signature check at once. Rotation is therefore a coordinated, manual procedure ' +
      '(README, "Rotating the signing secret"): the Standard Webhooks format carries several ' +
      'signatures during the changeover.',
  );

  ack(
    stack.healthRoute,
    'AwsSolutions-APIG4',
    'GET /health is the unauthenticated liveness probe required by the API contract: it returns ' +
      'a constant {"status":"ok"}, reads and writes no task data, and is subject to the stage ' +
      'throttling. Every other route requires IAM (SigV4) authorization.',
  );

  ack(
    stack.failedTasksQueue,
    'AwsSolutions-SQS3',
    "This queue is itself a dead-letter queue: the function sends one message per task that " +
      'failed for good (its last attempt failed), which operators read and answer with ' +
      'POST /tasks/{id}/retry or pass to the owner. cdk-nag recognises a DLQ only as the redrive ' +
      'target of another queue, which this one deliberately is not: no consumer receives from ' +
      'it, so no message can run out of receives and need a DLQ of its own.',
  );

  return acks;
}
