//! `${NAME}` templates: values in jobs.toml (`env`, `http` headers, `[[notify]]` headers) that
//! name a variable of the node's environment instead of holding a secret. Validated at load
//! ([`variables`]), filled in when the node starts or runs ([`expand`]).

/// `template` with every `${NAME}` replaced; `Err(NAME)` for the first one `lookup` lacks.
pub fn expand(template: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        // `variables` validated the template at load: there is a closing brace.
        let end = after.find('}').unwrap_or(after.len());
        let var = &after[..end];
        out.push_str(&lookup(var).ok_or_else(|| var.to_string())?);
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// The variables a template names, or why it is malformed.
pub fn variables(template: &str) -> Result<Vec<&str>, String> {
    let mut vars = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err("an unclosed ${ (write ${NAME})".into());
        };
        let var = &after[..end];
        if !is_env_name(var) {
            return Err(format!(
                "${{{var}}} is not an environment variable name (letters, digits, '_')"
            ));
        }
        vars.push(var);
        rest = &after[end + 1..];
    }
    Ok(vars)
}

/// Letters, digits and '_', not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
