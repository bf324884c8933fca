-- A downloading device's last progress report (bytes done of total, and
-- when it came), shown to operators and keeping a moving download from
-- timing out; not history: only the latest is kept.
ALTER TABLE deployment_devices ADD COLUMN progress_done BIGINT;
ALTER TABLE deployment_devices ADD COLUMN progress_total BIGINT;
ALTER TABLE deployment_devices ADD COLUMN progress_at BIGINT;
