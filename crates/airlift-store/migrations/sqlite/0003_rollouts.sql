-- Phased rollouts: where each deployment's rollout stands, which engine
-- instance may advance it (a lease, so that several servers on one database
-- take turns), and which phase admitted each device (NULL: not admitted; an
-- all-at-once deployment never admits).
ALTER TABLE deployments ADD COLUMN phase BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN phase_started_at BIGINT;
ALTER TABLE deployments ADD COLUMN phase_met_at BIGINT;
ALTER TABLE deployments ADD COLUMN status_reason TEXT;
ALTER TABLE deployments ADD COLUMN acknowledged_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN lease_owner TEXT;
ALTER TABLE deployments ADD COLUMN lease_until BIGINT;
ALTER TABLE deployment_devices ADD COLUMN phase BIGINT;
