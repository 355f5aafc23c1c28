//! Exit codes shared by tlsd and tlsc (see stls(7)).
pub const USAGE: i32 = 100;
