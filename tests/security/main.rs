//! Issue 11, tried from the attacker's side: one module per dialect (and the host).

mod david;
