//! What the benchmark binaries share: PostgreSQL schemas, percentiles and CPU
//! accounting (`common`), and the edge benchmark's parts (`edge`). A library,
//! so its unit tests build once instead of once per binary.

pub mod common;

pub mod edge {
    pub mod closed_loop;
    pub mod durable;
    pub mod payload;
    pub mod report;
    pub mod servers;
    pub mod table;
    pub mod verdict;
}
