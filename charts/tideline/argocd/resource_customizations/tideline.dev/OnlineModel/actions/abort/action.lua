-- Abort the canary: tideline.dev/abort=true (weight 0, the canary's children removed,
-- stable untouched); a promote set before goes. The operator leaves the annotation on the
-- resource.
local status = obj.status or {}
if status.canaryRevision == nil or status.aborted ~= nil then
  error("no canary in flight to abort", 0)
end
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
obj.metadata.annotations["tideline.dev/abort"] = "true"
obj.metadata.annotations["tideline.dev/promote"] = nil
return obj
