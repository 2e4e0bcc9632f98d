//! Wiring. (in progress)
use crate::config::Config;

/// A random, readable node id such as `quiet-otter-0412`.
pub fn random_node_id() -> String {
    let mut generator = names::Generator::with_naming(names::Name::Numbered);
    generator.next().unwrap_or_else(|| "node".to_string())
}

pub async fn run(config: Config, node: String) -> anyhow::Result<()> {
    let _ = (config, node);
    Ok(())
}
