-- Soft deployments (the policy itself is in deployments.install_policy, JSON:
-- airlift_protocol::install::InstallPolicy.soft; rows without it stay forced).
-- How many times the device put the install off, and when it last did.
ALTER TABLE deployment_devices ADD COLUMN deferrals INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployment_devices ADD COLUMN deferred_at BIGINT;
