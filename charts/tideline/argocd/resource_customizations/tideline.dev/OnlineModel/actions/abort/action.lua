-- Abort the canary: tideline.dev/abort=<the canary's revision> (weight 0, the canary's children removed,
-- stable untouched); a promote set before goes. The operator reads a change of the
-- annotation once: left on the resource, it asks nothing of the next canary.
local status = obj.status or {}
if status.canaryRevision == nil or status.aborted ~= nil then
  error("no canary in flight to abort", 0)
end
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
-- (the canary's revision: a request for that canary alone, read once by the operator;
-- "true" where it read that revision last - the same canary back after another)
local seen = (status.requestsSeen or {})["tideline.dev/abort"]
if seen == status.canaryRevision then
  obj.metadata.annotations["tideline.dev/abort"] = "true"
else
  obj.metadata.annotations["tideline.dev/abort"] = status.canaryRevision
end
obj.metadata.annotations["tideline.dev/promote"] = nil
return obj
