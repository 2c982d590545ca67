//! `duraclaw up --demo`: a demo repository to work in and a first user, so
//! a newcomer sees the whole flow without a Claude account.

use std::path::Path;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_orchestrator::auth::{Auth, AuthOptions, random_token};
use duraclaw_orchestrator::naming_file;

/// Creates (once) a small git repository under the data directory and
/// returns the worktree pattern that finds it.
pub fn demo_worktrees(data_dir: &Path) -> Result<String> {
    let projects = data_dir.join("demo-projects");
    let repo_dir = projects.join("hello-world");
    if !repo_dir.join(".git").exists() {
        let fail = |e: &dyn std::fmt::Display| {
            Error::Invalid(format!(
                "cannot create the demo repository {}: {e}",
                repo_dir.display()
            ))
        };
        std::fs::create_dir_all(repo_dir.join("src")).map_err(|e| fail(&e))?;
        std::fs::write(
            repo_dir.join("README.md"),
            "# hello-world\n\nA tiny project for the Duraclaw demo.\n",
        )
        .map_err(|e| fail(&e))?;
        std::fs::write(
            repo_dir.join("Cargo.toml"),
            "[package]\nname = \"hello-world\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )
        .map_err(|e| fail(&e))?;
        std::fs::write(
            repo_dir.join("src/main.rs"),
            "fn main() {\n    println!(\"helo\");\n}\n",
        )
        .map_err(|e| fail(&e))?;
        let repo = git2::Repository::init(&repo_dir).map_err(|e| fail(&e))?;
        let mut index = repo.index().map_err(|e| fail(&e))?;
        for f in ["README.md", "Cargo.toml", "src/main.rs"] {
            index.add_path(Path::new(f)).map_err(|e| fail(&e))?;
        }
        index.write().map_err(|e| fail(&e))?;
        let tree_id = index.write_tree().map_err(|e| fail(&e))?;
        let tree = repo.find_tree(tree_id).map_err(|e| fail(&e))?;
        let sig =
            git2::Signature::now("Duraclaw demo", "demo@duraclaw.invalid").map_err(|e| fail(&e))?;
        repo.commit(Some("HEAD"), &sig, &sig, "Initial commit", &tree, &[])
            .map_err(|e| fail(&e))?;
    }
    let canonical = projects
        .canonicalize()
        .map_err(|e| Error::other(format!("cannot resolve {}", projects.display()), e))?;
    Ok(format!("{}/*", canonical.display()))
}

/// With no users yet, creates `demo` with a random password and prints it
/// once. There is never a default password.
pub async fn ensure_demo_user(data_dir: &Path) -> Result<()> {
    let path = data_dir.join("auth.db");
    let auth = Auth::open(&path, AuthOptions::default())
        .await
        .map_err(|e| naming_file(&path, e))?;
    if auth.has_users().await? {
        return Ok(());
    }
    let password = random_token()?;
    let password: String = password.chars().take(20).collect();
    auth.add_user("demo", &password).await?;
    println!("created the demo user: name `demo`, password `{password}` (shown once)");
    Ok(())
}
