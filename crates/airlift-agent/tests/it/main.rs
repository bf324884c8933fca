//! End to end: a real `airlift-server` (in-process) and the real
//! `airlift-agent` binary, with a harness playing the bootloader between
//! the agent's runs.

mod attacks;
mod damaged_block;
mod device_truth;
mod encrypted;
mod harness;
mod laptop;
mod mtls;
use airlift_server::testing as server;
mod network;
mod offload;
mod push;
mod retrieval;
mod shadow;
mod soft;
mod trust;
mod updates;
