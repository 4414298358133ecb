import { Aws, CfnOutput, Duration, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { acknowledgeNagFindings, NagAcknowledgement } from './nag';
import { Operations } from './operations';

/** Names the Rust store relies on (shared/src/store/dynamodb.rs). */
export const TABLE_KEYS = {
  partitionKey: 'pk',
  ttlAttribute: 'expires_at',
  indexes: [
    { name: 'by_owner', partitionKey: 'owner', sortKey: 'run_at_id' },
    { name: 'by_owner_status', partitionKey: 'owner_status', sortKey: 'run_at_id' },
    // Sparse: only a schedule's occurrences carry `schedule_of` (GET /tasks?schedule_id=).
    { name: 'by_schedule', partitionKey: 'schedule_of', sortKey: 'run_at_id' },
  ],
} as const;

/**
 * The sweeper's index, names shared with the Rust store: a sparse GSI holding only
 * the tasks that should be moving (`scheduled` or `running`; the store removes both attributes
 * when a task finishes or is cancelled). `pending_shard` is "00".."15", `pending_at` the time the
 * task is due (or its lease ends), so one `Query` per shard with `pending_at <= now - grace`
 * finds the overdue ones in order.
 * - 16 shards: at 1,000 creates/s every create and every state change writes the index, and each
 *   shard then takes ~62 writes/s, far below a partition's 1,000 WCU; a sweep is 16 `Query`
 *   calls, a handful of RRU when nothing is overdue.
 * - KEYS_ONLY: the sweeper needs the task id and re-reads the item (GetItem) before re-arming,
 *   so the index stores ~100 bytes per pending task instead of a copy of each task.
 */
export const PENDING_INDEX = {
  name: 'pending',
  partitionKey: 'pending_shard',
  sortKey: 'pending_at',
  shards: 16,
} as const;

/**
 * The sweep: a recurring Scheduler schedule invokes the function with this event every minute.
 * With the Rust side's grace period, every task that should be moving is re-armed within 2
 * minutes of being lost.
 */
export const SWEEP_EVENT = { kind: 'sweep' } as const;
export const SWEEP_SCHEDULE_EXPRESSION = 'rate(1 minute)';

/** Every route of the HTTP API contract (docs/api.md); all IAM-authorized but /health. */
export const ROUTES: ReadonlyArray<{ method: apigwv2.HttpMethod; path: string; iam: boolean }> = [
  { method: apigwv2.HttpMethod.POST, path: '/tasks', iam: true },
  { method: apigwv2.HttpMethod.GET, path: '/tasks', iam: true },
  { method: apigwv2.HttpMethod.GET, path: '/tasks/{task_id}', iam: true },
  { method: apigwv2.HttpMethod.DELETE, path: '/tasks/{task_id}', iam: true },
  { method: apigwv2.HttpMethod.POST, path: '/tasks/{task_id}/retry', iam: true },
  { method: apigwv2.HttpMethod.PATCH, path: '/tasks/{task_id}', iam: true },
  { method: apigwv2.HttpMethod.POST, path: '/tasks/{task_id}/run', iam: true },
  { method: apigwv2.HttpMethod.POST, path: '/schedule-task', iam: true },
  { method: apigwv2.HttpMethod.POST, path: '/schedules', iam: true },
  { method: apigwv2.HttpMethod.GET, path: '/schedules', iam: true },
  { method: apigwv2.HttpMethod.GET, path: '/schedules/{schedule_id}', iam: true },
  { method: apigwv2.HttpMethod.PATCH, path: '/schedules/{schedule_id}', iam: true },
  { method: apigwv2.HttpMethod.DELETE, path: '/schedules/{schedule_id}', iam: true },
  { method: apigwv2.HttpMethod.POST, path: '/schedules/{schedule_id}/trigger', iam: true },
  { method: apigwv2.HttpMethod.GET, path: '/openapi.json', iam: true },
  { method: apigwv2.HttpMethod.GET, path: '/health', iam: false },
];

/**
 * Function sizing.
 * - 256 MB: the Rust binary needs ~30-50 MB, but Lambda allots CPU in proportion to memory;
 *   256 MB gives enough CPU for TLS handshakes and JSON (de)serialization while the work itself
 *   (a webhook call, a few DynamoDB writes) is I/O bound, so more memory would mostly be paid
 *   for waiting.
 * - 60 s: a delivery may wait up to the 30 s maximum webhook timeout plus the store writes and a
 *   re-arm before and after it; 60 s leaves a 2x margin over that worst case.
 */
export const FUNCTION_MEMORY_MB = 256;
export const FUNCTION_TIMEOUT = Duration.seconds(60);
/** AWS guidance for SQS event sources: visibility timeout at least 6x the function timeout. */
export const DELAY_QUEUE_VISIBILITY = Duration.seconds(FUNCTION_TIMEOUT.toSeconds() * 6);
/**
 * Receives of a delay-queue message before SQS moves it to the infrastructure DLQ. A receive
 * that ends in a throttled or failed invocation hides the message for the visibility timeout
 * (6 min), so 20 receives are 2 hours of continuous throttling or failure: far longer than a
 * throttling episode lasts (the throttles alarm fires after 15 min), yet a message the function
 * can never process still surfaces in the DLQ the same day. AWS's minimum advice is 5; with 5,
 * 30 minutes of throttling dead-lettered wake-ups.
 */
export const DELAY_QUEUE_MAX_RECEIVES = 20;
/**
 * Default maximum concurrency of the delay-queue event source: at most 10 concurrent invocations
 * (each up to 10 deliveries in parallel, ~100 deliveries in flight, ~280 deliveries/s at 350 ms
 * each: ~700x the average of a million tasks a month). The event source stops polling at this
 * limit instead of invoking and being throttled, so a backlog waits in the queue without
 * spending receives, and the API and Scheduler's wake-ups keep the rest of the concurrency.
 */
export const DEFAULT_QUEUE_MAX_CONCURRENCY = 10;

export interface TaskSchedulerStackProps extends StackProps {
  /** Absolute path of the directory that holds the `bootstrap` executable. */
  readonly bootstrapDir: string;
  readonly architecture?: lambda.Architecture;
  /** Delete the table with the stack (default: the table is retained and deletion-protected). */
  readonly destroyTable?: boolean;
  readonly alarmEmail?: string;
  readonly taskRetentionDays?: number;
  readonly logRetentionDays?: number;
  readonly apiRateLimit?: number;
  readonly apiBurstLimit?: number;
  readonly latenessAlarmMs?: number;
  /** Delay-queue records per invocation (default 10). */
  readonly queueBatchSize?: number;
  /** Maximum concurrent invocations of the delay-queue event source (default 10, 2..1000). */
  readonly queueMaxConcurrency?: number;
  /**
   * Reserved concurrency of the function (default none: the account's unreserved pool). When
   * set it must be at least twice `queueMaxConcurrency`, so the API keeps half.
   */
  readonly reservedConcurrency?: number;
}

function retention(days: number): logs.RetentionDays {
  const allowed = Object.values(logs.RetentionDays).filter((v): v is number => typeof v === 'number');
  if (!allowed.includes(days)) {
    throw new Error(`logRetentionDays: ${days} is not one CloudWatch Logs accepts (${allowed.join(', ')})`);
  }
  return days as logs.RetentionDays;
}

export class TaskSchedulerStack extends Stack {
  readonly table: dynamodb.Table;
  readonly delayQueue: sqs.Queue;
  /** The infrastructure DLQ: wake-ups Scheduler, Lambda or the delay queue gave up on. Pages. */
  readonly deadLetterQueue: sqs.Queue;
  /** The customers' dead letters: one message per task that failed for good. Does not page. */
  readonly failedTasksQueue: sqs.Queue;
  readonly signingSecret: secretsmanager.Secret;
  readonly scheduleGroup: scheduler.ScheduleGroup;
  /** The sweeper's own group, holding its one recurring schedule and nothing else. */
  readonly sweepScheduleGroup: scheduler.ScheduleGroup;
  readonly sweepSchedule: scheduler.CfnSchedule;
  readonly schedulerRole: iam.Role;
  readonly functionRole: iam.Role;
  readonly fn: lambda.Function;
  readonly functionLogGroup: logs.LogGroup;
  readonly api: apigwv2.HttpApi;
  readonly apiStage: apigwv2.HttpStage;
  readonly accessLogGroup: logs.LogGroup;
  /** The one route without authorization (cdk-nag acknowledges it by this construct). */
  readonly healthRoute: apigwv2.HttpRoute;
  readonly operations: Operations;
  /** The cdk-nag findings this stack accepts, with their reasons. */
  readonly nagAcknowledgements: NagAcknowledgement[];

  constructor(scope: Construct, id: string, props: TaskSchedulerStackProps) {
    super(scope, id, {
      description: 'task-scheduler: durable webhook scheduling (HTTP API, Rust Lambda, DynamoDB, EventBridge Scheduler, SQS)',
      ...props,
    });
    const architecture = props.architecture ?? lambda.Architecture.ARM_64;
    const logRetention = retention(props.logRetentionDays ?? 30);
    const taskRetentionDays = props.taskRetentionDays ?? 30;

    // ---------------------------------------------------------------- table
    // Encryption: the AWS-managed key (aws/dynamodb). Unlike the default AWS-owned key its use is
    // visible in CloudTrail, and unlike a customer-managed key it costs no monthly key fee, needs
    // no key policy or grants, and cannot be disabled by mistake (which would make every task
    // unreadable). Nothing here requires key-level separation of duties or cross-account access.
    this.table = new dynamodb.Table(this, 'Tasks', {
      partitionKey: { name: TABLE_KEYS.partitionKey, type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      timeToLiveAttribute: TABLE_KEYS.ttlAttribute,
      deletionProtection: !props.destroyTable,
      removalPolicy: props.destroyTable ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
    });
    for (const index of TABLE_KEYS.indexes) {
      this.table.addGlobalSecondaryIndex({
        indexName: index.name,
        partitionKey: { name: index.partitionKey, type: dynamodb.AttributeType.STRING },
        sortKey: { name: index.sortKey, type: dynamodb.AttributeType.STRING },
        projectionType: dynamodb.ProjectionType.ALL,
      });
    }
    // Sparse: only items that carry `pending_shard` and `pending_at` (tasks that should be
    // moving) are in it, so the sweeper reads pending tasks and never scans the table.
    this.table.addGlobalSecondaryIndex({
      indexName: PENDING_INDEX.name,
      partitionKey: { name: PENDING_INDEX.partitionKey, type: dynamodb.AttributeType.STRING },
      // A number (epoch ms): the claim sets it to the lease's end in the same expression that
      // computes the lease, which it could not do for a string key.
      sortKey: { name: PENDING_INDEX.sortKey, type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.KEYS_ONLY,
    });

    // --------------------------------------------------------------- queues
    // SSE-SQS (SQS-managed keys): encrypted at rest with no KMS key, so neither the function,
    // the Lambda event source nor EventBridge Scheduler (which writes dead letters here) needs
    // KMS permissions, and there is no per-request KMS charge.
    // Two dead-letter queues with different readers. The infrastructure DLQ holds wake-ups that
    // AWS gave up on (Scheduler's dead letters, the delay queue's redrive, failed asynchronous
    // invocations): a fault of this stack, and its alarm pages operators. The failed-tasks queue
    // holds the customers' failed tasks (the function's dead letters: task, owner, URL, last
    // error): a normal outcome of a webhook that kept failing, which operators read, hand to the
    // task's owner, or answer with POST /tasks/{id}/retry. Mixed in one queue, every customer's
    // broken endpoint would page, and the page would hide the real faults.
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    // FIFO, so that each failure is one message: every send of a dead letter carries the
    // deduplication id task id + attempts made (the SDK's retry of a send whose answer was lost,
    // a send repeated by the sweeper, a redelivered wake-up), and SQS drops repeats within its
    // 5-minute window. The message group is the task: no ordering across tasks, and the
    // high-throughput mode (deduplication and throughput per message group) scales with them.
    this.failedTasksQueue = new sqs.Queue(this, 'FailedTasksQueue', {
      fifo: true,
      contentBasedDeduplication: false,
      deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.delayQueue = new sqs.Queue(this, 'DelayQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: DELAY_QUEUE_VISIBILITY,
      retentionPeriod: Duration.days(4),
      // A wake-up the function failed to process DELAY_QUEUE_MAX_RECEIVES times (2 h of
      // throttling or failures) goes to the infrastructure DLQ instead of looping.
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: DELAY_QUEUE_MAX_RECEIVES },
    });

    // --------------------------------------------------------------- secret
    this.signingSecret = new secretsmanager.Secret(this, 'SigningSecret', {
      description: 'Webhook signing key (Standard Webhooks, HMAC-SHA256); raw key bytes, no whsec_ prefix',
      generateSecretString: { passwordLength: 48, excludePunctuation: true, includeSpace: false },
    });

    // ------------------------------------------------------- schedule group
    // Only the group: the function creates one-time schedules in it at run time.
    // Deleting the stack deletes the group and the schedules still pending in it.
    this.scheduleGroup = new scheduler.ScheduleGroup(this, 'ScheduleGroup', {
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // The sweeper's schedule lives in a group of its own, not among the one-time wake-ups: the
    // function may create and delete any schedule of the wake-up group (`schedule/<group>/*`),
    // so there a bug could delete the sweeper; its Scheduler metrics are the sweeper's alone (the
    // "sweeper not running" alarm counts its invocations); and listing the wake-up group shows
    // wake-ups only.
    this.sweepScheduleGroup = new scheduler.ScheduleGroup(this, 'SweepScheduleGroup', {
      removalPolicy: RemovalPolicy.DESTROY,
    });

    // ------------------------------------------------ scheduler execution role
    // Passed by the function in each CreateSchedule, and used by the sweep schedule; its
    // permissions are added below. Trusted by Scheduler only on behalf of this account's
    // schedules in this stack's two groups (confused deputy: another group, or another account's
    // Scheduler, cannot assume it).
    this.schedulerRole = new iam.Role(this, 'SchedulerRole', {
      description: 'Assumed by EventBridge Scheduler to deliver task wake-ups and sweeps to the function',
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: {
          StringEquals: {
            'aws:SourceAccount': Aws.ACCOUNT_ID,
            'aws:SourceArn': [this.scheduleGroup.scheduleGroupArn, this.sweepScheduleGroup.scheduleGroupArn],
          },
        },
      }),
    });

    // ------------------------------------------------------------- function
    this.functionLogGroup = new logs.LogGroup(this, 'FunctionLogs', {
      retention: logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // A role of our own rather than AWSLambdaBasicExecutionRole: its logs permission names this
    // log group only, and every other permission is listed below.
    this.functionRole = new iam.Role(this, 'FunctionRole', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: 'task-scheduler function: its table, its schedule group, its queues, its secret',
    });
    this.functionLogGroup.grantWrite(this.functionRole);

    this.fn = new lambda.Function(this, 'Function', {
      description: 'task-scheduler: HTTP API, wake-ups (Scheduler, SQS) and webhook delivery',
      runtime: lambda.Runtime.PROVIDED_AL2023,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(props.bootstrapDir),
      architecture,
      memorySize: FUNCTION_MEMORY_MB,
      timeout: FUNCTION_TIMEOUT,
      role: this.functionRole,
      logGroup: this.functionLogGroup,
      // function -> delay queue -> function is by design (early wake-ups re-arm, retries with a
      // backoff under 15 min go through the queue). Each hop is bounded by the task's attempt
      // budget (max 25 attempts), but a long chain would trip Lambda's recursion detection
      // (about 16 hops) and silently drop the wake-up, so the loop is explicitly allowed.
      recursiveLoop: lambda.RecursiveLoop.ALLOW,
      environment: {
        TABLE_NAME: this.table.tableName,
        SCHEDULE_GROUP: this.scheduleGroup.scheduleGroupName,
        SCHEDULER_ROLE_ARN: this.schedulerRole.roleArn,
        DELAY_QUEUE_URL: this.delayQueue.queueUrl,
        // Scheduler's dead-letter config of each schedule (the infrastructure DLQ).
        DLQ_ARN: this.deadLetterQueue.queueArn,
        // Where the function sends a task that failed for good.
        FAILED_TASKS_QUEUE_URL: this.failedTasksQueue.queueUrl,
        SIGNING_SECRET_ARN: this.signingSecret.secretArn,
        TASK_RETENTION_DAYS: String(taskRetentionDays),
        LOG_FORMAT: 'json',
        RUST_LOG: 'info',
        // SCHEDULER_ALLOWED_TARGETS is deliberately absent: the binary then refuses webhooks to
        // private, loopback and link-local addresses (SSRF guard), the right default on AWS.
      },
    });

    // Scheduler invokes the function asynchronously: bound Lambda's own retries (the claim step
    // makes duplicates harmless) and send events that still fail to the infrastructure DLQ.
    // Throttled asynchronous events are not retries: Lambda keeps them for up to the 6 h event
    // age. The destination is granted sqs:SendMessage alone (Lambda needs no more; CDK's
    // SqsDestination would add GetQueueAttributes and GetQueueUrl).
    const deadLetterQueue = this.deadLetterQueue;
    this.fn.configureAsyncInvoke({
      retryAttempts: 2,
      maxEventAge: Duration.hours(6),
      onFailure: {
        bind: (_scope, fn) => {
          fn.addToRolePolicy(
            new iam.PolicyStatement({
              sid: 'AsyncFailuresToDeadLetterQueue',
              actions: ['sqs:SendMessage'],
              resources: [deadLetterQueue.queueArn],
            }),
          );
          return { destination: deadLetterQueue.queueArn };
        },
      },
    });

    // Concurrency. The delay-queue event source invokes at most `queueMaxConcurrency` copies at
    // once: at that limit it stops polling, so a backlog waits in the queue (spending no
    // receives) instead of invocations being throttled, and the API and Scheduler's wake-ups
    // keep the rest. With `reservedConcurrency` the function also owns its concurrency (other
    // functions of the account cannot starve it), and half of it at least stays with the API.
    const queueMaxConcurrency = props.queueMaxConcurrency ?? DEFAULT_QUEUE_MAX_CONCURRENCY;
    if (props.reservedConcurrency !== undefined && props.reservedConcurrency < 2 * queueMaxConcurrency) {
      throw new Error(
        `reservedConcurrency ${props.reservedConcurrency} must be at least twice queueMaxConcurrency ` +
          `(${queueMaxConcurrency}), so that the delay queue cannot take the API's concurrency`,
      );
    }
    if (props.reservedConcurrency !== undefined) {
      (this.fn.node.defaultChild as lambda.CfnFunction).reservedConcurrentExecutions = props.reservedConcurrency;
    }

    // Delay queue -> function. No batching window: these messages are due now. The binary
    // delivers the records of a batch concurrently, so a batch takes as long as its slowest
    // webhook (<= 30 s), well inside the 60 s timeout; `-c queueBatchSize=1` gives every
    // delivery its own invocation instead.
    this.fn.addEventSource(
      new SqsEventSource(this.delayQueue, {
        batchSize: props.queueBatchSize ?? 10,
        reportBatchItemFailures: true,
        maxConcurrency: queueMaxConcurrency,
      }),
    );

    // --------------------------------------------- scheduler role permissions
    this.schedulerRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'InvokeTheTaskFunction',
        actions: ['lambda:InvokeFunction'],
        resources: [this.fn.functionArn],
      }),
    );
    // Scheduler's dead letters go to the infrastructure DLQ: an undeliverable wake-up is a fault.
    this.schedulerRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'SendDeadLetters',
        actions: ['sqs:SendMessage'],
        resources: [this.deadLetterQueue.queueArn],
      }),
    );

    // ------------------------------------------------------ function policy
    // Exactly the calls the binary makes (shared/src/store/dynamodb.rs, shared/src/wake/aws.rs,
    // the dead-letter sender, shared/src/lambda/mod.rs): GetItem, PutItem, UpdateItem, DeleteItem
    // and TransactWriteItems of Puts, Updates and Deletes (authorized as PutItem, UpdateItem and
    // DeleteItem: a schedule with its occurrences) on the table; Query on the four
    // indexes only (the table itself is never queried); CreateSchedule and DeleteSchedule (never
    // GetSchedule); SendMessage to the delay queue and the failed-tasks queue; GetSecretValue.
    const indexArns = TABLE_KEYS.indexes.map((i) => `${this.table.tableArn}/index/${i.name}`);
    this.functionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'TaskItems',
        actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
        resources: [this.table.tableArn],
      }),
    );
    this.functionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'TaskQueries',
        actions: ['dynamodb:Query'],
        resources: indexArns,
      }),
    );
    // The sweeper: one Query per shard of the pending index (then GetItem on the table, above).
    this.functionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'SweepQueries',
        actions: ['dynamodb:Query'],
        resources: [`${this.table.tableArn}/index/${PENDING_INDEX.name}`],
      }),
    );
    this.functionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'TaskSchedules',
        actions: ['scheduler:CreateSchedule', 'scheduler:DeleteSchedule'],
        resources: [this.scheduleArns()],
      }),
    );
    this.functionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'PassSchedulerRole',
        actions: ['iam:PassRole'],
        resources: [this.schedulerRole.roleArn],
        conditions: { StringEquals: { 'iam:PassedToService': 'scheduler.amazonaws.com' } },
      }),
    );
    this.functionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'SendWakeUpsAndFailedTasks',
        actions: ['sqs:SendMessage'],
        resources: [this.delayQueue.queueArn, this.failedTasksQueue.queueArn],
      }),
    );
    this.functionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadSigningSecret',
        actions: ['secretsmanager:GetSecretValue'],
        resources: [this.signingSecret.secretArn],
      }),
    );

    // The L2 function depends on its whole role construct: on the role's policy (needed, so the
    // function never runs before its permissions exist) and on the role itself, which the
    // `Role: GetAtt` already implies (cfn-lint W3005). Keep the policy dependency only.
    const functionPolicies = this.functionRole.node
      .findAll()
      .filter((c): c is iam.CfnPolicy => c instanceof iam.CfnPolicy)
      .map((p) => this.getLogicalId(p));
    (this.fn.node.defaultChild as lambda.CfnFunction).addOverride('DependsOn', functionPolicies);

    // ---------------------------------------------------------------- sweeper
    // One recurring schedule wakes the function with {"kind":"sweep"} every minute; the function
    // queries each shard of the pending index for overdue tasks and re-arms them (it never
    // delivers; a duplicate wake-up loses its claim). No retries: the next minute's sweep is the
    // retry, and a sweep Scheduler could not invoke lands on the infrastructure DLQ (a fault of the
    // stack: the DLQ alarm) after at most a minute. CloudFormation's AWS::Scheduler::Schedule has
    // no ActionAfterCompletion: the API's default NONE applies, and a rate() schedule without an
    // end date never completes, so nothing ever deletes it.
    this.sweepSchedule = new scheduler.CfnSchedule(this, 'SweepSchedule', {
      description: 'task-scheduler sweeper: re-arms every task that should be moving and is overdue',
      // Ref (the group's name) rather than the L2's literal name: CloudFormation then creates
      // the group first.
      groupName: (this.sweepScheduleGroup.node.defaultChild as scheduler.CfnScheduleGroup).ref,
      scheduleExpression: SWEEP_SCHEDULE_EXPRESSION,
      flexibleTimeWindow: { mode: 'OFF' },
      state: 'ENABLED',
      target: {
        arn: this.fn.functionArn,
        roleArn: this.schedulerRole.roleArn,
        input: JSON.stringify(SWEEP_EVENT),
        retryPolicy: { maximumRetryAttempts: 0, maximumEventAgeInSeconds: 60 },
        deadLetterConfig: { arn: this.deadLetterQueue.queueArn },
      },
    });
    // The first sweep must find the role's permissions in place (else it would be dead-lettered
    // on every deployment): wait for the role's policy, not redundantly for the role (GetAtt).
    this.sweepSchedule.addOverride(
      'DependsOn',
      this.schedulerRole.node
        .findAll()
        .filter((c): c is iam.CfnPolicy => c instanceof iam.CfnPolicy)
        .map((p) => this.getLogicalId(p)),
    );

    // ------------------------------------------------------------- HTTP API
    this.accessLogGroup = new logs.LogGroup(this, 'ApiAccessLogs', {
      retention: logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.api = new apigwv2.HttpApi(this, 'HttpApi', {
      description: 'task-scheduler HTTP API (SigV4/IAM; the caller principal owns its tasks)',
      createDefaultStage: false,
      defaultAuthorizer: new HttpIamAuthorizer(),
    });
    // Throttling: the API is called by back-end services, not browsers. 50 req/s sustained and
    // bursts of 100 are ~100x the average load of a million tasks a month (0.4 req/s), yet cap
    // what a runaway client can cost (Lambda concurrency, DynamoDB writes, schedules) far below
    // the account-wide 10,000 req/s default that would otherwise apply.
    this.apiStage = new apigwv2.HttpStage(this, 'DefaultStage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: props.apiRateLimit ?? 50, burstLimit: props.apiBurstLimit ?? 100 },
      accessLogSettings: {
        destination: new apigwv2.LogGroupLogDestination(this.accessLogGroup),
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            requestTime: '$context.requestTime',
            ip: '$context.identity.sourceIp',
            caller: '$context.identity.userArn',
            httpMethod: '$context.httpMethod',
            routeKey: '$context.routeKey',
            path: '$context.path',
            status: '$context.status',
            protocol: '$context.protocol',
            responseLength: '$context.responseLength',
            responseLatency: '$context.responseLatency',
            integrationLatency: '$context.integrationLatency',
            integrationError: '$context.integrationErrorMessage',
            authorizerError: '$context.authorizer.error',
          }),
        ),
      },
    });

    const integration = new HttpLambdaIntegration('Function', this.fn, {
      payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
    });
    let healthRoute: apigwv2.HttpRoute | undefined;
    for (const route of ROUTES) {
      const [added] = this.api.addRoutes({
        path: route.path,
        methods: [route.method],
        integration,
        ...(route.iam ? {} : { authorizer: new apigwv2.HttpNoneAuthorizer() }),
      });
      if (route.path === '/health') healthRoute = added;
    }
    if (!healthRoute) throw new Error('ROUTES must contain GET /health');
    this.healthRoute = healthRoute;

    // ----------------------------------------------------------- operations
    this.operations = new Operations(this, 'Operations', {
      fn: this.fn,
      deadLetterQueue: this.deadLetterQueue,
      failedTasksQueue: this.failedTasksQueue,
      delayQueue: this.delayQueue,
      scheduleGroup: this.scheduleGroup,
      sweepScheduleGroup: this.sweepScheduleGroup,
      apiStage: this.apiStage,
      alarmEmail: props.alarmEmail,
      latenessAlarmMs: props.latenessAlarmMs ?? 5000,
    });

    // -------------------------------------------------------------- outputs
    new CfnOutput(this, 'ApiUrl', { value: this.apiStage.url, description: 'Base URL of the HTTP API (SigV4, service execute-api)' });
    new CfnOutput(this, 'TableName', { value: this.table.tableName });
    new CfnOutput(this, 'DelayQueueUrl', { value: this.delayQueue.queueUrl });
    new CfnOutput(this, 'DeadLetterQueueUrl', {
      value: this.deadLetterQueue.queueUrl,
      description: 'Infrastructure DLQ: wake-ups Scheduler, Lambda or the delay queue gave up on (alarmed)',
    });
    new CfnOutput(this, 'FailedTasksQueueUrl', {
      value: this.failedTasksQueue.queueUrl,
      description: "Customers' failed tasks (one dead letter per task); read, then retry or tell the owner",
    });
    new CfnOutput(this, 'ScheduleGroupName', { value: this.scheduleGroup.scheduleGroupName });
    new CfnOutput(this, 'FunctionName', { value: this.fn.functionName });
    new CfnOutput(this, 'SigningSecretArn', {
      value: this.signingSecret.secretArn,
      description: 'Webhook receivers verify signatures with this secret (raw key bytes)',
    });
    new CfnOutput(this, 'DashboardUrl', {
      value: `https://${Aws.REGION}.console.aws.amazon.com/cloudwatch/home?region=${Aws.REGION}#dashboards:name=${this.operations.dashboard.dashboardName}`,
    });

    this.nagAcknowledgements = acknowledgeNagFindings(this);
  }

  /** `arn:<partition>:scheduler:<region>:<account>:schedule/<group>/*`: this group's schedules only. */
  scheduleArns(): string {
    return Stack.of(this).formatArn({
      service: 'scheduler',
      resource: 'schedule',
      resourceName: `${this.scheduleGroup.scheduleGroupName}/*`,
    });
  }
}
