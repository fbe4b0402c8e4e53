//! Security tests written from the attacker's side (issue 11), one test binary with one module
//! per dialect. Each module states the invariants it checks at its top.

mod call_reject_conn;
