//! The parser of target expressions: winnow for the tokens, recursive
//! descent for precedence (`OR` < `AND` < `NOT`), with the bounds checked
//! as it goes so that no input can make it recurse or allocate without
//! limit. Every error names the column (1-based, in characters) and what
//! was expected there.

use super::{
    Comparison, Equality, Pattern, Piece, TargetExpr, Term, Version, MAX_EXPR_DEPTH, MAX_EXPR_LEN,
    MAX_EXPR_TERMS,
};
use crate::device::{MAX_INVENTORY_NAME, MAX_INVENTORY_VALUE};
use crate::state::DeviceStatus;
use winnow::ascii::multispace0;
use winnow::combinator::{alt, opt};
use winnow::error::{ContextError, ErrMode};
use winnow::token::{literal, take_while};
use winnow::Parser as _;

/// How every [`TargetExprError`]'s text begins, so that a server can tell
/// an expression refused inside a larger document (serde keeps only the
/// text) from a document of the wrong shape.
pub const ERROR_LABEL: &str = "target expression, column ";

/// A target expression that does not parse, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target expression, column {column}: {message}")]
pub struct TargetExprError {
    /// 1-based column, in characters.
    pub column: usize,
    /// What was expected there, or which bound was passed.
    pub message: String,
}

/// What the term parsers may start with.
const TERM_START: &str = "a term (tag:…, attr.…, device_type, status, installed.…), NOT or '('";

/// Whether `c` may appear in an unquoted word.
pub(super) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '@' | '+' | '*' | '?')
}

type Result<T> = std::result::Result<T, TargetExprError>;
type WinnowResult<T> = std::result::Result<T, ErrMode<ContextError>>;

/// Parses `text` within the bounds.
pub(super) fn parse(text: &str) -> Result<TargetExpr> {
    if text.len() > MAX_EXPR_LEN {
        return Err(TargetExprError {
            column: text[..floor_char_boundary(text, MAX_EXPR_LEN)]
                .chars()
                .count()
                + 1,
            message: format!(
                "too long: at most {MAX_EXPR_LEN} bytes (this one has {})",
                text.len()
            ),
        });
    }
    let mut parser = Parser {
        text,
        input: text,
        terms: 0,
    };
    let expr = parser.or(0)?;
    parser.skip_space();
    if !parser.input.is_empty() {
        return Err(if parser.input.starts_with(')') {
            parser.error("unmatched ')'".into())
        } else {
            parser.expected("AND, OR or the end of the expression")
        });
    }
    let depth = depth(&expr);
    if depth > MAX_EXPR_DEPTH {
        return Err(TargetExprError {
            column: 1,
            message: format!(
                "operators nest {depth} deep; at most {MAX_EXPR_DEPTH} (flatten it: a AND b AND c needs no parentheses)"
            ),
        });
    }
    Ok(expr)
}

/// How deeply operators nest in `expr` (a lone term: 0).
fn depth(expr: &TargetExpr) -> usize {
    match expr {
        TargetExpr::Or(items) | TargetExpr::And(items) => {
            1 + items.iter().map(depth).max().unwrap_or(0)
        }
        TargetExpr::Not(inner) => 1 + depth(inner),
        TargetExpr::Term(_) => 0,
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

struct Parser<'s> {
    /// The whole expression, for columns.
    text: &'s str,
    /// What is left of it.
    input: &'s str,
    /// Terms read so far.
    terms: usize,
}

impl<'s> Parser<'s> {
    fn column(&self) -> usize {
        let offset = self.text.len() - self.input.len();
        self.text[..offset].chars().count() + 1
    }

    fn error(&self, message: String) -> TargetExprError {
        TargetExprError {
            column: self.column(),
            message,
        }
    }

    /// "expected X, found Y" at the current position.
    fn expected(&self, what: &str) -> TargetExprError {
        let found = match self.input.chars().next() {
            None => "the end of the expression".to_owned(),
            Some(c) if is_word_char(c) => {
                let word: String = self
                    .input
                    .chars()
                    .take_while(|c| is_word_char(*c))
                    .collect();
                format!("{:?}", truncate(&word))
            }
            Some(c) => format!("{c:?}"),
        };
        self.error(format!("expected {what}, found {found}"))
    }

    fn skip_space(&mut self) {
        let _: WinnowResult<&str> = multispace0.parse_next(&mut self.input);
    }

    /// Consumes `keyword` (any case) when it is the next whole word.
    fn keyword(&mut self, keyword: &str) -> bool {
        self.skip_space();
        let mut ahead = self.input;
        let word: WinnowResult<&str> = take_while(1.., is_word_char).parse_next(&mut ahead);
        match word {
            Ok(word) if word.eq_ignore_ascii_case(keyword) => {
                self.input = ahead;
                true
            }
            _ => false,
        }
    }

    /// `or = and { "OR" and }`.
    fn or(&mut self, nesting: usize) -> Result<TargetExpr> {
        let mut items = vec![self.and(nesting)?];
        while self.keyword("OR") {
            items.push(self.and(nesting)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            TargetExpr::Or(items)
        })
    }

    /// `and = not { "AND" not }`.
    fn and(&mut self, nesting: usize) -> Result<TargetExpr> {
        let mut items = vec![self.not(nesting)?];
        while self.keyword("AND") {
            items.push(self.not(nesting)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            TargetExpr::And(items)
        })
    }

    /// `not = "NOT" not | primary`; `primary = "(" or ")" | term`.
    fn not(&mut self, nesting: usize) -> Result<TargetExpr> {
        self.skip_space();
        if self.keyword("NOT") {
            self.nest(nesting)?;
            return Ok(TargetExpr::Not(Box::new(self.not(nesting + 1)?)));
        }
        self.skip_space();
        if let Some(rest) = self.input.strip_prefix('(') {
            let open = self.column();
            self.nest(nesting)?;
            self.input = rest;
            let inner = self.or(nesting + 1)?;
            self.skip_space();
            return match self.input.strip_prefix(')') {
                Some(rest) => {
                    self.input = rest;
                    Ok(inner)
                }
                None => {
                    Err(self.expected(&format!("')' to close the '(' at column {open}, AND or OR")))
                }
            };
        }
        self.term().map(TargetExpr::Term)
    }

    fn nest(&self, nesting: usize) -> Result<()> {
        if nesting >= MAX_EXPR_DEPTH {
            return Err(self.error(format!(
                "nested too deep: at most {MAX_EXPR_DEPTH} levels of parentheses and NOT"
            )));
        }
        Ok(())
    }

    fn term(&mut self) -> Result<Term> {
        self.skip_space();
        if self.terms == MAX_EXPR_TERMS {
            return Err(self.error(format!("too many terms: at most {MAX_EXPR_TERMS}")));
        }
        // winnow leaves the input where a failed `alt` stopped: put back.
        let start = self.input;
        let head: WinnowResult<&str> = alt((
            literal("tag:"),
            literal("attr."),
            literal("installed."),
            (literal("device_type"), word_end).take(),
            (literal("status"), word_end).take(),
        ))
        .parse_next(&mut self.input);
        let term = match head {
            Ok("tag:") => Term::Tag(self.pattern("a tag or a pattern of tags after tag:")?),
            Ok("attr.") => {
                let key = self.name("an attribute name after attr.")?;
                let op = self.equality()?;
                let value = self.pattern("an attribute value or pattern")?;
                Term::Attribute { key, op, value }
            }
            Ok("installed.") => {
                let name = self.name("a software name after installed.")?;
                let op = self.comparison()?;
                let version = self.version()?;
                Term::Installed { name, op, version }
            }
            Ok("status") => {
                let op = self.equality()?;
                Term::Status {
                    op,
                    status: self.status()?,
                }
            }
            Ok(_) => {
                let op = self.equality()?;
                let value = self.pattern("a device type or a pattern of them")?;
                Term::DeviceType { op, value }
            }
            Err(_) => {
                self.input = start;
                return Err(self.expected(TERM_START));
            }
        };
        self.terms += 1;
        Ok(term)
    }

    fn equality(&mut self) -> Result<Equality> {
        self.skip_space();
        let start = self.input;
        let op: WinnowResult<&str> = alt(("!=", "=")).parse_next(&mut self.input);
        match op {
            Ok("=") => Ok(Equality::Eq),
            Ok(_) => Ok(Equality::Ne),
            Err(_) => {
                self.input = start;
                Err(self.expected("= or !="))
            }
        }
    }

    fn comparison(&mut self) -> Result<Comparison> {
        self.skip_space();
        let start = self.input;
        let op: WinnowResult<&str> =
            alt(("<=", ">=", "!=", "<", ">", "=")).parse_next(&mut self.input);
        Ok(match op {
            Ok("<=") => Comparison::Le,
            Ok(">=") => Comparison::Ge,
            Ok("!=") => Comparison::Ne,
            Ok("<") => Comparison::Lt,
            Ok(">") => Comparison::Gt,
            Ok(_) => Comparison::Eq,
            Err(_) => {
                self.input = start;
                return Err(self.expected("a comparison (<, <=, =, !=, >=, >)"));
            }
        })
    }

    fn status(&mut self) -> Result<DeviceStatus> {
        self.skip_space();
        let start = self.input;
        let word: WinnowResult<&str> = take_while(1.., is_word_char).parse_next(&mut self.input);
        let expected = || {
            let all: Vec<&str> = DeviceStatus::ALL.iter().map(|s| s.as_str()).collect();
            format!("a status ({})", all.join(", "))
        };
        match word.map(str::parse::<DeviceStatus>) {
            Ok(Ok(status)) => Ok(status),
            _ => {
                self.input = start;
                Err(self.expected(&expected()))
            }
        }
    }

    /// A name: a word without wildcards, or a quoted string.
    fn name(&mut self, what: &str) -> Result<String> {
        let start = self.input;
        let name = match self.quoted()? {
            Some(chars) => chars.into_iter().map(|(c, _)| c).collect(),
            None => {
                let word: WinnowResult<&str> =
                    take_while(1.., |c| is_word_char(c) && !matches!(c, '*' | '?'))
                        .parse_next(&mut self.input);
                word.map_err(|_| self.expected(what))?.to_owned()
            }
        };
        if name.is_empty() || name.len() > MAX_INVENTORY_NAME {
            self.input = start;
            return Err(self.error(format!(
                "names are 1–{MAX_INVENTORY_NAME} bytes (expected {what})"
            )));
        }
        Ok(name)
    }

    fn version(&mut self) -> Result<Version> {
        self.skip_space();
        let start = self.input;
        let text: String = match self.quoted()? {
            Some(chars) => chars.into_iter().map(|(c, _)| c).collect(),
            None => {
                let word: WinnowResult<&str> =
                    take_while(1.., |c| is_word_char(c) && !matches!(c, '*' | '?'))
                        .parse_next(&mut self.input);
                word.map_err(|_| self.expected("a version such as 2.4.0"))?
                    .to_owned()
            }
        };
        Version::new(&text).ok_or_else(|| {
            self.input = start;
            self.error(format!(
                "{:?} is not a version: expected numbers separated by dots (2.4 or 2.4.0), \
                 optionally a pre-release (2.4.0-rc.1)",
                truncate(&text)
            ))
        })
    }

    /// A value that may hold wildcards: a word, whose `*` and `?` are
    /// wildcards, or a quoted string, where `\*` and `\?` are plain.
    fn pattern(&mut self, what: &str) -> Result<Pattern> {
        self.skip_space();
        let start = self.input;
        let chars: Vec<(char, bool)> = match self.quoted()? {
            Some(chars) => chars,
            None => {
                let word: WinnowResult<&str> =
                    take_while(1.., is_word_char).parse_next(&mut self.input);
                let word = word.map_err(|_| self.expected(what))?;
                word.chars().map(|c| (c, false)).collect()
            }
        };
        let length: usize = chars.iter().map(|(c, _)| c.len_utf8()).sum();
        if length > MAX_INVENTORY_VALUE {
            self.input = start;
            return Err(self.error(format!("values are at most {MAX_INVENTORY_VALUE} bytes")));
        }
        Ok(Pattern::from_pieces(chars.into_iter().map(
            |(c, escaped)| match (c, escaped) {
                ('*', false) => Piece::AnyRun,
                ('?', false) => Piece::AnyChar,
                (c, _) => Piece::Text(c.to_string()),
            },
        )))
    }

    /// A quoted string's characters, each with whether it was escaped;
    /// `None` when the input does not start with a quote.
    fn quoted(&mut self) -> Result<Option<Vec<(char, bool)>>> {
        let Some(rest) = self.input.strip_prefix('"') else {
            return Ok(None);
        };
        let open = self.column();
        let mut chars = Vec::new();
        let mut iter = rest.char_indices();
        while let Some((index, c)) = iter.next() {
            match c {
                '"' => {
                    self.input = &rest[index + 1..];
                    return Ok(Some(chars));
                }
                '\\' => match iter.next() {
                    Some((_, escaped)) => chars.push((escaped, true)),
                    None => break,
                },
                '\0' => {
                    self.input = &rest[index..];
                    return Err(self.error("a NUL character cannot be stored; remove it".into()));
                }
                c => chars.push((c, false)),
            }
        }
        self.input = "";
        Err(self.error(format!(
            "expected '\"' to close the string opened at column {open}"
        )))
    }
}

/// Succeeds when no word character follows (`status` but not `statusx`).
fn word_end(input: &mut &str) -> WinnowResult<()> {
    let next: WinnowResult<Option<char>> =
        opt(winnow::token::one_of(is_word_char)).parse_next(&mut { *input });
    match next {
        Ok(None) => Ok(()),
        _ => Err(ErrMode::Backtrack(ContextError::new())),
    }
}

fn truncate(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn every_error_text_begins_with_the_label() {
        let error = TargetExprError {
            column: 3,
            message: "expected a term".into(),
        };
        assert!(error.to_string().starts_with(ERROR_LABEL), "{error}");
    }
}
