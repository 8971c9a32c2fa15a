//! keyhop's routing logic: slot hashing, hash tags, the command table and the routing table.
//!
//! Pure logic with no I/O: the data plane (`keyhop-proxy`) asks it where a command goes, and the
//! control plane (`keyhop-control`) builds the [`RoutingTable`] values it publishes.

pub mod command;
pub mod flux;
pub mod slot;
pub mod table;

pub use command::{Args, CommandSpec, Merge, Policy};
pub use flux::{Flux, FluxRange, FluxState};
pub use slot::{SLOT_COUNT, key_slot};
pub use table::{Group, GroupId, Replica, RoutingTable, SharedTable, TableError};
