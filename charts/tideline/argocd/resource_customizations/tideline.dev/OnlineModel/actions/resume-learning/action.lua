-- Resume the stable learner: tideline.dev/pause-learning=false.
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
obj.metadata.annotations["tideline.dev/pause-learning"] = "false"
return obj
