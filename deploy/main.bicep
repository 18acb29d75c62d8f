// imagedist workers as an Azure Container Apps job, with the identity and roles they need.
//
// Deploy into the resource group that holds the job (and the container registry, if private):
//   az deployment group create -g <rg> -f deploy/main.bicep -p image=... configToml="$(cat imagedist.toml)" ...
// Each execution starts `parallelism` replicas of `imagedist worker`; they share the work through
// the state tables and exit when none is left. See docs/deploy.md.
//
// Least privilege: the workers never run `setup` (that stays with an administrator), so the
// identity gets no right on any subscription, only on the resource groups and accounts it works in:
//   Storage Blob Data Contributor  on the resource groups of the staging and target accounts:
//                                  write pages, start copies, read properties, delete blobs, and
//                                  get the user delegation key that signs each copy's SAS
//   Storage Table Data Contributor on the state account only: jobs, items, leases, logs
//   Contributor                    on the images resource groups only: create, read, replace
//                                  and delete managed images (no narrower built-in role has
//                                  Microsoft.Compute/images/*)
//   AcrPull                        on the registry, when the image is private
targetScope = 'resourceGroup'

@description('Where the job, its environment and its identity go.')
param location string = resourceGroup().location

@description('Base name of the job, its environment, identity and logs.')
@minLength(2)
@maxLength(24)
param name string = 'imagedist-worker'

@description('The worker image, built from deploy/Dockerfile: <registry>/imagedist-worker:<tag>.')
param image string

@description('Name of the Azure Container Registry in this resource group that holds the image; empty for a public image.')
param registryName string = ''

@description('The imagedist config (the TOML text, with backend = "azure" and auth = "default"). Kept as a Container Apps secret and mounted as a file the workers read through IMAGEDIST_CONFIG.')
@secure()
param configToml string

@description('Schedule: an execution every cronExpression (workers exit when no work is left, so this is how new jobs are picked up). Manual: only when started (az containerapp job start).')
@allowed([
  'Schedule'
  'Manual'
])
param triggerType string = 'Schedule'

@description('When a scheduled execution starts (UTC, cron with five fields).')
param cronExpression string = '*/15 * * * *'

@description('Worker replicas per execution: each takes leases on the items it can move.')
@minValue(1)
@maxValue(100)
param parallelism int = 3

@description('Seconds a replica may run before it is stopped; a stopped worker\'s leases run out and another worker takes its items over.')
@minValue(60)
param replicaTimeoutSeconds int = 6 * 3600

@description('More arguments for `imagedist worker`, such as ["--job", "<id>"].')
param workerArgs array = []

@description('CPU cores per replica.')
param cpu string = '1.0'

@description('Memory per replica (Container Apps pairs 2Gi with 1 core).')
param memory string = '2Gi'

@description('The resource groups holding the staging and target storage accounts: [{subscriptionId, resourceGroup}] (imagedist-staging and imagedist-storage in each subscription by default).')
param storageResourceGroups array

@description('The state account (the staging account unless [azure] state_account says otherwise): {subscriptionId, resourceGroup, name}.')
param stateAccount object

@description('The images resource groups: [{subscriptionId, resourceGroup}] (imagedist-images in each target subscription by default).')
param imagesResourceGroups array

var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  contributor: 'b24988ac-6180-42dd-a0bd-a68e2c03a0c7'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
}
var configSecret = 'imagedist-config'
var configDir = '/etc/imagedist'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-id'
  location: location
}

resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: '${name}-logs'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${name}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = if (!empty(registryName)) {
  name: empty(registryName) ? 'unused' : registryName
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(registryName)) {
  name: guid(resourceGroup().id, registryName, identity.id, roles.acrPull)
  scope: registry
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
  }
}

module blobRoles 'modules/group-role.bicep' = [for (group, i) in storageResourceGroups: {
  name: '${name}-blob-${i}'
  scope: resourceGroup(group.subscriptionId, group.resourceGroup)
  params: {
    principalId: identity.properties.principalId
    roleDefinitionId: roles.storageBlobDataContributor
  }
}]

module tableRole 'modules/account-role.bicep' = {
  name: '${name}-table'
  scope: resourceGroup(stateAccount.subscriptionId, stateAccount.resourceGroup)
  params: {
    accountName: stateAccount.name
    principalId: identity.properties.principalId
    roleDefinitionId: roles.storageTableDataContributor
  }
}

module imageRoles 'modules/group-role.bicep' = [for (group, i) in imagesResourceGroups: {
  name: '${name}-images-${i}'
  scope: resourceGroup(group.subscriptionId, group.resourceGroup)
  params: {
    principalId: identity.properties.principalId
    roleDefinitionId: roles.contributor
  }
}]

var trigger = {
  parallelism: parallelism
  replicaCompletionCount: parallelism
}

resource job 'Microsoft.App/jobs@2024-03-01' = {
  name: name
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    configuration: {
      triggerType: triggerType
      replicaTimeout: replicaTimeoutSeconds
      // A failed replica is not restarted within the execution: the next execution (or another
      // replica, once the leases run out) resumes its items.
      replicaRetryLimit: 0
      scheduleTriggerConfig: triggerType == 'Schedule' ? union(trigger, { cronExpression: cronExpression }) : null
      manualTriggerConfig: triggerType == 'Manual' ? trigger : null
      registries: empty(registryName) ? [] : [
        {
          server: registry.properties.loginServer
          identity: identity.id
        }
      ]
      secrets: [
        {
          name: configSecret
          value: configToml
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'worker'
          image: image
          // The image's entrypoint is `imagedist worker`; these are its arguments.
          args: workerArgs
          env: [
            { name: 'IMAGEDIST_CONFIG', value: '${configDir}/imagedist.toml' }
            // DefaultAzureCredential picks the user-assigned identity by its client id.
            { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
          ]
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          volumeMounts: [
            { volumeName: 'config', mountPath: configDir }
          ]
        }
      ]
      volumes: [
        {
          name: 'config'
          storageType: 'Secret'
          secrets: [
            { secretRef: configSecret, path: 'imagedist.toml' }
          ]
        }
      ]
    }
  }
  // The first execution must find its roles in place (and the registry pull allowed).
  dependsOn: [
    acrPull
    blobRoles
    tableRole
    imageRoles
  ]
}

output jobName string = job.name
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output logAnalyticsWorkspaceId string = logs.properties.customerId
