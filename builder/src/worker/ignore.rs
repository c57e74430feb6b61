//! `.dockerignore`: which files of the context stay out of the tar sent to
//! the engine, as Docker's CLI decides it (the engine itself does not).
//!
//! One pattern a line; a line starting with `#` is a comment; blanks around
//! a pattern are trimmed and the pattern cleaned like a path (`./a/` is
//! `a`, a leading `/` dropped); `*` and `?` stop at `/`, `**` crosses
//! directories, `[...]` classes and `\` escapes work; `!` makes an
//! exception. The last pattern that matches a path, or one of its parent
//! directories, decides. Matching is globset's: a `**` inside a component
//! (`a**b`) reads as two `*`, where Docker's own matcher would let it cross
//! directories.

use globset::{GlobBuilder, GlobMatcher};

/// The name of the file, at the context's root.
pub const FILE: &str = ".dockerignore";

/// The largest `.dockerignore` read.
const MAX: u64 = 1 << 20;

/// A parsed `.dockerignore`.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    matcher: GlobMatcher,
    exception: bool,
}

impl Ignore {
    /// The context's `.dockerignore` (nothing ignored when there is none).
    /// It must be a regular file: a link could read a file of the host.
    pub fn load(context: &std::path::Path) -> Result<Self, String> {
        let path = context.join(FILE);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("{FILE}: {e}")),
        };
        if !meta.is_file() {
            return Err(format!("{FILE} must be a regular file"));
        }
        if meta.len() > MAX {
            return Err(format!("{FILE} is larger than {} KiB", MAX >> 10));
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("{FILE}: {e}"))?;
        Self::parse(&String::from_utf8_lossy(&bytes))
    }

    /// Patterns from a `.dockerignore`'s text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if let Some(rest) = pattern.strip_prefix('!') {
                pattern = rest.trim();
                if pattern.is_empty() {
                    return Err(format!("{FILE} line {}: \"!\" excepts nothing", i + 1));
                }
            }
            let cleaned = clean(pattern);
            let cleaned = match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => rest.to_owned(),
                _ => cleaned,
            };
            let matcher = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("{FILE} line {}: {pattern:?}: {}", i + 1, e.kind()))?
                .compile_matcher();
            rules.push(Rule { matcher, exception });
        }
        Ok(Self { rules })
    }

    /// Whether it has no patterns.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a pattern makes an exception (`!`): an excluded directory
    /// must then still be looked into.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether `path` (relative to the context, `/`-separated) stays out:
    /// the last pattern matching it or a parent directory decides.
    pub fn excludes(&self, path: &str) -> bool {
        let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut excluded = false;
        for rule in &self.rules {
            // Only a pattern that can change the verdict is tried.
            if rule.exception != excluded {
                continue;
            }
            let hit =
                rule.matcher.is_match(path) || parents.iter().any(|p| rule.matcher.is_match(p));
            if hit {
                excluded = !rule.exception;
            }
        }
        excluded
    }
}

/// A path cleaned as Go's `filepath.Clean` does: no empty or `.`
/// components, `..` folded where it can be.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each path with whether it is excluded.
    fn check(patterns: &str, expect: &[(&str, bool)]) {
        let ignore = Ignore::parse(patterns).unwrap();
        for (path, excluded) in expect {
            assert_eq!(
                ignore.excludes(path),
                *excluded,
                "{path} with patterns {patterns:?}"
            );
        }
    }

    #[test]
    fn patterns_match_as_docker_does() {
        check(
            "# a comment\n\n  secret.txt  \n*.log\n!keep.log\n",
            &[
                ("secret.txt", true),
                ("a/secret.txt", false),
                ("x.log", true),
                ("keep.log", false),
                ("dir/x.log", false),
                ("main.py", false),
                ("# a comment", false),
            ],
        );
        // A matched directory takes everything under it; an exception can
        // bring a file back.
        check(
            "node_modules\n!node_modules/keep/*.js\n",
            &[
                ("node_modules", true),
                ("node_modules/a/b.js", true),
                ("node_modules/keep/x.js", false),
                ("node_modules/keep/x.css", true),
            ],
        );
        // ** crosses directories, * and ? do not.
        check(
            "**/*.pem\nbuild/**\ndocs/*.md\nv?.txt\n",
            &[
                ("key.pem", true),
                ("a/b/key.pem", true),
                ("build/x/y", true),
                ("build", false),
                ("docs/a.md", true),
                ("docs/x/a.md", false),
                ("v1.txt", true),
                ("v10.txt", false),
            ],
        );
        // Cleaned like paths: leading / and ./, trailing /.
        check(
            "/a\n./b/\nc/../d\n",
            &[("a", true), ("b/x", true), ("d", true), ("c", false)],
        );
        // Classes and escapes.
        check(
            "[ab].txt\n\\*.cfg\n",
            &[
                ("a.txt", true),
                ("c.txt", false),
                ("*.cfg", true),
                ("x.cfg", false),
            ],
        );
        // Everything but one file.
        check(
            "*\n!Dockerfile\n!src\n",
            &[
                ("Dockerfile", false),
                ("src/main.rs", false),
                ("other", true),
            ],
        );
        // Exclude again after an exception: the last match wins.
        check(
            "*.txt\n!a.txt\na.txt\n",
            &[("a.txt", true), ("b.txt", true)],
        );
    }

    #[test]
    fn bad_patterns_name_their_line() {
        let e = Ignore::parse("ok\n!\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = Ignore::parse("a\n[z-a\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn the_file_must_be_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Ignore::load(dir.path()).unwrap().is_empty());
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(FILE)).unwrap();
        let e = Ignore::load(dir.path()).unwrap_err();
        assert!(e.contains("regular file"), "{e}");
    }
}
