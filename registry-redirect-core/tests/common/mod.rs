//! Helpers shared by the core's integration tests. The tower and CLI tests
//! and the fuzz targets include single files of this folder with `#[path]`.

pub mod corpus;
pub mod location;
pub mod origin;
pub mod verdict;
