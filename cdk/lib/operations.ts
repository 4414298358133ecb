import { Aws, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cw_actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import functionMetrics from '../../shared/metrics.json';

/** One metric the function emits in Embedded Metric Format. */
export interface FunctionMetric {
  readonly name: string;
  readonly unit: string;
  /** Its label on the dashboard. */
  readonly label: string;
}

/**
 * The function's own metrics and their namespace, from shared/metrics.json: the one list of
 * their names, which the Rust side (shared/src/metrics.rs) is tested against too.
 */
export const METRIC_NAMESPACE: string = functionMetrics.namespace;
export const FUNCTION_METRICS: readonly FunctionMetric[] = functionMetrics.metrics;

/** A metric of the list by name; a name the function does not emit stops synthesis. */
export function functionMetric(name: string): FunctionMetric {
  const metric = FUNCTION_METRICS.find((m) => m.name === name);
  if (!metric) throw new Error(`the function emits no metric named ${name} (shared/metrics.json)`);
  return metric;
}

/**
 * Alarm thresholds, each with its reason (cdk/README.md, "Alarms").
 * - Scheduler drops and failed dead letters: any one is a wake-up gone with no trace, so 1.
 * - Throttles: occasional throttles are retried (async events for up to 6 h, delay-queue
 *   messages on their next receive, API callers get an error to retry), so one 5-minute
 *   period with throttles is not an incident; throttles in 3 consecutive periods (15 min) mean
 *   too little concurrency, an hour and three quarters before a throttled wake-up could run out
 *   of its 20 receives.
 * - Oldest delay-queue message: a message is at most 15 min (the longest DelaySeconds) old
 *   when it becomes visible, and one transient failure hides it for another 6 min (the
 *   visibility timeout); 30 min means the queue is not being drained.
 * - Tasks recovered: the sweeper re-arms only a task whose wake-up was lost (or never armed,
 *   after a failed call), so any re-arm, > 0 in one 5-minute period, is worth a look. It does not
 *   mean a task is lost (it was just recovered); the alarm clears after a quiet period.
 * - Sweeper not running: the sweep group's schedule fires 5 times in 5 minutes; no invocation
 *   attempt in 2 consecutive periods (10 min, missing data counts) means the schedule was
 *   disabled or deleted, and the 2-minute recovery bound no longer holds. One period alone could
 *   be a late metric.
 */
export const ALARM_THRESHOLDS = {
  throttlesPeriods: 3,
  delayQueueOldestMessageSeconds: 30 * 60,
  tasksRecovered: 0,
  sweeperSilentPeriods: 2,
} as const;

export interface OperationsProps {
  readonly fn: lambda.IFunction;
  /** The infrastructure DLQ (Scheduler, async invocations, the delay queue's redrive). */
  readonly deadLetterQueue: sqs.IQueue;
  /** The customers' failed tasks: on the dashboard, never paging. */
  readonly failedTasksQueue: sqs.IQueue;
  readonly delayQueue: sqs.IQueue;
  readonly scheduleGroup: scheduler.IScheduleGroup;
  /** The sweeper's group: its one recurring schedule. */
  readonly sweepScheduleGroup: scheduler.IScheduleGroup;
  readonly apiStage: apigwv2.IHttpStage;
  /** When set, the alarms notify an SNS topic with this e-mail subscriber. */
  readonly alarmEmail?: string;
  /** p99 delivery lateness (ms) above which the lateness alarm fires. */
  readonly latenessAlarmMs: number;
}

/** The dashboard, the alarms and (optionally) the SNS topic the alarms notify. */
export class Operations extends Construct {
  readonly dashboard: cloudwatch.Dashboard;
  readonly dlqAlarm: cloudwatch.Alarm;
  readonly functionErrorsAlarm: cloudwatch.Alarm;
  readonly latenessAlarm: cloudwatch.Alarm;
  readonly schedulerDroppedAlarm: cloudwatch.Alarm;
  readonly schedulerDeadLetterFailedAlarm: cloudwatch.Alarm;
  readonly throttlesAlarm: cloudwatch.Alarm;
  readonly delayQueueAgeAlarm: cloudwatch.Alarm;
  readonly tasksRecoveredAlarm: cloudwatch.Alarm;
  readonly sweeperNotRunningAlarm: cloudwatch.Alarm;
  readonly alarmTopic?: sns.Topic;
  readonly alarmTopicKey?: kms.Key;

  constructor(scope: Construct, id: string, props: OperationsProps) {
    super(scope, id);
    const period = Duration.minutes(5);

    // The function's own metrics (EMF, namespace TaskScheduler, no dimensions).
    const count = (metricName: string, label: string) =>
      new cloudwatch.Metric({ namespace: METRIC_NAMESPACE, metricName, statistic: 'Sum', period, label });
    // No unit filter: a metric whose unit differs from the filter would silently match nothing.
    const latenessMetric = functionMetric('DeliveryLatenessMs');
    const lateness = (statistic: string, label?: string) =>
      new cloudwatch.Metric({ namespace: METRIC_NAMESPACE, metricName: latenessMetric.name, statistic, period, label });

    const dlqDepth = (label?: string) =>
      props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period, label });

    this.dlqAlarm = new cloudwatch.Alarm(this, 'DlqNotEmpty', {
      alarmDescription:
        'The infrastructure dead-letter queue holds at least one message: a delay-queue message ' +
        'ran out of receives, or Scheduler/Lambda could not deliver a wake-up. Find the cause ' +
        "(throttles, errors), then redrive. Customers' failed tasks are on the failed-tasks queue " +
        'and do not raise this alarm.',
      metric: dlqDepth(),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    this.functionErrorsAlarm = new cloudwatch.Alarm(this, 'FunctionErrors', {
      alarmDescription:
        'The task-scheduler function reported invocation errors (unhandled errors, timeouts or ' +
        'crashes; webhook failures are handled and do not count here).',
      metric: props.fn.metricErrors({ statistic: 'Sum', period }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    this.latenessAlarm = new cloudwatch.Alarm(this, 'DeliveryLateness', {
      alarmDescription:
        `p99 delivery lateness has exceeded ${props.latenessAlarmMs} ms for 15 minutes: ` +
        'deliveries start late (throttling, a backlog on the delay queue, or Scheduler delays).',
      metric: lateness('p99'),
      threshold: props.latenessAlarmMs,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 3,
      datapointsToAlarm: 3,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    const group = props.scheduleGroup;
    const fn = props.fn;
    const lost = (id: string, metric: cloudwatch.Metric, description: string) =>
      new cloudwatch.Alarm(this, id, {
        alarmDescription: description,
        metric,
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    this.schedulerDroppedAlarm = lost(
      'SchedulerInvocationsDropped',
      group.metricDropped({ statistic: 'Sum', period }),
      'EventBridge Scheduler dropped a wake-up of this schedule group (retries exhausted with no ' +
        'dead letter): the task was not woken. Check the function role and the Scheduler role.',
    );
    this.schedulerDeadLetterFailedAlarm = lost(
      'SchedulerDeadLettersFailed',
      group.metricFailedToBeSentToDLQ(undefined, { statistic: 'Sum', period }),
      'EventBridge Scheduler could not put an undeliverable wake-up on the infrastructure DLQ: ' +
        "the wake-up is gone. Check the Scheduler role's sqs:SendMessage and the queue.",
    );
    this.throttlesAlarm = new cloudwatch.Alarm(this, 'FunctionThrottles', {
      alarmDescription:
        'The function has been throttled for 15 minutes: its concurrency is too small for the ' +
        'load (reservedConcurrency, queueMaxConcurrency or the account limit). Wake-ups wait; a ' +
        'delay-queue message throttled for 2 hours goes to the DLQ.',
      metric: fn.metricThrottles({ statistic: 'Sum', period }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: ALARM_THRESHOLDS.throttlesPeriods,
      datapointsToAlarm: ALARM_THRESHOLDS.throttlesPeriods,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.delayQueueAgeAlarm = new cloudwatch.Alarm(this, 'DelayQueueOldestMessage', {
      alarmDescription:
        'The oldest delay-queue message is over 30 minutes old (the longest delay is 15 min): ' +
        'the queue is not being drained (throttles, errors, or a disabled event source).',
      metric: props.delayQueue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum', period }),
      threshold: ALARM_THRESHOLDS.delayQueueOldestMessageSeconds,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    // The sweeper.
    const recoveredMetric = functionMetric('TasksRecovered');
    // No label on the alarm's metric: a labelled metric becomes a metric-math alarm.
    const recovered = (label?: string) =>
      new cloudwatch.Metric({ namespace: METRIC_NAMESPACE, metricName: recoveredMetric.name, statistic: 'Sum', period, label });
    this.tasksRecoveredAlarm = new cloudwatch.Alarm(this, 'TasksRecovered', {
      alarmDescription:
        'The sweeper re-armed at least one task: a wake-up was lost (dead-lettered, dropped, or ' +
        'never armed after a failed call) and the task was recovered late. Nothing is lost, but ' +
        'something failed: look at the DLQ, Scheduler and throttles alarms and the function logs ' +
        '(the sweeper logs each task it re-arms).',
      metric: recovered(),
      threshold: ALARM_THRESHOLDS.tasksRecovered,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const sweeps = (label?: string) => props.sweepScheduleGroup.metricAttempts({ statistic: 'Sum', period, label });
    this.sweeperNotRunningAlarm = new cloudwatch.Alarm(this, 'SweeperNotRunning', {
      alarmDescription:
        'EventBridge Scheduler has not tried to invoke the sweeper for 10 minutes (it should every ' +
        'minute): the sweep schedule is disabled or gone, so lost wake-ups are no longer recovered. ' +
        'Re-enable it, or redeploy the stack.',
      metric: sweeps(),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: ALARM_THRESHOLDS.sweeperSilentPeriods,
      datapointsToAlarm: ALARM_THRESHOLDS.sweeperSilentPeriods,
      // No data is no invocation attempt: that is the fault this alarm is for.
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });

    const alarms = [
      this.dlqAlarm,
      this.functionErrorsAlarm,
      this.latenessAlarm,
      this.schedulerDroppedAlarm,
      this.schedulerDeadLetterFailedAlarm,
      this.throttlesAlarm,
      this.delayQueueAgeAlarm,
      this.tasksRecoveredAlarm,
      this.sweeperNotRunningAlarm,
    ];

    if (props.alarmEmail) {
      // CloudWatch can only publish to an encrypted topic through a customer-managed key whose
      // policy lets cloudwatch.amazonaws.com use it (the aws/sns key cannot be shared).
      this.alarmTopicKey = new kms.Key(this, 'AlarmTopicKey', {
        description: `Encrypts the alarm topic of ${Stack.of(this).stackName}`,
        enableKeyRotation: true,
        removalPolicy: RemovalPolicy.DESTROY,
        pendingWindow: Duration.days(7),
      });
      this.alarmTopicKey.addToResourcePolicy(
        new iam.PolicyStatement({
          sid: 'AllowCloudWatchAlarmsToPublish',
          principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
          actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
          resources: ['*'],
          conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } },
        }),
      );
      this.alarmTopic = new sns.Topic(this, 'AlarmTopic', {
        displayName: `${Stack.of(this).stackName} alarms`,
        masterKey: this.alarmTopicKey,
        enforceSSL: true,
      });
      // enforceSSL makes CDK write a topic policy, and a topic policy replaces SNS's default one
      // (which let the account's principals publish): CloudWatch must be allowed explicitly, for
      // alarms of this account only.
      this.alarmTopic.addToResourcePolicy(
        new iam.PolicyStatement({
          sid: 'AllowCloudWatchAlarmsToPublish',
          principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
          actions: ['sns:Publish'],
          resources: [this.alarmTopic.topicArn],
          conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } },
        }),
      );
      this.alarmTopic.addSubscription(new subs.EmailSubscription(props.alarmEmail));
      for (const alarm of alarms) {
        alarm.addAlarmAction(new cw_actions.SnsAction(this.alarmTopic));
        alarm.addOkAction(new cw_actions.SnsAction(this.alarmTopic));
      }
    }

    // Dashboards are global to an account: the region in the name keeps one stack name deployed
    // to two regions from overwriting each other's dashboard.
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `${Stack.of(this).stackName}-${Aws.REGION}`,
      defaultInterval: Duration.hours(3),
      widgets: [
        [
          new cloudwatch.TextWidget({
            markdown:
              `# ${Stack.of(this).stackName}\nTasks, deliveries and lateness come from the function ` +
              `(namespace \`${METRIC_NAMESPACE}\`, Embedded Metric Format); the rest are AWS metrics.`,
            width: 24,
            height: 2,
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Tasks',
            // Every counter of the list (created, delivered, failed, retried, cancelled).
            left: FUNCTION_METRICS.filter((m) => m.unit === 'Count').map((m) => count(m.name, m.label)),
            width: 12,
          }),
          new cloudwatch.GraphWidget({
            title: 'Delivery lateness (ms)',
            left: ['p50', 'p99'].map((p) => lateness(p, `${latenessMetric.label} ${p}`)),
            leftAnnotations: [{ value: props.latenessAlarmMs, label: 'alarm (p99)' }],
            width: 12,
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Dead letters',
            left: [
              dlqDepth('infrastructure DLQ (alarmed)'),
              props.failedTasksQueue.metricApproximateNumberOfMessagesVisible({
                statistic: 'Maximum',
                period,
                label: 'failed tasks',
              }),
            ],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: 'Delay queue',
            left: [
              props.delayQueue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period, label: 'visible' }),
              props.delayQueue.metricApproximateNumberOfMessagesNotVisible({ statistic: 'Maximum', period, label: 'in flight' }),
            ],
            right: [
              props.delayQueue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum', period, label: 'oldest (s)' }),
            ],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: 'EventBridge Scheduler (schedule group)',
            left: [
              group.metricTargetErrors({ period, label: 'TargetErrorCount' }),
              group.metricSentToDLQ({ period, label: 'InvocationsSentToDeadLetterCount' }),
              group.metricDropped({ period, label: 'InvocationDroppedCount' }),
              group.metricFailedToBeSentToDLQ(undefined, { period, label: 'InvocationsFailedToBeSentToDeadLetterCount' }),
            ],
            width: 8,
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Function invocations, errors and throttles',
            left: [
              fn.metricInvocations({ statistic: 'Sum', period }),
              fn.metricErrors({ statistic: 'Sum', period }),
              fn.metricThrottles({ statistic: 'Sum', period }),
            ],
            width: 12,
          }),
          new cloudwatch.GraphWidget({
            title: 'Function duration (ms)',
            left: [
              fn.metricDuration({ statistic: 'p50', period, label: 'p50' }),
              fn.metricDuration({ statistic: 'p99', period, label: 'p99' }),
              fn.metricDuration({ statistic: 'Maximum', period, label: 'max' }),
            ],
            width: 12,
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'HTTP API',
            left: [
              props.apiStage.metricCount({ statistic: 'Sum', period, label: 'requests' }),
              props.apiStage.metricClientError({ statistic: 'Sum', period, label: '4xx' }),
              props.apiStage.metricServerError({ statistic: 'Sum', period, label: '5xx' }),
            ],
            right: [props.apiStage.metricLatency({ statistic: 'p99', period, label: 'latency p99 (ms)' })],
            width: 12,
          }),
          new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms, width: 12 }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Sweeper: tasks re-armed (alarmed above 0) and sweeps',
            left: [recovered('re-armed by the sweeper')],
            leftAnnotations: [{ value: ALARM_THRESHOLDS.tasksRecovered, label: 'alarm (> 0)' }],
            right: [sweeps('sweeps (Scheduler invocation attempts)')],
            width: 24,
          }),
        ],
      ],
    });
  }
}
