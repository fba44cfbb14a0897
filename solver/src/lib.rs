//! strata-solver
