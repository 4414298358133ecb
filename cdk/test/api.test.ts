import { Match } from 'aws-cdk-lib/assertions';
import { onlyResource, resourcesOfType, synth } from './helpers';

describe('task-scheduler stack: HTTP API', () => {
  const { template, stack } = synth();
  const id = (c: { node: { defaultChild?: unknown } }) => stack.getLogicalId(c.node.defaultChild as never);
  const apiId = id(stack.api);
  const fnId = id(stack.fn);

  test('an HTTP API (API Gateway v2)', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
  });

  test('every route of the contract; IAM on all but GET /health', () => {
    const routes = Object.fromEntries(
      resourcesOfType(template, 'AWS::ApiGatewayV2::Route').map(([, r]) => [r.Properties.RouteKey, r.Properties.AuthorizationType]),
    );
    expect(routes).toEqual({
      'POST /tasks': 'AWS_IAM',
      'GET /tasks': 'AWS_IAM',
      'GET /tasks/{task_id}': 'AWS_IAM',
      'DELETE /tasks/{task_id}': 'AWS_IAM',
      'POST /tasks/{task_id}/retry': 'AWS_IAM',
      'PATCH /tasks/{task_id}': 'AWS_IAM',
      'POST /tasks/{task_id}/run': 'AWS_IAM',
      'POST /schedule-task': 'AWS_IAM',
      'POST /schedules': 'AWS_IAM',
      'GET /schedules': 'AWS_IAM',
      'GET /schedules/{schedule_id}': 'AWS_IAM',
      'PATCH /schedules/{schedule_id}': 'AWS_IAM',
      'DELETE /schedules/{schedule_id}': 'AWS_IAM',
      'POST /schedules/{schedule_id}/trigger': 'AWS_IAM',
      'GET /openapi.json': 'AWS_IAM',
      'GET /health': 'NONE',
    });
    // IAM authorization needs no authorizer resource; there is no $default catch-all route.
    template.resourceCountIs('AWS::ApiGatewayV2::Authorizer', 0);
  });

  test('every route goes to the one function, payload format 2.0', () => {
    const [integrationId, integration] = onlyResource(template, 'AWS::ApiGatewayV2::Integration');
    expect(integration.Properties).toEqual({
      ApiId: { Ref: apiId },
      IntegrationType: 'AWS_PROXY',
      IntegrationUri: { 'Fn::GetAtt': [fnId, 'Arn'] },
      PayloadFormatVersion: '2.0',
    });
    for (const [, route] of resourcesOfType(template, 'AWS::ApiGatewayV2::Route')) {
      expect(route.Properties.ApiId).toEqual({ Ref: apiId });
      expect(route.Properties.Target).toEqual({ 'Fn::Join': ['', ['integrations/', { Ref: integrationId }]] });
    }
  });

  test('one auto-deployed $default stage with throttling and JSON access logs', () => {
    const [, stage] = onlyResource(template, 'AWS::ApiGatewayV2::Stage');
    expect(stage.Properties).toMatchObject({
      ApiId: { Ref: apiId },
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
      AccessLogSettings: { DestinationArn: { 'Fn::GetAtt': [id(stack.accessLogGroup), 'Arn'] } },
    });
    const format = JSON.parse(stage.Properties.AccessLogSettings.Format);
    expect(format).toMatchObject({
      requestId: '$context.requestId',
      caller: '$context.identity.userArn',
      routeKey: '$context.routeKey',
      status: '$context.status',
      integrationError: '$context.integrationErrorMessage',
    });
    template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });

  test('throttling is configurable by context', () => {
    synth({ apiRateLimit: '10', apiBurstLimit: '20' }).template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      DefaultRouteSettings: Match.objectLike({ ThrottlingRateLimit: 10, ThrottlingBurstLimit: 20 }),
    });
  });
});
