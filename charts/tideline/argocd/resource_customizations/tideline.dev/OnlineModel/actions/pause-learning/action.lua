-- Pause the stable learner: tideline.dev/pause-learning=true (servers go on serving).
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
obj.metadata.annotations["tideline.dev/pause-learning"] = "true"
return obj
