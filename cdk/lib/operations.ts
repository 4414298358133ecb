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

export interface OperationsProps {
  readonly fn: lambda.IFunction;
  readonly deadLetterQueue: sqs.IQueue;
  readonly delayQueue: sqs.IQueue;
  readonly scheduleGroup: scheduler.IScheduleGroup;
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
        'The dead-letter queue holds at least one message: a task failed for good, a delay-queue ' +
        'message was redriven, or Scheduler/Lambda could not deliver a wake-up. Inspect and redrive.',
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

    const alarms = [this.dlqAlarm, this.functionErrorsAlarm, this.latenessAlarm];

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
      this.alarmTopic.addSubscription(new subs.EmailSubscription(props.alarmEmail));
      for (const alarm of alarms) {
        alarm.addAlarmAction(new cw_actions.SnsAction(this.alarmTopic));
        alarm.addOkAction(new cw_actions.SnsAction(this.alarmTopic));
      }
    }

    const group = props.scheduleGroup;
    const fn = props.fn;
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: Stack.of(this).stackName,
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
            title: 'Dead-letter queue depth',
            left: [dlqDepth('DLQ messages')],
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
      ],
    });
  }
}
