-- Promote the canary now: tideline.dev/promote=<the canary's revision> (and no abort beside it, which the
-- operator would read first). The operator reads a change of
-- the annotation once: left on the resource, it asks nothing of the next canary.
local status = obj.status or {}
if status.canaryRevision == nil or status.aborted ~= nil then
  error("no canary in flight to promote", 0)
end
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
-- (the canary's revision: a request for that canary alone, read once by the operator)
obj.metadata.annotations["tideline.dev/promote"] = status.canaryRevision
obj.metadata.annotations["tideline.dev/abort"] = nil
return obj
