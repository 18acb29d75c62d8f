// One role assignment on the resource group this module is deployed to.
targetScope = 'resourceGroup'

@description('Object id of the principal that gets the role (the workers\' managed identity).')
param principalId string

@description('GUID of the built-in role definition.')
param roleDefinitionId string

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
  }
}
