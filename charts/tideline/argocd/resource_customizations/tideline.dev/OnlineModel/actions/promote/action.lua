-- Promote the canary now: tideline.dev/promote=true (and no abort beside it, which the
-- operator would read first). The operator leaves the annotation on the resource.
local status = obj.status or {}
if status.canaryRevision == nil or status.aborted ~= nil then
  error("no canary in flight to promote", 0)
end
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
obj.metadata.annotations["tideline.dev/promote"] = "true"
obj.metadata.annotations["tideline.dev/abort"] = nil
return obj
