//! Policy errors: every one names the file, and where it can, the line,
//! column and key, so an operator can go straight to the mistake.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    /// 1-based line and column, when the error is at a place in the file.
    pub position: Option<(usize, usize)>,
    /// The dotted key, e.g. `memory.soft_limit`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Every error found in one load: all are reported, not just the first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// One file's text, to turn byte offsets into positions and keys.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error about the whole file.
    pub fn file_error(&self, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.path.to_path_buf(),
            position: None,
            key: None,
            message: message.into(),
        }
    }

    /// An error at a span of the file, with the key given or found there.
    pub fn error_at(
        &self,
        span: Option<Range<usize>>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> PolicyError {
        let key = key
            .map(str::to_owned)
            .or_else(|| span.as_ref().and_then(|s| self.key_at(s.start)));
        PolicyError {
            file: self.path.to_path_buf(),
            position: span.map(|s| self.position(s.start)),
            key,
            message: message.into(),
        }
    }

    pub fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// The dotted key whose key or value holds this offset.
    fn key_at(&self, offset: usize) -> Option<String> {
        let table = DeTable::parse(self.text).ok()?;
        let mut path = Vec::new();
        find_key(table.get_ref(), offset, &mut path).then(|| path.join("."))
    }
}

fn find_key(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        let inside = |s: Range<usize>| s.start <= offset && offset < s.end.max(s.start + 1);
        if inside(key.span()) || inside(value.span()) {
            path.push(key.get_ref().to_string());
            if let DeValue::Table(inner) = value.get_ref() {
                find_key(inner, offset, path);
            }
            return true;
        }
        if let DeValue::Table(inner) = value.get_ref() {
            path.push(key.get_ref().to_string());
            if find_key(inner, offset, path) {
                return true;
            }
            path.pop();
        }
    }
    false
}

/// The span of a spanned value, for errors about it.
pub(crate) fn span<T>(v: &Spanned<T>) -> Option<Range<usize>> {
    Some(v.span())
}
