//! `[upstreams.NAME.credentials]`: loading the password of a resolve-mode
//! upstream from `password_file` or `password_env` when the configuration
//! is loaded, so that a missing secret stops the server at start and not at
//! the first pull.
//!
//! A password file is read whole, with its trailing newline (`\n` or
//! `\r\n`) removed, and a relative path is relative to the configuration
//! file's directory. Nothing here logs the password, and the core's
//! `Password` hides it from `Debug`.

use std::path::Path;

use registry_redirect_core::policy::{FieldPath, FieldSegment, Password};
use registry_redirect_core::PolicySpec;

/// Reads the value of an environment variable, or `None` when it is unset
/// or not valid Unicode. Tests pass their own.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Looks a variable up in the process environment.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads the password of every upstream with credentials into the spec,
/// and returns each error with the field it concerns.
pub(crate) fn load_passwords(
    spec: &mut PolicySpec,
    dir: &Path,
    env: EnvLookup<'_>,
) -> Vec<(FieldPath, String)> {
    let mut errors = Vec::new();
    for (name, upstream) in &mut spec.upstreams {
        let Some(credentials) = upstream.credentials.as_mut() else {
            continue;
        };
        let field = |key: &str| {
            let mut path = vec![
                FieldSegment::Key("upstreams".to_owned()),
                FieldSegment::Key(name.clone()),
                FieldSegment::Key("credentials".to_owned()),
            ];
            if !key.is_empty() {
                path.push(FieldSegment::Key(key.to_owned()));
            }
            FieldPath(path)
        };

        let loaded =
            match (&credentials.password_file, &credentials.password_env) {
                (Some(_), Some(_)) => Err((
                    field("password_env"),
                    "set exactly one of password_file and password_env, not both".to_owned(),
                )),
                (None, None) => Err((
                    field(""),
                    "missing password_file or password_env (set exactly one, such as \
                 password_file = \"/run/secrets/hub-password\")"
                        .to_owned(),
                )),
                (Some(file), None) => read_password_file(dir, file)
                    .map_err(|message| (field("password_file"), message)),
                (None, Some(variable)) => read_password_env(variable, env)
                    .map_err(|message| (field("password_env"), message)),
            };
        match loaded {
            Ok(password) => credentials.password = Some(password),
            Err((path, message)) => errors.push((path.clone(), format!("{path}: {message}"))),
        }
    }
    errors
}

fn read_password_file(dir: &Path, file: &str) -> Result<Password, String> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("failed to read \"{}\": {error}", path.display()))?;
    let password = text
        .strip_suffix('\n')
        .map(|text| text.strip_suffix('\r').unwrap_or(text))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(format!(
            "\"{}\" is empty (expected the password, optionally followed by a newline)",
            path.display()
        ));
    }
    Ok(Password::new(password))
}

fn read_password_env(variable: &str, env: EnvLookup<'_>) -> Result<Password, String> {
    match env(variable) {
        None => Err(format!(
            "environment variable {variable} is not set or not valid UTF-8 (expected the \
             password)"
        )),
        Some(value) if value.is_empty() => Err(format!(
            "environment variable {variable} is empty (expected the password)"
        )),
        Some(value) => Ok(Password::new(value)),
    }
}
