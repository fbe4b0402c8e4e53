//! Host tests: dispatch, reload, timers, sandbox and budgets.
