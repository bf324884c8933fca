-- A downloading device's last progress report (bytes done of total), shown
-- to operators; not history: only the latest is kept.
ALTER TABLE deployment_devices ADD COLUMN progress_done INTEGER;
ALTER TABLE deployment_devices ADD COLUMN progress_total INTEGER;
