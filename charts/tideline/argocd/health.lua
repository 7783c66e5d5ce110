-- Argo CD health check for tideline.dev/OnlineModel.
-- Install: argocd-cm, key resource.customizations.health.tideline.dev_OnlineModel
-- (the README shows the snippet). Healthy, Progressing, Degraded or Suspended,
-- read from the status the operator writes; never from the spec.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the tideline operator"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
local function condition(kind)
  if obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then return c end
  end
  return nil
end
local phase = obj.status.phase
if phase == "Degraded" then
  local c = condition("Degraded") or condition("Ready")
  hs.status = "Degraded"
  hs.message = (c and c.message ~= "" and c.message) or "Degraded"
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "Canary paused at step " .. tostring(obj.status.currentStep) .. ": annotate tideline.dev/promote=true to go on"
elseif phase == "Progressing" then
  hs.status = "Progressing"
  if obj.status.canaryRevision ~= nil then
    hs.message = "Canary " .. obj.status.canaryRevision .. " at weight " .. tostring(obj.status.canaryWeight or 0)
  else
    hs.message = "Waiting for replicas"
  end
elseif phase == "Healthy" then
  hs.status = "Healthy"
  hs.message = "Serving revision " .. tostring(obj.status.stableRevision) .. " version " .. tostring(obj.status.servedVersion)
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
