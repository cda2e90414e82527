//! The policy: what to protect, how to score, what to do. TOML, validated
//! with errors that name the line and the field, reloadable at run time.

mod watch;

use std::{
    borrow::Cow,
    ffi::OsStr,
    ops::Range,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
    time::Duration,
};

use agent_common::guard::CLASS_COUNT;
use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::Deserialize;
use serde_spanned::Spanned;

pub use watch::PolicyWatch;

/// The policy shipped with Levee, documented line by line.
pub const DEFAULT_POLICY: &str = include_str!("../../policy/default.toml");

/// Most protected path classes (the kernel counts class 0 as "any path").
pub const MAX_CLASSES: usize = CLASS_COUNT - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Monitor,
    Enforce,
}

/// Alert severities, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Process,
    ProcessGroup,
    Session,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    pub scoring: Scoring,
    pub guard: Guard,
    pub classes: Vec<PathClass>,
    pub allow: Allow,
    pub target: Target,
    pub safety: Safety,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    pub window_secs: u64,
    pub mass_deletion: u32,
    pub deletion_rate: u32,
    pub distinct_dirs: u32,
    pub alert_at: Severity,
    pub act_at: Severity,
}

impl Scoring {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    pub any_path_limit: u32,
    pub protect_devices: bool,
    pub kill_marked_on_exec: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PathClass {
    pub name: String,
    pub paths: Vec<PathBuf>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    #[serde(default)]
    pub executables: Vec<PathBuf>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Safety {
    #[serde(default)]
    pub never_kill: Vec<PathBuf>,
    pub max_kills_per_minute: u32,
}

/// The file as written, before validation; spans point back into it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    mode: Mode,
    scoring: Spanned<Scoring>,
    guard: Guard,
    path_class: Option<Spanned<Vec<Spanned<RawClass>>>>,
    #[serde(default)]
    allow: Allow,
    action: RawAction,
    safety: Safety,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: Spanned<String>,
    paths: Vec<Spanned<PathBuf>>,
    limit: Spanned<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    target: Target,
}

/// Why a policy was refused: the message, and where in the file.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("invalid policy: {message}")]
pub struct PolicyError {
    pub message: String,
    #[source_code]
    src: NamedSource<String>,
    #[label("here")]
    span: Option<SourceSpan>,
    #[help]
    help: Option<String>,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
}

impl PolicyError {
    fn new(
        name: &str,
        text: &str,
        message: String,
        span: Option<Range<usize>>,
        help: Option<String>,
    ) -> Box<Self> {
        let line = span.as_ref().map(|s| {
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        });
        Box::new(PolicyError {
            message,
            src: NamedSource::new(name, text.to_owned()),
            span: span.map(SourceSpan::from),
            help,
            line,
        })
    }

    /// The error with the offending lines quoted, for logs and terminals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
        if handler.render_report(&mut out, self).is_err() {
            out = self.to_string();
        }
        out
    }
}

impl Policy {
    /// The shipped default.
    pub fn default_policy() -> Policy {
        Policy::parse("default.toml", DEFAULT_POLICY).expect("the shipped policy is valid")
    }

    pub fn load(path: &Path) -> Result<Policy, Box<PolicyError>> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::new(&name, "", format!("cannot read {name}: {e}"), None, None))?;
        Policy::parse(&name, &text)
    }

    /// Parses and validates policy text; `name` labels errors.
    pub fn parse(name: &str, text: &str) -> Result<Policy, Box<PolicyError>> {
        let raw: RawPolicy = toml::from_str(text)
            .map_err(|e| PolicyError::new(name, text, e.message().to_owned(), e.span(), None))?;
        let fail = |message: String, span: Range<usize>, help: &str| {
            PolicyError::new(name, text, message, Some(span), Some(help.to_owned()))
        };

        let scoring_span = raw.scoring.span();
        let scoring = raw.scoring.into_inner();
        if scoring.window_secs == 0 {
            return Err(fail(
                "scoring.window_secs must be at least 1".into(),
                scoring_span,
                "e.g. 60",
            ));
        }
        if scoring.act_at < scoring.alert_at {
            return Err(fail(
                "scoring.act_at is below scoring.alert_at: the agent would act without alerting".into(),
                scoring_span,
                "make act_at at least alert_at",
            ));
        }
        let (classes_span, raw_classes) = match raw.path_class {
            Some(classes) => (classes.span(), classes.into_inner()),
            None => (0..0, Vec::new()),
        };
        if raw_classes.len() > MAX_CLASSES {
            return Err(fail(
                format!(
                    "{} path classes; at most {MAX_CLASSES} are supported",
                    raw_classes.len()
                ),
                classes_span,
                "merge classes that share a limit",
            ));
        }
        let mut classes: Vec<PathClass> = Vec::new();
        for class in raw_classes {
            let class = class.into_inner();
            let name_span = class.name.span();
            let class_name = class.name.into_inner();
            if class_name.is_empty() || classes.iter().any(|c| c.name == class_name) {
                return Err(fail(
                    format!("path_class.name {class_name:?} is empty or used twice"),
                    name_span,
                    "give each class its own name",
                ));
            }
            if *class.limit.get_ref() == 0 {
                return Err(fail(
                    format!("path_class {class_name:?}: limit must be at least 1"),
                    class.limit.span(),
                    "the number of deletions per window that gets a session killed",
                ));
            }
            let mut paths = Vec::new();
            for path in class.paths {
                if !path.get_ref().is_absolute() {
                    return Err(fail(
                        format!(
                            "path_class {class_name:?}: {:?} is not an absolute path",
                            path.get_ref()
                        ),
                        path.span(),
                        "paths start with /",
                    ));
                }
                // Normalised once here, as `class_of` compares bytes.
                paths.push(path.into_inner().components().collect());
            }
            classes.push(PathClass {
                name: class_name,
                paths,
                limit: class.limit.into_inner(),
            });
        }
        Ok(Policy {
            mode: raw.mode,
            scoring,
            guard: raw.guard,
            classes,
            allow: raw.allow,
            target: raw.action.target,
            safety: raw.safety,
        })
    }

    /// The class of a path by its longest matching prefix (whole components):
    /// its index in the kernel's numbering (1-based), or 0.
    pub fn class_of(&self, path: &[u8]) -> u32 {
        // Called for every destructive event: bytes compared directly, the
        // path normalised first only when it has empty or `.` components.
        let path = normalized(path);
        let mut best: Option<(usize, u32)> = None;
        for (i, class) in self.classes.iter().enumerate() {
            for prefix in &class.paths {
                let prefix = prefix.as_os_str().as_bytes();
                if is_under(&path, prefix) && best.is_none_or(|(len, _)| prefix.len() > len) {
                    best = Some((prefix.len(), i as u32 + 1));
                }
            }
        }
        best.map_or(0, |(_, class)| class)
    }

    /// The name of a class index (0: "any").
    pub fn class_name(&self, class: u32) -> &str {
        match class {
            0 => "any",
            n => self
                .classes
                .get(n as usize - 1)
                .map_or("unknown", |c| c.name.as_str()),
        }
    }
}

/// `path` without empty components, `.` components or a trailing slash, as
/// [`Path::components`] sees it.
fn normalized(path: &[u8]) -> Cow<'_, [u8]> {
    let clean = !path.windows(2).any(|w| w == b"//")
        && !path.windows(3).any(|w| w == b"/./")
        && !path.ends_with(b"/.")
        && (path.len() <= 1 || !path.ends_with(b"/"));
    if clean {
        return Cow::Borrowed(path);
    }
    let components = Path::new(OsStr::from_bytes(path)).components();
    Cow::Owned(components.collect::<PathBuf>().into_os_string().into_vec())
}

/// Whether normalised `path` is normalised `prefix` or below it.
fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix == b"/" || rest.is_empty() || rest[0] == b'/',
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_is_valid() {
        let policy = Policy::default_policy();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.classes.len(), 3);
        assert_eq!(policy.class_of(b"/var/lib/postgresql/16/main/base/1"), 2);
        assert_eq!(
            policy.class_of(b"/var/lib/postgresqlx/file"),
            0,
            "whole components only"
        );
        assert_eq!(policy.class_name(3), "backup");
    }

    #[test]
    fn classes_match_whole_components_whatever_the_spelling() {
        let policy = Policy::default_policy();
        let db = 2;
        for path in [
            &b"/var/lib/postgresql"[..],
            b"/var/lib/postgresql/",
            b"/var//lib/./postgresql/16",
            b"/var/lib/postgresql/.",
        ] {
            assert_eq!(policy.class_of(path), db, "{}", String::from_utf8_lossy(path));
        }
        for path in [
            &b"/var/lib/postgresqlx"[..],
            b"/var/lib",
            b"var/lib/postgresql/x",
            b"",
        ] {
            assert_eq!(policy.class_of(path), 0, "{}", String::from_utf8_lossy(path));
        }
    }

    fn broken(edit: impl Fn(&str) -> String) -> Box<PolicyError> {
        Policy::parse("p.toml", &edit(DEFAULT_POLICY)).unwrap_err()
    }

    fn line_of(needle: &str, text: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn a_bad_value_names_its_line_and_field() {
        let text = DEFAULT_POLICY.replace("mode = \"enforce\"", "mode = \"destroy\"");
        let err = Policy::parse("p.toml", &text).unwrap_err();
        assert_eq!(err.line, Some(line_of("mode = \"destroy\"", &text)));
        assert!(err.message.contains("destroy"), "{}", err.message);
        let rendered = err.render();
        assert!(rendered.contains("p.toml"), "{rendered}");
        assert!(rendered.contains("mode = \"destroy\""), "{rendered}");
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line() {
        let text = DEFAULT_POLICY.replace("window_secs = 60", "window_secs = 60\nwindow_sec = 5");
        let err = Policy::parse("p.toml", &text).unwrap_err();
        assert!(err.message.contains("window_sec"), "{}", err.message);
        assert_eq!(err.line, Some(line_of("window_sec = 5", &text)));
    }

    #[test]
    fn semantic_errors_point_at_the_field() {
        let text = DEFAULT_POLICY.replace("limit = 200", "limit = 0");
        let err = Policy::parse("p.toml", &text).unwrap_err();
        assert!(
            err.message.contains("database") && err.message.contains("limit"),
            "{}",
            err.message
        );
        assert_eq!(err.line, Some(line_of("limit = 0", &text)));

        let err = broken(|t| t.replace("\"/backups\"", "\"backups\""));
        assert!(err.message.contains("absolute"), "{}", err.message);
        let err = broken(|t| t.replace("act_at = \"critical\"", "act_at = \"low\""));
        assert!(err.message.contains("act_at"), "{}", err.message);
    }

    #[test]
    fn too_many_classes_are_refused() {
        let extra: String = (0..6)
            .map(|i| format!("\n[[path_class]]\nname = \"c{i}\"\npaths = [\"/c{i}\"]\nlimit = 1\n"))
            .collect();
        let err = broken(|t| format!("{t}{extra}"));
        assert!(err.message.contains("at most 7"), "{}", err.message);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = Policy::parse("p.toml", "\u{0}\u{1}not toml at all [[[").unwrap_err();
        assert!(!err.message.is_empty());
    }
}
