//! The replicated cluster: the metadata quorum of the controller voters.

pub mod quorum;
