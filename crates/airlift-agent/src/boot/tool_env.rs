//! What the GRUB and U-Boot backends share: both keep the same variables in
//! an environment read and written through a tool, and learn the running
//! slot from the kernel command line — so their [`BootControl`] is one
//! implementation over [`ToolEnv`].

use std::path::Path;

use super::vars::{self, BootVars, Writes};
use super::{cmdline, BootControl, BootError, Slot};

/// A bootloader environment reached through its own tool.
pub(super) trait ToolEnv: Send {
    /// Reads and parses the Airlift variables.
    fn read_vars(&self) -> Result<BootVars, BootError>;
    /// Writes all `writes` in one tool invocation.
    fn write_vars(&self, writes: &Writes) -> Result<(), BootError>;
    /// Where the kernel command line is read from.
    fn cmdline_path(&self) -> &Path;
}

impl<T: ToolEnv> BootControl for T {
    fn booted_slot(&self) -> Result<Slot, BootError> {
        cmdline::booted_slot(self.cmdline_path())
    }

    fn start_trial(&mut self, slot: Slot) -> Result<(), BootError> {
        let writes = vars::start_trial(&self.read_vars()?, self.booted_slot()?, slot)?;
        self.write_vars(&writes)
    }

    fn commit(&mut self) -> Result<(), BootError> {
        let writes = vars::commit(&self.read_vars()?, self.booted_slot()?)?;
        self.write_vars(&writes)
    }

    fn abandon_trial(&mut self, previous: Slot) -> Result<(), BootError> {
        // Read first: a missing or damaged environment is an error, not
        // something to overwrite.
        self.read_vars()?;
        self.write_vars(&vars::abandon_trial(previous))
    }

    fn trial_pending(&self) -> Result<bool, BootError> {
        Ok(self.read_vars()?.upgrade_available)
    }
}
