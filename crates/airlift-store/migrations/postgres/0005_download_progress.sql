-- A downloading device's last progress report (bytes done of total), shown
-- to operators; not history: only the latest is kept.
ALTER TABLE deployment_devices ADD COLUMN progress_done BIGINT;
ALTER TABLE deployment_devices ADD COLUMN progress_total BIGINT;
