-- Serve the stable revision's lastGood version (proven on labels):
-- tideline.dev/rollback-to=<status.lastGoodVersion>. The operator rolls back once per
-- number: it records it in status.manualRollbackTo.
local status = obj.status or {}
local good = status.lastGoodVersion
if good == nil then
  error("no lastGood version: none was proven on labels yet", 0)
end
if obj.metadata.annotations == nil then obj.metadata.annotations = {} end
obj.metadata.annotations["tideline.dev/rollback-to"] = tostring(good)
return obj
