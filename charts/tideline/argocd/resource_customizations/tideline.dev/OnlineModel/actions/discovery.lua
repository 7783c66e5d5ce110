-- Argo CD resource actions for tideline.dev/OnlineModel: which of them apply now.
-- Install: argocd-cm, key resource.customizations.actions.tideline.dev_OnlineModel
-- (docs/operator.md shows the snippet). Each action sets one of the annotations the operator
-- reads (docs/operator.md, "Annotations"); nothing else. Read from the status the operator
-- writes and the annotations already set, with Lua's base and table libraries only.
local actions = {}
local status = obj.status or {}
local annotations = obj.metadata.annotations or {}

-- a canary in flight: started and neither aborted nor promoted yet
local canary = status.canaryRevision ~= nil and status.aborted == nil
actions["promote"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-forward",
  ["displayName"] = "Promote the canary"}
actions["abort"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-times-circle",
  ["displayName"] = "Abort the canary"}

-- a proven version to go back to that is not served already, and not the target of a
-- rollback the annotation asked for before (the operator acts on a new number only)
local good = status.lastGoodVersion
local back = good ~= nil and status.servedVersion ~= good and status.manualRollbackTo ~= good
local rollback = "Roll back to lastGood"
if good ~= nil then rollback = rollback .. " (v" .. tostring(good) .. ")" end
actions["rollback"] = {["disabled"] = not back, ["iconClass"] = "fa fa-fw fa-undo",
  ["displayName"] = rollback}

-- learning paused: by the annotation (set, even if not acted on yet) or as the status says
local paused = annotations["tideline.dev/pause-learning"] == "true" or status.learningPaused == true
actions["pause-learning"] = {["disabled"] = paused, ["iconClass"] = "fa fa-fw fa-pause",
  ["displayName"] = "Pause learning"}
actions["resume-learning"] = {["disabled"] = not paused, ["iconClass"] = "fa fa-fw fa-play",
  ["displayName"] = "Resume learning"}
return actions
