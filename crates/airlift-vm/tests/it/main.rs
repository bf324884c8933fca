//! End-to-end tests of the agent on a real Linux in QEMU: real GRUB, real
//! reboots, real power cuts. One disk image is built (or found in the
//! cache) per run and shared; every test boots its own copy-on-write
//! overlay of it against its own server. Emulated (TCG) when KVM does not
//! work here: a boot takes about 10 s.

mod power_cuts;
mod uboot;
mod updates;
