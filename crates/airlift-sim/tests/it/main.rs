//! End to end: a real `airlift-server` (in-process) and a simulated fleet
//! of hundreds of devices running the real agent against it.

use airlift_server::testing as server;
mod fleet;
mod support;
