// bighub-siem -> Microsoft Sentinel: the same resources as sentinel.json, in Bicep.
// Custom tables, a data collection endpoint, a data collection rule with the sink's
// stream declarations and transforms, and the role assignment that lets the sink's
// identity post to it. Deploy into the resource group of the Sentinel workspace:
//   az deployment group create -g <rg> -f sentinel.bicep -p workspaceName=<ws> principalId=<object id>
// Needs Bicep 0.27 or later (single-line objects with commas).

@description('Name of the Log Analytics workspace that Microsoft Sentinel uses (in this resource group).')
param workspaceName string

@description('Region of the DCE and DCR: the workspace\'s region.')
param location string = resourceGroup().location

@description('Name of the data collection endpoint.')
param dataCollectionEndpointName string = 'bighub-siem-dce'

@description('Name of the data collection rule.')
param dataCollectionRuleName string = 'bighub-siem-dcr'

@description('Where rule changes go: the ASIM audit table (normalised, what Sentinel content reads), or a custom table for workspaces without it.')
@allowed([
  'ASimAuditEventLogs'
  'BighubRuleChanges_CL'
])
param ruleChangesTable string = 'ASimAuditEventLogs'

@description('Interactive retention of the custom tables.')
@minValue(4)
@maxValue(730)
param retentionInDays int = 90

@description('Object id of the service principal or managed identity the sink authenticates as; empty: assign the role yourself.')
param principalId string = ''

@description('Kind of principalId (managed identities are ServicePrincipal).')
@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string = 'ServicePrincipal'

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var useAsim = ruleChangesTable == 'ASimAuditEventLogs'
var decisionsTransform = 'source'
var ruleChangesAsimTransform = 'source | extend EventOriginalUid = EventId, EventOriginalType = EventType, ActorUsername = Actor, AdditionalFields = pack(\'EventId\', EventId, \'Source\', Source, \'DeliveryId\', DeliveryId, \'ReceivedAt\', ReceivedAt, \'Payload\', Payload, \'PayloadTruncated\', PayloadTruncated) | extend EventType = AuditEventType, EventStartTime = TimeGenerated, EventEndTime = TimeGenerated, EventCount = toint(1), EventResult = \'Success\', EventSeverity = \'Informational\', EventProduct = \'BIGHUB\', EventVendor = \'BIGHUB\', EventSchemaVersion = \'0.1\', ActorUsernameType = \'Simple\', ValueType = \'Other\', EventMessage = strcat(Operation, \' \', Object) | project-away EventId, Actor, AuditEventType, Source, DeliveryId, ReceivedAt, Payload, PayloadTruncated'
var ruleChangesCustomTransform = 'source'

resource workspace 'Microsoft.OperationalInsights/workspaces@2022-10-01' existing = {
  name: workspaceName
}

resource decisionsTable 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: workspace
  name: 'BighubDecisions_CL'
  properties: {
    plan: 'Analytics'
    retentionInDays: retentionInDays
    schema: {
      name: 'BighubDecisions_CL'
      description: 'BIGHUB decisions and approvals exported by bighub-siem (one row per event; EventId repeats only on redelivery).'
      columns: [
        { name: 'TimeGenerated', type: 'dateTime' }
        { name: 'EventId', type: 'string' }
        { name: 'EventType', type: 'string' }
        { name: 'Category', type: 'string' }
        { name: 'Source', type: 'string' }
        { name: 'Actor', type: 'string' }
        { name: 'Action', type: 'string' }
        { name: 'Domain', type: 'string' }
        { name: 'Allowed', type: 'boolean' }
        { name: 'Result', type: 'string' }
        { name: 'RiskScore', type: 'real' }
        { name: 'RuleId', type: 'string' }
        { name: 'Payload', type: 'dynamic' }
        { name: 'PayloadTruncated', type: 'boolean' }
        { name: 'ReceivedAt', type: 'dateTime' }
        { name: 'DeliveryId', type: 'string' }
      ]
    }
  }
}

resource ruleChangesTableResource 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = if (!useAsim) {
  parent: workspace
  name: 'BighubRuleChanges_CL'
  properties: {
    plan: 'Analytics'
    retentionInDays: retentionInDays
    schema: {
      name: 'BighubRuleChanges_CL'
      description: 'BIGHUB rule changes exported by bighub-siem, for workspaces without ASimAuditEventLogs.'
      columns: [
        { name: 'TimeGenerated', type: 'dateTime' }
        { name: 'EventId', type: 'string' }
        { name: 'EventType', type: 'string' }
        { name: 'Source', type: 'string' }
        { name: 'Actor', type: 'string' }
        { name: 'AuditEventType', type: 'string' }
        { name: 'Operation', type: 'string' }
        { name: 'Object', type: 'string' }
        { name: 'ObjectId', type: 'string' }
        { name: 'ObjectType', type: 'string' }
        { name: 'OldValue', type: 'string' }
        { name: 'NewValue', type: 'string' }
        { name: 'Payload', type: 'dynamic' }
        { name: 'PayloadTruncated', type: 'boolean' }
        { name: 'ReceivedAt', type: 'dateTime' }
        { name: 'DeliveryId', type: 'string' }
      ]
    }
  }
}

resource dce 'Microsoft.Insights/dataCollectionEndpoints@2022-06-01' = {
  name: dataCollectionEndpointName
  location: location
  properties: {
    networkAcls: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

resource dcr 'Microsoft.Insights/dataCollectionRules@2022-06-01' = {
  name: dataCollectionRuleName
  location: location
  dependsOn: [
    decisionsTable
    ruleChangesTableResource
  ]
  properties: {
    dataCollectionEndpointId: dce.id
    streamDeclarations: {
      'Custom-BighubDecisions': {
        columns: [
          { name: 'TimeGenerated', type: 'datetime' }
          { name: 'EventId', type: 'string' }
          { name: 'EventType', type: 'string' }
          { name: 'Category', type: 'string' }
          { name: 'Source', type: 'string' }
          { name: 'Actor', type: 'string' }
          { name: 'Action', type: 'string' }
          { name: 'Domain', type: 'string' }
          { name: 'Allowed', type: 'boolean' }
          { name: 'Result', type: 'string' }
          { name: 'RiskScore', type: 'real' }
          { name: 'RuleId', type: 'string' }
          { name: 'Payload', type: 'dynamic' }
          { name: 'PayloadTruncated', type: 'boolean' }
          { name: 'ReceivedAt', type: 'datetime' }
          { name: 'DeliveryId', type: 'string' }
        ]
      }
      'Custom-BighubRuleChanges': {
        columns: [
          { name: 'TimeGenerated', type: 'datetime' }
          { name: 'EventId', type: 'string' }
          { name: 'EventType', type: 'string' }
          { name: 'Source', type: 'string' }
          { name: 'Actor', type: 'string' }
          { name: 'AuditEventType', type: 'string' }
          { name: 'Operation', type: 'string' }
          { name: 'Object', type: 'string' }
          { name: 'ObjectId', type: 'string' }
          { name: 'ObjectType', type: 'string' }
          { name: 'OldValue', type: 'string' }
          { name: 'NewValue', type: 'string' }
          { name: 'Payload', type: 'dynamic' }
          { name: 'PayloadTruncated', type: 'boolean' }
          { name: 'ReceivedAt', type: 'datetime' }
          { name: 'DeliveryId', type: 'string' }
        ]
      }
    }
    destinations: {
      logAnalytics: [
        {
          workspaceResourceId: workspace.id
          name: 'sentinelWorkspace'
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          'Custom-BighubDecisions'
        ]
        destinations: [
          'sentinelWorkspace'
        ]
        transformKql: decisionsTransform
        outputStream: 'Custom-BighubDecisions_CL'
      }
      {
        streams: [
          'Custom-BighubRuleChanges'
        ]
        destinations: [
          'sentinelWorkspace'
        ]
        transformKql: useAsim ? ruleChangesAsimTransform : ruleChangesCustomTransform
        outputStream: useAsim ? 'Microsoft-ASimAuditEventLogs' : 'Custom-BighubRuleChanges_CL'
      }
    ]
  }
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(dcr.id, principalId, monitoringMetricsPublisher)
  scope: dcr
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: principalType
    description: 'bighub-siem posts BIGHUB events through this data collection rule'
  }
}

output endpoint string = dce.properties.logsIngestion.endpoint
output dcrImmutableId string = dcr.properties.immutableId
output decisionStream string = 'Custom-BighubDecisions'
output ruleStream string = 'Custom-BighubRuleChanges'
