-- Resume the stable learner: tideline.dev/pause-learning=false. The operator reads a change
-- of the annotation (a pause for concept drift holds until one), and anything but "true" as
-- learning: one that says false already becomes "resumed", a change too. (Not removed: an
-- action's object without the only annotation left it in place.)
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
if obj.metadata.annotations["tideline.dev/pause-learning"] == "false" then
  obj.metadata.annotations["tideline.dev/pause-learning"] = "resumed"
else
  obj.metadata.annotations["tideline.dev/pause-learning"] = "false"
end
return obj
