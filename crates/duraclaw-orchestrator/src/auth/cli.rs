//! `duraclaw user add|passwd|remove`: the only way to create, change or
//! remove a user. A password comes from stdin, from an environment variable
//! named on the command line, or from the terminal; never from argv.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use duraclaw_core::{Error, Result};

use super::password::{MAX_PASSWORD_BYTES, validate_name, validate_password};
use super::{Auth, AuthOptions};

/// The auth database's file name in the data directory.
pub const DB_FILE: &str = "auth.db";

/// The auth database's path in `data_dir`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Where a command reads a password from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The first line of stdin.
    Stdin,
    /// The value of this environment variable (its name, not the secret,
    /// is what the command line holds).
    Env(String),
    /// Typed twice on the terminal without echo.
    Terminal,
}

impl PasswordSource {
    /// From the command line's flags; both at once is refused.
    pub fn from_flags(stdin: bool, env: Option<String>) -> Result<Self> {
        match (stdin, env) {
            (true, Some(_)) => Err(Error::Invalid(
                "give one of --password-stdin and --password-env".into(),
            )),
            (true, None) => Ok(PasswordSource::Stdin),
            (false, Some(var)) => Ok(PasswordSource::Env(var)),
            (false, None) => Ok(PasswordSource::Terminal),
        }
    }

    async fn read(self, name: &str) -> Result<String> {
        let prompt_name = name.to_owned();
        let password = tokio::task::spawn_blocking(move || match self {
            PasswordSource::Stdin => read_first_line(std::io::stdin().lock()),
            PasswordSource::Env(var) => read_env(&var),
            PasswordSource::Terminal => prompt_twice(&prompt_name),
        })
        .await
        .map_err(|e| Error::Invalid(format!("cannot read the password: {e}")))??;
        validate_password(&password)?;
        Ok(password)
    }
}

fn read_env(var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        Ok(_) => Err(Error::Invalid(format!(
            "the environment variable {var} is empty"
        ))),
        Err(std::env::VarError::NotPresent) => Err(Error::Invalid(format!(
            "the environment variable {var} is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Invalid(format!(
            "the environment variable {var} is not valid UTF-8"
        ))),
    }
}

/// Adds the user `name` to the auth database in `data_dir` (created if
/// needed), with a password from `source`.
pub async fn add_user_command(data_dir: &Path, name: &str, source: PasswordSource) -> Result<()> {
    // Refuse a bad name before asking for a password.
    validate_name(name)?;
    let password = source.read(name).await?;
    tokio::fs::create_dir_all(data_dir).await.map_err(|e| {
        Error::Invalid(format!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let path = db_path(data_dir);
    let auth = Auth::open(&path, AuthOptions::default())
        .await
        .map_err(|e| crate::naming_file(&path, e))?;
    auth.add_user(name, &password).await?;
    println!("added user {name}");
    Ok(())
}

async fn open_existing(data_dir: &Path) -> Result<std::sync::Arc<Auth>> {
    let path = db_path(data_dir);
    if !path.exists() {
        return Err(Error::NotFound {
            what: "auth database (add a user first)",
            id: path.display().to_string(),
        });
    }
    Auth::open(&path, AuthOptions::default())
        .await
        .map_err(|e| crate::naming_file(&path, e))
}

/// Changes the password of the user `name` in `data_dir` to one from
/// `source`, and ends every login session of that user: a browser logged
/// in with the old password must log in again.
pub async fn passwd_command(data_dir: &Path, name: &str, source: PasswordSource) -> Result<()> {
    validate_name(name)?;
    let auth = open_existing(data_dir).await?;
    // Say "no such user" before asking for a password.
    if !auth.user_exists(name).await? {
        return Err(Error::NotFound {
            what: "user",
            id: name.to_owned(),
        });
    }
    let password = source.read(name).await?;
    let ended = auth.login_sessions(name).await?;
    auth.set_password(name, &password).await?;
    println!("changed the password of {name}; ended {ended} login session(s)");
    Ok(())
}

/// Removes the user `name` from `data_dir` and ends their login sessions.
pub async fn remove_command(data_dir: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    let auth = open_existing(data_dir).await?;
    let ended = auth.login_sessions(name).await?;
    auth.remove_user(name).await?;
    println!("removed user {name}; ended {ended} login session(s)");
    Ok(())
}

/// The first line of `input` without its line ending; other whitespace is
/// part of the password.
fn read_first_line(input: impl BufRead) -> Result<String> {
    let mut line = String::new();
    // One byte over the limit is enough to tell that it is over.
    let limit = u64::try_from(MAX_PASSWORD_BYTES + 3).unwrap_or(u64::MAX);
    input
        .take(limit)
        .read_line(&mut line)
        .map_err(|e| Error::Invalid(format!("cannot read the password from stdin: {e}")))?;
    if line.is_empty() {
        return Err(Error::Invalid(
            "no password on stdin: --password-stdin reads it from the first line".into(),
        ));
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(line.to_owned())
}

fn prompt_twice(name: &str) -> Result<String> {
    let no_terminal = |e: std::io::Error| {
        Error::Invalid(format!(
            "cannot read a password from the terminal ({e}); \
             pass --password-stdin to read it from stdin"
        ))
    };
    let first =
        rpassword::prompt_password(format!("Password for {name}: ")).map_err(no_terminal)?;
    validate_password(&first)?;
    let second = rpassword::prompt_password("Repeat the password: ").map_err(no_terminal)?;
    if first != second {
        return Err(Error::Invalid("the two passwords differ".into()));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_password() {
        let read = |s: &str| read_first_line(s.as_bytes());
        assert_eq!(read("pass word 1\nsecond").unwrap(), "pass word 1");
        assert_eq!(read(" spaced  \r\n").unwrap(), " spaced  ");
        assert_eq!(read("no newline").unwrap(), "no newline");
        assert_eq!(read("\n").unwrap(), "");
        assert!(read("").is_err());
        let long = "x".repeat(MAX_PASSWORD_BYTES * 3);
        let got = read(&long).unwrap();
        assert!(got.len() > MAX_PASSWORD_BYTES && validate_password(&got).is_err());
    }

    #[test]
    fn invalid_utf8_on_stdin_is_an_error_not_a_panic() {
        assert!(read_first_line(&b"\xff\xfe\n"[..]).is_err());
    }
}
