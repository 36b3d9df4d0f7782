//! Template specs such as `"[P]*4 [MASK] [P]*4 {text}"` (the P-tuning seed), `"[MASK]满意。{text}"`
//! (a PET manual template) or `"{text_a} [SEP] {text_b} [P]*3 [MASK]"` (a sentence pair).
//!
//! Grammar: `[P]` a pseudo token (its vector comes from the prompt encoder), `[MASK]` the
//! label-word slot, `[NAME]` any other vocabulary token (e.g. `[SEP]`, `[unused10]`), each
//! optionally repeated as `*N`; `{text}` / `{text_a}` and `{text_b}` the inputs; anything else is
//! literal text, tokenized. `[CLS]` and the final `[SEP]` are added around the whole.

use crate::error::{Error, Result};
use crate::tokenizer::BertTokenizer;

/// A text slot of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `{text}` or `{text_a}`: the text, or the first sentence of a pair.
    A,
    /// `{text_b}`: the second sentence of a pair.
    B,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Pseudo,
    Mask,
    Token(u32),
    Text(Slot),
}

/// One example as ids, with the positions the model needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids: `[CLS]`, the template with the texts filled in, then `[SEP]`.
    pub ids: Vec<u32>,
    /// Segment of each token: 0 up to and including a `[SEP]` written in the template, 1 after it
    /// (the final `[SEP]` included); all 0 when the template writes no `[SEP]`.
    pub token_types: Vec<u32>,
    /// Positions of the `[MASK]` slot tokens, in order.
    pub mask_positions: Vec<usize>,
    /// Positions of the pseudo tokens, in order (pseudo token k is at `pseudo_positions[k]`).
    pub pseudo_positions: Vec<usize>,
    /// Text tokens were cut to fit `max_len`.
    pub truncated: bool,
}

/// A parsed template: the pieces an example is laid out in, with the ids of its pseudo tokens.
#[derive(Debug, Clone)]
pub struct Template {
    spec: String,
    pieces: Vec<Piece>,
    /// Ids the pseudo tokens carry in the id sequence (`[unused2]`, `[unused3]`, ...): a plain
    /// BERT sees ordinary (untrained) tokens there; P-tuning replaces their embeddings.
    pseudo_ids: Vec<u32>,
    cls: u32,
    sep: u32,
    mask: u32,
}

/// Most pieces a template may expand to: more than any BERT's positions, so a larger one can
/// never fit, and the repeat counts are checked against it before anything is expanded.
pub const MAX_TEMPLATE_PIECES: usize = 4096;

/// First `[unusedK]` index a pseudo token maps to (as in the published code: [unused2..]).
pub const FIRST_UNUSED: usize = 2;

impl Template {
    /// Parses a template spec (grammar in the module docs) against the tokenizer's vocabulary.
    /// Returns `Error::Invalid` for bad syntax, an unknown `[NAME]` or slot, no `[MASK]`,
    /// non-consecutive `[MASK]`s, a missing or repeated text slot, more than
    /// [`MAX_TEMPLATE_PIECES`] pieces, or too few `[unusedK]` tokens for the pseudo tokens.
    pub fn parse(spec: &str, tok: &BertTokenizer) -> Result<Self> {
        let err = |m: String| Error::invalid(format!("template \"{spec}\": {m}"));
        let mut pieces = Vec::new();
        let chars: Vec<char> = spec.chars().collect();
        let mut i = 0;
        let mut literal = String::new();
        let flush = |literal: &mut String, pieces: &mut Vec<Piece>| {
            pieces.extend(tok.tokenize(literal).into_iter().map(Piece::Token));
            literal.clear();
        };
        while i < chars.len() {
            match chars[i] {
                '[' => {
                    let end = chars[i..]
                        .iter()
                        .position(|&c| c == ']')
                        .ok_or_else(|| err("unclosed '['".into()))?
                        + i;
                    let name: String = chars[i + 1..end].iter().collect();
                    i = end + 1;
                    let mut repeat = 1usize;
                    if i < chars.len() && chars[i] == '*' {
                        let digits: String = chars[i + 1..]
                            .iter()
                            .take_while(|c| c.is_ascii_digit())
                            .collect();
                        repeat = digits
                            .parse()
                            .map_err(|_| err(format!("'*' after [{name}] needs a count")))?;
                        if repeat == 0 {
                            return Err(err(format!("[{name}]*0 repeats nothing")));
                        }
                        if repeat > MAX_TEMPLATE_PIECES {
                            return Err(err(format!(
                                "[{name}]*{repeat} is longer than any model input ({MAX_TEMPLATE_PIECES} tokens at most)"
                            )));
                        }
                        i += 1 + digits.len();
                    }
                    flush(&mut literal, &mut pieces);
                    let piece = match name.as_str() {
                        "P" => Piece::Pseudo,
                        "MASK" => Piece::Mask,
                        other => match tok.token_to_id(&format!("[{other}]")) {
                            Some(id) if (id as usize) < tok.vocab_size() => Piece::Token(id),
                            _ => {
                                return Err(err(format!(
                                    "unknown token [{other}] (use [P], [MASK] or a vocabulary token)"
                                )));
                            }
                        },
                    };
                    if pieces.len() + repeat > MAX_TEMPLATE_PIECES {
                        return Err(err(format!(
                            "expands to more than {MAX_TEMPLATE_PIECES} tokens, longer than any model input"
                        )));
                    }
                    pieces.extend(std::iter::repeat_n(piece, repeat));
                }
                '{' => {
                    let end = chars[i..]
                        .iter()
                        .position(|&c| c == '}')
                        .ok_or_else(|| err("unclosed '{'".into()))?
                        + i;
                    let name: String = chars[i + 1..end].iter().collect();
                    i = end + 1;
                    flush(&mut literal, &mut pieces);
                    pieces.push(Piece::Text(match name.as_str() {
                        "text" | "text_a" => Slot::A,
                        "text_b" => Slot::B,
                        other => {
                            return Err(err(format!(
                                "unknown slot {{{other}}} (use {{text}}, {{text_a}}, {{text_b}})"
                            )));
                        }
                    }));
                }
                c => {
                    literal.push(c);
                    i += 1;
                }
            }
        }
        flush(&mut literal, &mut pieces);

        let mask_at: Vec<usize> = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| **p == Piece::Mask)
            .map(|(i, _)| i)
            .collect();
        if mask_at.is_empty() {
            return Err(err("no [MASK] (the label word is read there)".into()));
        }
        if mask_at.last().unwrap() - mask_at[0] + 1 != mask_at.len() {
            return Err(err(
                "the [MASK] tokens must be consecutive (one label-word slot)".into(),
            ));
        }
        let count = |s: Slot| pieces.iter().filter(|p| **p == Piece::Text(s)).count();
        match (count(Slot::A), count(Slot::B)) {
            (0, 0) => return Err(err("no text slot ({text}, or {text_a} and {text_b})".into())),
            (0, _) => return Err(err("{text_b} without {text_a}".into())),
            (a, b) if a > 1 || b > 1 => return Err(err("each text slot may appear once".into())),
            _ => {}
        }
        let n_pseudo = pieces.iter().filter(|p| **p == Piece::Pseudo).count();
        let pseudo_ids = (0..n_pseudo)
            .map(|k| {
                let name = format!("[unused{}]", FIRST_UNUSED + k);
                tok.token_to_id(&name).filter(|&id| (id as usize) < tok.vocab_size()).ok_or_else(|| {
                    err(format!(
                        "{n_pseudo} pseudo tokens need [unused{FIRST_UNUSED}]..[unused{}], but the vocabulary has no {name}",
                        FIRST_UNUSED + n_pseudo - 1
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Template {
            spec: spec.to_string(),
            pieces,
            pseudo_ids,
            cls: tok.cls_id,
            sep: tok.sep_id,
            mask: tok.mask_id,
        })
    }

    /// Number of pseudo tokens (`[P]`).
    pub fn n_pseudo(&self) -> usize {
        self.pseudo_ids.len()
    }
    /// The id each pseudo token carries in the sequence, in order (`[unused2]`, `[unused3]`, ...).
    pub fn pseudo_ids(&self) -> &[u32] {
        &self.pseudo_ids
    }
    /// Number of `[MASK]` tokens (the length of every label word in tokens).
    pub fn n_mask(&self) -> usize {
        self.pieces.iter().filter(|p| **p == Piece::Mask).count()
    }
    /// Whether the template has a `{text_b}` slot (sentence-pair input).
    pub fn is_pair(&self) -> bool {
        self.pieces.contains(&Piece::Text(Slot::B))
    }
    /// Tokens the template itself takes, `[CLS]` and `[SEP]` included.
    pub fn fixed_len(&self) -> usize {
        2 + self
            .pieces
            .iter()
            .filter(|p| !matches!(p, Piece::Text(_)))
            .count()
    }

    /// Encodes one example, cutting the text (never the template) to fit `max_len`;
    /// for pairs the longer text is cut first.
    pub fn encode(
        &self,
        tok: &BertTokenizer,
        text_a: &str,
        text_b: Option<&str>,
        max_len: usize,
    ) -> Result<Encoded> {
        let budget = max_len.checked_sub(self.fixed_len()).ok_or_else(|| {
            Error::invalid(format!(
                "template \"{}\" needs {} tokens, more than max length {max_len}",
                self.spec,
                self.fixed_len()
            ))
        })?;
        let mut a = tok.tokenize(text_a);
        let mut b = match (self.is_pair(), text_b) {
            (true, Some(t)) => tok.tokenize(t),
            (true, None) => {
                return Err(Error::invalid(format!(
                    "template \"{}\" needs text_b",
                    self.spec
                )));
            }
            (false, _) => Vec::new(),
        };
        let truncated = a.len() + b.len() > budget;
        while a.len() + b.len() > budget {
            if a.len() >= b.len() {
                a.pop()
            } else {
                b.pop()
            };
        }
        let mut ids = vec![self.cls];
        let mut token_types = vec![0];
        let mut mask_positions = Vec::new();
        let mut pseudo_positions = Vec::new();
        let mut segment = 0;
        for piece in &self.pieces {
            match piece {
                Piece::Pseudo => {
                    pseudo_positions.push(ids.len());
                    ids.push(self.pseudo_ids[pseudo_positions.len() - 1]);
                }
                Piece::Mask => {
                    mask_positions.push(ids.len());
                    ids.push(self.mask);
                }
                Piece::Token(t) => ids.push(*t),
                Piece::Text(Slot::A) => ids.extend(&a),
                Piece::Text(Slot::B) => ids.extend(&b),
            }
            token_types.resize(ids.len(), segment);
            // A [SEP] written in the template starts the second segment, as in BERT pairs.
            if *piece == Piece::Token(self.sep) {
                segment = 1;
            }
        }
        ids.push(self.sep);
        token_types.push(segment);
        Ok(Encoded {
            ids,
            token_types,
            mask_positions,
            pseudo_positions,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> BertTokenizer {
        crate::tokenizer::shipped_zh_mini()
    }

    /// Regression: huge repeat counts were expanded (800 GB allocation) before any check.
    #[test]
    fn huge_repeat_counts_are_refused_before_expansion() {
        let tok = tok();
        for spec in [
            "[MASK]*100000000000 {text}",
            "[SEP]*100000000000 [MASK] {text}",
            "[P]*4097 [MASK] {text}",
            "[P]*4000 [P]*4000 [MASK] {text}",
            "[MASK]*99999999999999999999999 {text}",
        ] {
            let Err(e) = Template::parse(spec, &tok) else {
                panic!("{spec} was accepted")
            };
            let e = e.to_string();
            assert!(
                e.contains("longer than any model input") || e.contains("needs a count"),
                "{e}"
            );
            assert!(!e.contains('\n'));
        }
        // a literal '*' is text, not a repeat
        let t = Template::parse("x*100000000000 [MASK] {text}", &tok).unwrap();
        assert!(t.fixed_len() < 30);
    }

    #[test]
    fn seed_template_layout() {
        let tok = tok();
        let t = Template::parse("[P]*4 [MASK] [P]*4 {text}", &tok).unwrap();
        assert_eq!((t.n_pseudo(), t.n_mask(), t.fixed_len()), (8, 1, 11));
        let e = t.encode(&tok, "很好", None, 128).unwrap();
        assert_eq!(&e.ids[..10], &[101, 2, 3, 4, 5, 103, 6, 7, 8, 9]);
        assert_eq!(e.ids.last(), Some(&102));
        assert_eq!(e.mask_positions, vec![5]);
        assert_eq!(e.pseudo_positions, vec![1, 2, 3, 4, 6, 7, 8, 9]);
        assert!(!e.truncated);
        // exactly filling max_len is not a cut; one token more is
        assert!(!t.encode(&tok, "很好", None, 13).unwrap().truncated);
        let cut = t.encode(&tok, "很好", None, 12).unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.ids.len(), 12);
    }

    #[test]
    fn truncation_cuts_text_only_longest_first() {
        let tok = tok();
        let t = Template::parse("{text_a}[SEP]{text_b}[P]*2[MASK]", &tok).unwrap();
        assert!(t.is_pair());
        let e = t
            .encode(&tok, "一二三四五六七八九十", Some("甲乙丙"), 12)
            .unwrap();
        // 12 = [CLS] + [SEP] + [P][P] + [MASK] + [SEP] (6 fixed) + 6 text tokens: a keeps 3, b 3
        assert_eq!(e.ids.len(), 12);
        assert!(e.truncated);
        assert_eq!(tok.tokens(&e.ids[1..4]), vec!["一", "二", "三"]);
        assert_eq!(tok.tokens(&e.ids[5..8]), vec!["甲", "乙", "丙"]);
        assert_eq!(e.token_types, vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(e.mask_positions, vec![10]);
        assert!(
            t.encode(&tok, "x", Some("y"), 5).is_err(),
            "template longer than max length"
        );
        assert!(
            t.encode(&tok, "x", None, 64).is_err(),
            "pair template without text_b"
        );
    }

    #[test]
    fn literal_text_and_specs_errors() {
        let tok = tok();
        let t = Template::parse("[MASK]满意。{text}", &tok).unwrap();
        let e = t.encode(&tok, "好", None, 32).unwrap();
        assert_eq!(
            tok.tokens(&e.ids),
            vec!["[CLS]", "[MASK]", "满", "意", "。", "好", "[SEP]"]
        );
        for bad in [
            "[MASK] {text",
            "[P]*x [MASK] {text}",
            "[MASK] x [MASK] {text}",
            "{text} {text} [MASK]",
            "{label} [MASK]",
        ] {
            assert!(Template::parse(bad, &tok).is_err(), "{bad}");
        }
    }
}
