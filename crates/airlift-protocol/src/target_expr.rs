//! Target expressions: which devices a deployment, a device listing or a
//! shadow group is about, in one grammar (`docs/targets.md`).
//!
//! ```
//! use airlift_protocol::target_expr::TargetExpr;
//!
//! let expr: TargetExpr = "tag:lab AND (attr.region = eu-* OR NOT installed.rootfs >= 2.4.0)"
//!     .parse()
//!     .unwrap();
//! assert_eq!(expr.to_string().parse::<TargetExpr>().unwrap(), expr);
//! ```
//!
//! The grammar, by precedence from loosest (`NOT` binds tightest):
//!
//! ```text
//! expression  = or ;
//! or          = and , { "OR" , and } ;
//! and         = not , { "AND" , not } ;
//! not         = "NOT" , not | primary ;
//! primary     = "(" , expression , ")" | term ;
//! term        = "tag:" , pattern
//!             | "attr." , name , equality , pattern
//!             | "device_type" , equality , pattern
//!             | "status" , equality , status
//!             | "installed." , name , comparison , version ;
//! equality    = "=" | "!=" ;
//! comparison  = "<" | "<=" | "=" | "!=" | ">=" | ">" ;
//! pattern     = word | quoted ;     (* "*" any run, "?" any one character *)
//! name        = word | quoted ;
//! word        = { letter | digit | "_" | "-" | "." | ":" | "/" | "@" | "+" | "*" | "?" }- ;
//! quoted      = '"' , { any character but '"' or "\" | "\" , any character } , '"' ;
//! ```
//!
//! Keywords are case-insensitive. This module is pure: the AST, its parser,
//! its canonical text ([`Display`](fmt::Display) parses back to the same
//! AST) and its evaluation in memory ([`TargetExpr::matches`]); the store
//! compiles the same AST to SQL, and both must agree.

mod parse;
mod version;

pub use parse::{TargetExprError, ERROR_LABEL};
pub use version::{version_key, MAX_RELEASE_COMPONENTS, MAX_VERSION_LEN};

use crate::management::Device;
use crate::state::DeviceStatus;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Longest expression, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;
/// Deepest nesting of operators (`AND`, `OR`, `NOT`, parentheses).
pub const MAX_EXPR_DEPTH: usize = 16;
/// Most terms in one expression: each is a join the database must do.
pub const MAX_EXPR_TERMS: usize = 64;

/// A parsed target expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetExpr {
    /// Any of these (at least two).
    Or(Vec<TargetExpr>),
    /// All of these (at least two).
    And(Vec<TargetExpr>),
    /// Not this.
    Not(Box<TargetExpr>),
    /// One test on a device.
    Term(Term),
}

/// One test on what a device is and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `tag:PATTERN`: one of its tags matches.
    Tag(Pattern),
    /// `attr.KEY = PATTERN`: it reports attribute KEY with a value that
    /// matches (`!=`: that does not match; no attribute KEY: neither).
    Attribute {
        /// The attribute's name.
        key: String,
        /// `=` or `!=`.
        op: Equality,
        /// What its value is compared with.
        value: Pattern,
    },
    /// `device_type = PATTERN`: its reported type matches (`!=`: it
    /// reported one that does not; no type reported yet: neither).
    DeviceType {
        /// `=` or `!=`.
        op: Equality,
        /// What its type is compared with.
        value: Pattern,
    },
    /// `status = accepted`: its admission status.
    Status {
        /// `=` or `!=`.
        op: Equality,
        /// The status.
        status: DeviceStatus,
    },
    /// `installed.NAME < VERSION`: it reports NAME installed at a version
    /// in that relation to VERSION. A device without NAME, or whose NAME
    /// is not a version, matches no comparison.
    Installed {
        /// The software's name.
        name: String,
        /// How the versions compare.
        op: Comparison,
        /// The version compared with.
        version: Version,
    },
}

/// `=` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equality {
    /// `=`
    Eq,
    /// `!=`
    Ne,
}

/// A version comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Comparison {
    /// Its spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Eq => "=",
            Comparison::Ne => "!=",
            Comparison::Ge => ">=",
            Comparison::Gt => ">",
        }
    }

    /// Whether `ordering` (left compared with right) satisfies it.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Comparison::Lt => ordering == Less,
            Comparison::Le => ordering != Greater,
            Comparison::Eq => ordering == Equal,
            Comparison::Ne => ordering != Equal,
            Comparison::Ge => ordering != Less,
            Comparison::Gt => ordering == Greater,
        }
    }
}

impl Equality {
    /// Its spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Equality::Eq => "=",
            Equality::Ne => "!=",
        }
    }
}

/// A version in an expression: its text as written and its order key
/// ([`version_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    text: String,
    key: String,
}

impl Version {
    /// `text` as a version, if it is one.
    pub fn new(text: &str) -> Option<Self> {
        Some(Self {
            key: version_key(text)?,
            text: text.to_owned(),
        })
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its order key: compare keys to compare versions.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// One piece of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// These characters, exactly (never empty; never two in a row).
    Text(String),
    /// `?`: any one character.
    AnyChar,
    /// `*`: any run of characters, the empty one included.
    AnyRun,
}

/// A value with wildcards: `*` any run of characters, `?` any one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pattern {
    pieces: Vec<Piece>,
}

impl Pattern {
    /// A pattern from its pieces; adjacent texts are joined and empty ones
    /// dropped, so that equal patterns compare equal.
    pub fn from_pieces(pieces: impl IntoIterator<Item = Piece>) -> Self {
        let mut joined: Vec<Piece> = Vec::new();
        for piece in pieces {
            match (piece, joined.last_mut()) {
                (Piece::Text(text), _) if text.is_empty() => {}
                (Piece::Text(text), Some(Piece::Text(last))) => last.push_str(&text),
                (piece, _) => joined.push(piece),
            }
        }
        Self { pieces: joined }
    }

    /// A pattern matching exactly `text`.
    pub fn exact(text: &str) -> Self {
        Self::from_pieces([Piece::Text(text.to_owned())])
    }

    /// Its pieces.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The one text it matches, when it has no wildcard.
    pub fn as_exact(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Whether `value` matches, character by character.
    pub fn matches(&self, value: &str) -> bool {
        let value: Vec<char> = value.chars().collect();
        matches_from(&self.pieces, &value)
    }
}

/// Whether `pieces` match all of `value`. Each `*` tries the shortest run
/// first and backtracks only to the last `*` seen, which is enough: a
/// later `*` can absorb whatever an earlier one would have.
fn matches_from(pieces: &[Piece], value: &[char]) -> bool {
    let (mut p, mut v) = (0, 0);
    // The piece after the last `*`, and where in `value` it was tried.
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        if let Some(piece) = pieces.get(p) {
            match piece {
                Piece::AnyRun => {
                    backtrack = Some((p + 1, v));
                    p += 1;
                    continue;
                }
                Piece::AnyChar if v < value.len() => {
                    p += 1;
                    v += 1;
                    continue;
                }
                Piece::Text(text) => {
                    let n = text.chars().count();
                    if value.len() - v >= n && text.chars().eq(value[v..v + n].iter().copied()) {
                        p += 1;
                        v += n;
                        continue;
                    }
                }
                Piece::AnyChar => {}
            }
        } else if v == value.len() {
            return true;
        }
        match backtrack {
            Some((after_star, tried)) if tried < value.len() => {
                backtrack = Some((after_star, tried + 1));
                p = after_star;
                v = tried + 1;
            }
            _ => return false,
        }
    }
}

/// What an expression is evaluated against: a device as the server knows
/// it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    /// Admission status.
    pub status: DeviceStatus,
    /// Its tags.
    pub tags: &'a [String],
    /// Its reported type, if it reported one.
    pub device_type: Option<&'a str>,
    /// Its reported attributes.
    pub attributes: &'a BTreeMap<String, String>,
    /// Its reported installed software, name → version.
    pub installed: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a Device> for DeviceFacts<'a> {
    fn from(device: &'a Device) -> Self {
        Self {
            status: device.status,
            tags: &device.tags,
            device_type: device.device_type.as_deref(),
            attributes: &device.attributes,
            installed: &device.installed,
        }
    }
}

impl TargetExpr {
    /// Whether the device matches.
    pub fn matches(&self, device: &DeviceFacts<'_>) -> bool {
        match self {
            TargetExpr::Or(any) => any.iter().any(|e| e.matches(device)),
            TargetExpr::And(all) => all.iter().all(|e| e.matches(device)),
            TargetExpr::Not(inner) => !inner.matches(device),
            TargetExpr::Term(term) => term.matches(device),
        }
    }

    /// How many terms it holds.
    pub fn terms(&self) -> usize {
        match self {
            TargetExpr::Or(list) | TargetExpr::And(list) => list.iter().map(Self::terms).sum(),
            TargetExpr::Not(inner) => inner.terms(),
            TargetExpr::Term(_) => 1,
        }
    }
}

impl Term {
    /// Whether the device passes this one test.
    pub fn matches(&self, device: &DeviceFacts<'_>) -> bool {
        let compare = |op: Equality, value: &Pattern, actual: Option<&str>| match (op, actual) {
            (_, None) => false,
            (Equality::Eq, Some(actual)) => value.matches(actual),
            (Equality::Ne, Some(actual)) => !value.matches(actual),
        };
        match self {
            Term::Tag(pattern) => device.tags.iter().any(|tag| pattern.matches(tag)),
            Term::Attribute { key, op, value } => {
                compare(*op, value, device.attributes.get(key).map(String::as_str))
            }
            Term::DeviceType { op, value } => compare(*op, value, device.device_type),
            Term::Status { op, status } => (device.status == *status) == (*op == Equality::Eq),
            Term::Installed { name, op, version } => device
                .installed
                .get(name)
                .and_then(|installed| version_key(installed))
                .is_some_and(|installed| op.holds(installed.as_str().cmp(version.key()))),
        }
    }
}

impl FromStr for TargetExpr {
    type Err = TargetExprError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse::parse(text)
    }
}

/// Whether `word` can be written without quotes where a value, a name or
/// a version goes (and so reads back as the same text).
fn is_bare(word: &str, wildcards_allowed: bool) -> bool {
    !word.is_empty()
        && !is_keyword(word)
        && word
            .chars()
            .all(|c| parse::is_word_char(c) && (wildcards_allowed || !matches!(c, '*' | '?')))
}

fn is_keyword(word: &str) -> bool {
    ["AND", "OR", "NOT"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Writes `text` quoted, escaping `"` and `\` (and `*`, `?` when
/// `escape_wildcards`, so that they read back as plain characters).
fn write_quoted(f: &mut fmt::Formatter<'_>, text: &str, escape_wildcards: bool) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        if c == '"' || c == '\\' || (escape_wildcards && matches!(c, '*' | '?')) {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

/// A name (attribute, software) or a version: bare when it can be.
fn write_plain(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    if is_bare(text, false) {
        f.write_str(text)
    } else {
        write_quoted(f, text, false)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts_are_bare = self.pieces.iter().all(|piece| match piece {
            Piece::Text(text) => {
                text.chars().all(parse::is_word_char) && !text.contains(['*', '?'])
            }
            _ => true,
        });
        let bare = !self.pieces.is_empty() && texts_are_bare && !is_keyword(&self.raw());
        if !bare {
            f.write_str("\"")?;
        }
        for piece in &self.pieces {
            match piece {
                Piece::AnyChar => f.write_str("?")?,
                Piece::AnyRun => f.write_str("*")?,
                Piece::Text(text) if bare => f.write_str(text)?,
                Piece::Text(text) => {
                    for c in text.chars() {
                        if matches!(c, '"' | '\\' | '*' | '?') {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                }
            }
        }
        if !bare {
            f.write_str("\"")?;
        }
        Ok(())
    }
}

impl Pattern {
    /// Its text with wildcards written as `*` and `?`.
    fn raw(&self) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.as_str(),
                Piece::AnyChar => "?",
                Piece::AnyRun => "*",
            })
            .collect()
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Tag(pattern) => write!(f, "tag:{pattern}"),
            Term::Attribute { key, op, value } => {
                f.write_str("attr.")?;
                write_plain(f, key)?;
                write!(f, " {} {value}", op.as_str())
            }
            Term::DeviceType { op, value } => write!(f, "device_type {} {value}", op.as_str()),
            Term::Status { op, status } => write!(f, "status {} {status}", op.as_str()),
            Term::Installed { name, op, version } => {
                f.write_str("installed.")?;
                write_plain(f, name)?;
                write!(f, " {} ", op.as_str())?;
                write_plain(f, version.as_str())
            }
        }
    }
}

impl fmt::Display for TargetExpr {
    /// The canonical text: upper-case keywords, single spaces, and
    /// parentheses only where precedence needs them (or where the AST
    /// nests an operator in itself), so that it parses back to `self`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[TargetExpr], keyword: &str| {
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    write!(f, " {keyword} ")?;
                }
                let grouped = matches!(
                    (self, item),
                    (TargetExpr::Or(_), TargetExpr::Or(_))
                        | (TargetExpr::And(_), TargetExpr::And(_) | TargetExpr::Or(_))
                );
                if grouped {
                    write!(f, "({item})")?;
                } else {
                    write!(f, "{item}")?;
                }
            }
            Ok(())
        };
        match self {
            TargetExpr::Or(items) => list(f, items, "OR"),
            TargetExpr::And(items) => list(f, items, "AND"),
            TargetExpr::Not(inner) => match inner.as_ref() {
                TargetExpr::Or(_) | TargetExpr::And(_) => write!(f, "NOT ({inner})"),
                _ => write!(f, "NOT {inner}"),
            },
            TargetExpr::Term(term) => write!(f, "{term}"),
        }
    }
}

/// On the wire and in the database, an expression is its text.
impl Serialize for TargetExpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TargetExpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for TargetExpr {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A target expression (docs/targets.md), e.g. `tag:lab AND installed.rootfs < 2.4.0`: \
                 terms tag:PATTERN, attr.KEY =|!= PATTERN, device_type =|!= PATTERN, \
                 status =|!= STATUS, installed.NAME <|<=|=|!=|>=|> VERSION; AND, OR, NOT and \
                 parentheses; `*` and `?` wildcards in patterns. At most 4096 bytes, 64 terms, \
                 16 levels of nesting.",
            ))
            .min_length(Some(1))
            .max_length(Some(MAX_EXPR_LEN))
            .pattern(Some(r"^[^\x00]*$"))
            .examples(["tag:lab AND installed.rootfs < 2.4.0"])
            .into()
    }
}

impl utoipa::ToSchema for TargetExpr {}

#[cfg(test)]
mod tests;
