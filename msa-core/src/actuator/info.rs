//! `/actuator/info`: what the application is and how it was built.

use serde::Serialize;

/// Build and version-control facts for `/actuator/info`'s `build` and `git` sections.
///
/// [`build_info!`](crate::build_info) fills it at compile time from Cargo's package
/// variables and, when a build script sets them, `MSA_GIT_COMMIT`, `MSA_GIT_BRANCH` and
/// `MSA_BUILD_TIME`. A build script that sets them:
///
/// ```no_run
/// // build.rs
/// use std::process::Command;
///
/// fn git(args: &[&str]) -> Option<String> {
///     let out = Command::new("git").args(args).output().ok()?;
///     out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
/// }
///
/// fn main() {
///     if let Some(commit) = git(&["rev-parse", "HEAD"]) {
///         println!("cargo:rustc-env=MSA_GIT_COMMIT={commit}");
///     }
///     if let Some(branch) = git(&["rev-parse", "--abbrev-ref", "HEAD"]) {
///         println!("cargo:rustc-env=MSA_GIT_BRANCH={branch}");
///     }
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// The package name.
    pub name: String,
    /// The package version.
    pub version: String,
    /// The commit the binary was built from.
    pub git_commit: Option<String>,
    /// The branch the binary was built from.
    pub git_branch: Option<String>,
    /// When the binary was built (RFC 3339).
    pub time: Option<String>,
}

/// The [`BuildInfo`] of the crate that invokes it.
///
/// # Examples
///
/// ```
/// let build = msa_core::build_info!();
/// assert_eq!(build.name, env!("CARGO_PKG_NAME"));
/// ```
#[macro_export]
macro_rules! build_info {
    () => {
        $crate::actuator::BuildInfo {
            name: env!("CARGO_PKG_NAME").to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: option_env!("MSA_GIT_COMMIT").map(str::to_owned),
            git_branch: option_env!("MSA_GIT_BRANCH").map(str::to_owned),
            time: option_env!("MSA_BUILD_TIME").map(str::to_owned),
        }
    };
}

impl BuildInfo {
    /// Writes the `build` and `git` sections into an info document.
    pub(super) fn write_into(&self, info: &mut serde_json::Map<String, serde_json::Value>) {
        let mut build = serde_json::json!({ "name": self.name, "version": self.version });
        if let Some(time) = &self.time {
            build["time"] = time.clone().into();
        }
        info.insert("build".into(), build);
        if self.git_commit.is_some() || self.git_branch.is_some() {
            let mut git = serde_json::Map::new();
            if let Some(branch) = &self.git_branch {
                git.insert("branch".into(), branch.clone().into());
            }
            if let Some(commit) = &self.git_commit {
                git.insert("commit".into(), serde_json::json!({ "id": commit }));
            }
            info.insert("git".into(), git.into());
        }
    }
}
