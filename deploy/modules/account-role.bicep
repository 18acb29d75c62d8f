// One role assignment on one storage account of the resource group this module is deployed to.
targetScope = 'resourceGroup'

@description('The storage account the role is scoped to.')
param accountName string

@description('Object id of the principal that gets the role (the workers\' managed identity).')
param principalId string

@description('GUID of the built-in role definition.')
param roleDefinitionId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: accountName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, roleDefinitionId)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
  }
}
