//! GPIO (in progress)
