-- Target expressions compare installed versions (`installed.rootfs < 2.4.0`)
-- in SQL as well as in memory, and both must agree. Each installed version
-- gets the order-preserving key `airlift_protocol::target_expr::version_key`
-- builds (byte order = version order): '' when the text is not a version,
-- NULL until computed. The store writes it with every inventory; rows
-- recorded before this migration are filled when the store opens (the key
-- is computed in Rust, once, rather than in two SQL dialects).
ALTER TABLE device_installed ADD COLUMN version_key TEXT;
CREATE INDEX device_installed_name_version_key ON device_installed (name, version_key);
