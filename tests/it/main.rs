//! End-to-end tests: the real `crmdump` binary against the sandbox over loopback HTTP,
//! writing to a real local folder, every file read back by an independent reader
//! (pyarrow, `tests/reader/read_export.py`) and compared with the sandbox's ground truth.

mod support;

mod chunking;
mod clouds;
mod commands;
mod conformance;
mod ddl;
mod deploy;
mod errors;
mod export;
mod failures;
mod faults;
mod fixture;
mod hive;
mod incremental;
mod lease;
mod library;
mod listen;
mod ownership;
mod parquet;
mod pipedrive;
mod postgres;
mod reconcile;
mod repository;
mod requests;
mod s3;
mod sequence;
mod spec_examples;
mod status;
mod stores;
mod verify;
mod views;
mod webhooks;
