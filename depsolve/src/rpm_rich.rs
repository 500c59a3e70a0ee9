//! RPM rich dependencies (`(a or b)`, `(a and b)`, `(a if b)`), parsed
//! and lowered to or-groups and conditionals.

use crate::builder::Builder;
use crate::index::Dependency;
use crate::rpm::{atom, Conditionals, Groups};

/// Rich dependency syntax tree.
pub(crate) enum Rich {
    Atom(String, Option<(String, String)>),
    Op(String, Vec<Rich>),
}

pub(crate) fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | ')' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

const OPS: &[&str] = &["and", "or", "if", "else", "unless", "with", "without"];

/// `( term (op term)* )` where all ops of one level are the same.
pub(crate) fn parse_rich(t: &[String], pos: &mut usize) -> Option<Rich> {
    if t.get(*pos)? != "(" {
        return None;
    }
    *pos += 1;
    let mut terms = vec![parse_term(t, pos)?];
    let mut op: Option<String> = None;
    while t.get(*pos)? != ")" {
        let o = t.get(*pos)?.clone();
        if !OPS.contains(&o.as_str()) || op.as_ref().is_some_and(|p| *p != o) {
            return None;
        }
        op = Some(o);
        *pos += 1;
        terms.push(parse_term(t, pos)?);
    }
    *pos += 1;
    Some(match op {
        None => terms.pop()?,
        Some(o) => Rich::Op(o, terms),
    })
}

fn parse_term(t: &[String], pos: &mut usize) -> Option<Rich> {
    if t.get(*pos)? == "(" {
        return parse_rich(t, pos);
    }
    let name = t.get(*pos)?.clone();
    *pos += 1;
    if let Some(cmp) = t
        .get(*pos)
        .filter(|c| matches!(c.as_str(), "<" | "<=" | "=" | ">=" | ">"))
    {
        let ver = t.get(*pos + 1)?.clone();
        let cmp = cmp.clone();
        *pos += 2;
        return Some(Rich::Atom(name, Some((cmp, ver))));
    }
    Some(Rich::Atom(name, None))
}

fn rich_atom(
    b: &mut Builder,
    name: &str,
    c: &Option<(String, String)>,
) -> Result<Dependency, String> {
    let flags = c.as_ref().map(|(op, _)| match op.as_str() {
        "<" => "LT",
        "<=" => "LE",
        "=" => "EQ",
        ">=" => "GE",
        _ => "GT",
    });
    atom(b, name, flags, c.as_ref().map(|(_, v)| v.clone()))
}

/// An or-group from atoms or nested `or`s.
fn alternatives(b: &mut Builder, r: &Rich, out: &mut Vec<Dependency>) -> Result<(), String> {
    match r {
        Rich::Atom(n, c) => out.push(rich_atom(b, n, c)?),
        Rich::Op(op, terms) if op == "or" => {
            for t in terms {
                alternatives(b, t, out)?;
            }
        }
        _ => return Err(String::new()),
    }
    Ok(())
}

pub(crate) fn lower(
    b: &mut Builder,
    r: &Rich,
    groups: &mut Groups,
    cond: &mut Conditionals,
) -> Result<(), String> {
    match r {
        Rich::Op(op, terms) if op == "and" => {
            for t in terms {
                lower(b, t, groups, cond)?;
            }
        }
        Rich::Op(op, terms) if op == "if" && terms.len() == 2 => {
            let mut then = Vec::new();
            alternatives(b, &terms[0], &mut then)?;
            let Rich::Atom(n, c) = &terms[1] else {
                return Err(String::new());
            };
            cond.push((rich_atom(b, n, c)?, then));
        }
        other => {
            let mut alts = Vec::new();
            alternatives(b, other, &mut alts)?;
            groups.push(alts);
        }
    }
    Ok(())
}
