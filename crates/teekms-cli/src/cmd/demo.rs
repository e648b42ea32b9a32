//! placeholder
pub async fn run() -> crate::failure::CmdResult { Ok(()) }
