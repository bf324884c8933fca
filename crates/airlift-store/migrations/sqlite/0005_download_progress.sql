-- A downloading device's last progress report (bytes done of total, and
-- when it came), shown to operators and keeping a moving download from
-- timing out; not history: only the latest is kept.
ALTER TABLE deployment_devices ADD COLUMN progress_done INTEGER;
ALTER TABLE deployment_devices ADD COLUMN progress_total INTEGER;
ALTER TABLE deployment_devices ADD COLUMN progress_at INTEGER;
