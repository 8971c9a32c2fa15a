//! Fleet mode: many keyhop instances sharing one slot map in etcd, and the commands that
//! change it.

pub mod admin;
pub mod cli;
pub mod member;
pub mod sentinel;
