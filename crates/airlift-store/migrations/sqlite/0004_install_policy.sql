-- When a deployment's devices may install: a daily window and download-only
-- (JSON, airlift_protocol::install::InstallPolicy; '{}' installs at once).
ALTER TABLE deployments ADD COLUMN install_policy TEXT NOT NULL DEFAULT '{}';
