-- Dynamic deployments: a deployment to a tag or to attributes may take in
-- devices that join its target later and stay active until it ends (an
-- operator ends it, or its end date passes), rather than finishing once
-- every device it has is done. Deployments made before this migration are
-- not dynamic: they finish as they always did.
ALTER TABLE deployments ADD COLUMN dynamic BOOLEAN NOT NULL DEFAULT FALSE;
-- When a dynamic deployment stops (or stopped) taking in devices; NULL:
-- not before an operator ends it.
ALTER TABLE deployments ADD COLUMN ends_at BIGINT;
-- Whether the device joined the deployment's target after it was created
-- (added at its first check-in since), so the detail can say how many did.
ALTER TABLE deployment_devices ADD COLUMN joined_late BOOLEAN NOT NULL DEFAULT FALSE;
