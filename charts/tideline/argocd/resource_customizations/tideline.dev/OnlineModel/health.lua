-- Argo CD health check for tideline.dev/OnlineModel, in Argo CD's own layout
-- (resource_customizations/<group>/<kind>/health.lua with health_test.yaml).
-- Install: argocd-cm, key resource.customizations.health.tideline.dev_OnlineModel
-- (docs/operator.md shows the snippet). Read from the status the operator writes, never
-- from the spec. Uses only Lua's base and table libraries: Argo CD opens no other
-- for a check given in argocd-cm.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the tideline operator"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local function condition(kind)
  if status.conditions == nil then return nil end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then return c end
  end
  return nil
end
local function said(c, otherwise)
  if c ~= nil and c.message ~= nil and c.message ~= "" then return c.message end
  return otherwise
end
local function version(v)
  if v == nil then return "?" end
  return tostring(v)
end
local phase = status.phase
if phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = said(condition("Degraded"), said(condition("Ready"), "Degraded"))
  return hs
end
if phase == "Paused" then
  hs.status = "Suspended"
  local at = ""
  if status.currentStep ~= nil then at = " at step " .. tostring(status.currentStep) end
  hs.message = "Canary paused" .. at .. ": annotate tideline.dev/promote=true to go on"
  return hs
end
if phase == "Progressing" then
  hs.status = "Progressing"
  if status.canaryRevision ~= nil then
    hs.message = "Canary " .. status.canaryRevision .. " at weight " .. tostring(status.canaryWeight or 0)
  else
    hs.message = "Waiting for replicas: " .. said(condition("Ready"), "not all ready")
  end
  return hs
end
if phase ~= "Healthy" then
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
  return hs
end
-- Healthy by phase; the conditions may still say otherwise
local ready, quality, drifting = condition("Ready"), condition("ModelQuality"), condition("Drifting")
local loaded = condition("ModelLoaded")
if loaded ~= nil and loaded.status == "False" then
  -- before Ready: pods that cannot load the model are never ready, and waiting would be wrong
  hs.status = "Degraded"
  hs.message = "The model cannot be loaded (" .. tostring(loaded.reason) .. "): "
    .. said(loaded, "a component of the model says so")
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Progressing"
  hs.message = "Waiting for replicas: " .. said(ready, "not all ready")
elseif status.pinned == true then
  local rb = status.lastRollback or {}
  hs.status = "Degraded"
  hs.message = "Rolled back to version " .. version(rb.to) .. " (" .. tostring(rb.reason or "guardrail")
    .. "): a proven version serves while the learner recovers"
elseif quality ~= nil and quality.status == "False" then
  hs.status = "Degraded"
  hs.message = said(quality, "the served version is worse than a proven one")
elseif drifting ~= nil and drifting.status == "True" then
  hs.status = "Progressing"
  hs.message = "Drift detected (" .. said(drifting, "drift") .. "): the model adapts"
else
  hs.status = "Healthy"
  hs.message = "Serving revision " .. tostring(status.stableRevision) .. " version " .. version(status.servedVersion)
end
return hs
