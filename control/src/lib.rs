//! keyhop's control plane: configuration loading and validation, and (in Sentinel mode) following
//! masters through Redis Sentinel and publishing routing tables.

#![warn(missing_docs)]

pub mod config;
pub mod etcd;
pub mod fleet;
pub mod mover;
pub mod sentinel;

pub use config::{
    Config, ConfigError, EtcdConfig, GroupConfig, Problem, ReadFrom, SentinelConfig, TlsConfig,
    TlsSetup, describe,
};
pub use sentinel::{
    ControlError, GroupSpec, OnPublish, SentinelStatus, WatcherConfig, WatcherHandle, start,
    start_with_table,
};
