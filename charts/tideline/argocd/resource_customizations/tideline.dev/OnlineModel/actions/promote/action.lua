-- Promote the canary now: tideline.dev/promote=<the canary's revision> (and no abort beside it, which the
-- operator would read first). The operator reads a change of
-- the annotation once: left on the resource, it asks nothing of the next canary.
local status = obj.status or {}
if status.canaryRevision == nil or status.aborted ~= nil then
  error("no canary in flight to promote", 0)
end
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
-- (the canary's revision: a request for that canary alone, read once by the operator;
-- "true" where it read that revision last - the same canary back after another)
local seen = (status.requestsSeen or {})["tideline.dev/promote"]
if seen == status.canaryRevision then
  obj.metadata.annotations["tideline.dev/promote"] = "true"
else
  obj.metadata.annotations["tideline.dev/promote"] = status.canaryRevision
end
obj.metadata.annotations["tideline.dev/abort"] = nil
return obj
