//! Verbalizers: `--labels 0=不,1=很` maps class names to label words; a class is scored by its
//! word's tokens at the template's consecutive `[MASK]`s.

use crate::error::{Error, Result};
use crate::tokenizer::BertTokenizer;

/// Maps each class to a label word, and to that word's token ids at the `[MASK]` slots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verbalizer {
    /// Class names as they appear in the data's label column, in class-index order.
    pub classes: Vec<String>,
    /// Label word of each class.
    pub words: Vec<String>,
    /// Token ids of each class's word (`[class][k]`, one per `[MASK]`).
    pub word_ids: Vec<Vec<u32>>,
}

impl Verbalizer {
    /// Parses `"class=word,class=word,..."`; each word must be `n_mask` known tokens.
    pub fn parse(spec: &str, tok: &BertTokenizer, n_mask: usize) -> Result<Self> {
        let err = |m: String| Error::invalid(format!("labels \"{spec}\": {m}"));
        let mut v = Verbalizer {
            classes: Vec::new(),
            words: Vec::new(),
            word_ids: Vec::new(),
        };
        for item in spec.split(',') {
            let (class, word) = item
                .split_once('=')
                .ok_or_else(|| err(format!("\"{item}\" is not class=word")))?;
            let (class, word) = (class.trim(), word.trim());
            if class.is_empty() || word.is_empty() {
                return Err(err(format!("\"{item}\" has an empty class or word")));
            }
            if v.classes.iter().any(|c| c == class) {
                return Err(err(format!("class \"{class}\" appears twice")));
            }
            let ids = tok.tokenize(word);
            if ids.contains(&tok.unk_id) {
                return Err(err(format!(
                    "label word \"{word}\" of class \"{class}\" tokenizes to [UNK]"
                )));
            }
            if ids.len() != n_mask {
                return Err(err(format!(
                    "label word \"{word}\" of class \"{class}\" is {} tokens {:?}, but the template has {n_mask} [MASK]",
                    ids.len(),
                    tok.tokens(&ids)
                )));
            }
            v.classes.push(class.to_string());
            v.words.push(word.to_string());
            v.word_ids.push(ids);
        }
        if v.classes.len() < 2 {
            return Err(err("needs at least two classes".into()));
        }
        if let Some(dup) = (1..v.word_ids.len()).find(|&i| v.word_ids[..i].contains(&v.word_ids[i]))
        {
            return Err(err(format!(
                "classes \"{}\" and another share the label word \"{}\"",
                v.classes[dup], v.words[dup]
            )));
        }
        Ok(v)
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.classes.len()
    }

    /// The index of the class named `name` in the data, if it is one.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == name)
    }

    /// The spec back as `class=word,class=word,...` (what [`Verbalizer::parse`] reads).
    pub fn spec(&self) -> String {
        self.classes
            .iter()
            .zip(&self.words)
            .map(|(c, w)| format!("{c}={w}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> BertTokenizer {
        crate::tokenizer::shipped_zh_mini()
    }

    #[test]
    fn multi_class_and_multi_token_words() {
        let tok = tok();
        let v = Verbalizer::parse("neg=差,mid=中,pos=好", &tok, 1).unwrap();
        assert_eq!(v.classes, vec!["neg", "mid", "pos"]);
        assert_eq!(v.class_index("pos"), Some(2));
        assert_eq!(v.spec(), "neg=差,mid=中,pos=好");
        let v2 = Verbalizer::parse("0=不好,1=很好", &tok, 2).unwrap();
        assert_eq!(v2.word_ids[1].len(), 2);
        assert!(
            Verbalizer::parse("0=不,0=很", &tok, 1)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(
            Verbalizer::parse("0=很,1=很", &tok, 1)
                .unwrap_err()
                .to_string()
                .contains("share")
        );
        assert!(Verbalizer::parse("0不", &tok, 1).is_err());
        assert!(
            Verbalizer::parse("0=不", &tok, 1)
                .unwrap_err()
                .to_string()
                .contains("two classes")
        );
    }
}
