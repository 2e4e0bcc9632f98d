//! Log formats. (stub: helper fills in)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

pub fn init(format: LogFormat, node: &str) {
    let _ = (format, node);
}
