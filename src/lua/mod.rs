//! Lua host (in progress)
